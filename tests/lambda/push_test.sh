#!/usr/bin/env bash
# `berth push` against Berth on Lambda (started by tests/lambda/run.sh): a 200 MiB layer straight
# to S3 in parallel parts, interrupted (SIGKILL) and resumed; a config and a manifest on top;
# skopeo pulls the image through the presigned redirect and the layer's digest is checked.
# Also the standard path (--no-direct: chunked PATCHes within OCI-Chunk-Max-Length).
# Needs BERTH_URL, BERTH_BIN, S3_LOG (exported by run.sh).
set -euo pipefail
MIB=$((1024 * 1024))
SIZE_MIB=${PUSH_MIB:-200}
work=$(mktemp -d /tmp/berth-push-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
repo="lambda-push-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')/big"
reg="$BERTH_URL/$repo"
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; }

head -c $((SIZE_MIB * MIB)) /dev/urandom >"$work/layer.bin"
want="sha256:$(sha256sum "$work/layer.bin" | cut -d' ' -f1)"
export BERTH_PUSH_STATE_DIR=$work/state

# 1. Interrupted after some parts reached S3.
"$BERTH_BIN" push --quiet --jobs 2 --part-mib 16 "$work/layer.bin" "$reg" >"$work/first.out" 2>"$work/first.err" &
pid=$!
for _ in $(seq 1 600); do
  n=$(cat "$work"/state/*.json 2>/dev/null | jq '.done_parts | length' 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 3 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -KILL "$pid" 2>/dev/null || fail "the push finished before it could be interrupted"
wait "$pid" 2>/dev/null || true
done_before=$(cat "$work"/state/*.json | jq '.done_parts | length')
ok "push killed with $done_before of $(( (SIZE_MIB + 15) / 16 )) parts in S3"
code=$(curl -s -o /dev/null -w '%{http_code}' -I "$BERTH_URL/v2/$repo/blobs/$want")
[ "$code" = 404 ] || fail "blob visible before completion (HEAD $code)"
ok "nothing visible before completion"

# 2. Resumed: same command.
start=$(date +%s.%N)
got=$("$BERTH_BIN" push --quiet --jobs 4 --part-mib 16 "$work/layer.bin" "$reg" 2>"$work/resume.err") ||
  { cat "$work/resume.err" >&2; fail "resumed push failed"; }
grep -q "resuming" "$work/resume.err" || fail "the second run did not resume: $(cat "$work/resume.err")"
[ "$got" = "$want" ] || fail "push printed $got, want $want"
ok "resumed push completed: $got ($(echo "$(date +%s.%N) - $start" | bc) s)"
ls "$work"/state/*.json >/dev/null 2>&1 && fail "state file left after success"
ok "state file removed"

# 3. A config and a manifest on top, then skopeo pulls through the redirect.
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{}}' "$want" >"$work/config.json"
cfg=$("$BERTH_BIN" push --quiet "$work/config.json" "$reg")
[ "$cfg" = "sha256:$(sha256sum "$work/config.json" | cut -d' ' -f1)" ] || fail "config digest $cfg"
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$cfg","size":$(stat -c %s "$work/config.json")},
 "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$want","size":$((SIZE_MIB * MIB))}]}
JSON
mdig=$("$BERTH_BIN" push --quiet --manifest "$work/manifest.json" "$reg:v1")
[ "$mdig" = "sha256:$(sha256sum "$work/manifest.json" | cut -d' ' -f1)" ] || fail "manifest digest $mdig"
ok "config and manifest pushed ($mdig)"
hostport=${BERTH_URL#http://}
timeout 300 skopeo copy --quiet --preserve-digests --src-tls-verify=false "docker://$hostport/$repo:v1" "oci:$work/pulled:v1" ||
  fail "skopeo pull"
pulled="$work/pulled/blobs/sha256/${want#sha256:}"
[ -f "$pulled" ] || fail "the layer is missing from the pulled image"
[ "sha256:$(sha256sum "$pulled" | cut -d' ' -f1)" = "$want" ] || fail "pulled layer has the wrong digest"
ok "skopeo pulled the image; the 200 MiB layer's digest matches"
grep -q "method: GET, uri: /berth/data/[0-9a-f.]*?x-id=GetObject&X-Amz-Algorithm=" "$S3_LOG" ||
  fail "the S3 log shows no presigned GET of the uploaded object"
ok "the layer came from S3 (a presigned GET of its object is in the S3 log)"

# 4. The standard protocol, as against the edge or berth serve: chunks within the advertised max.
head -c $((12 * MIB + 999)) /dev/urandom >"$work/chunked.bin"
want2="sha256:$(sha256sum "$work/chunked.bin" | cut -d' ' -f1)"
got2=$("$BERTH_BIN" push --quiet --no-direct "$work/chunked.bin" "$reg") || fail "chunked push"
[ "$got2" = "$want2" ] || fail "chunked push printed $got2, want $want2"
ok "chunked push (no direct upload) within OCI-Chunk-Max-Length: $got2"
# 5. The local server (no direct uploads, no chunk limit advertised): chunked with --chunk-mib.
SERVE_PORT=${SERVE_PORT:-$(bash "$(dirname "$0")/../free-port.sh")}
"$BERTH_BIN" serve --addr "127.0.0.1:$SERVE_PORT" --data-dir "$work/serve" >"$work/serve.log" 2>&1 &
serve_pid=$!
trap 'kill -TERM "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$SERVE_PORT/v2/" && break; sleep 0.1; done
got3=$("$BERTH_BIN" push --quiet --chunk-mib 5 "$work/chunked.bin" "http://127.0.0.1:$SERVE_PORT/local/blob") ||
  fail "push to berth serve"
[ "$got3" = "$want2" ] || fail "push to berth serve printed $got3, want $want2"
back=$(curl -sf "http://127.0.0.1:$SERVE_PORT/v2/local/blob/blobs/$want2" | sha256sum | cut -d' ' -f1)
[ "sha256:$back" = "$want2" ] || fail "berth serve returns other bytes"
patches=$(grep -c 'method=PATCH' "$work/serve.log" || true)
[ "$patches" -ge 3 ] || fail "expected 3 chunked PATCHes to berth serve, saw $patches"
ok "push to berth serve in $patches chunks: $got3"
echo "push tests passed"
