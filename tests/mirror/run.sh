#!/usr/bin/env bash
# The pull-through cache (docs/mirror.md) with real registries and clients:
#   upstream A: `berth serve` with token auth (the Docker Hub stand-in: 401 -> token dance),
#   upstream B: Debian's docker-registry (CNCF Distribution 2.8) with htpasswd Basic auth,
#   a broken upstream (tests/mirror/bad_upstream.py: wrong digests, short blobs, a redirect
#   loop, a hang), and Berth as the mirror of all three. Images are pushed upstream with skopeo
#   and pulled through the mirror with skopeo and with docker (`registry-mirrors`, own dockerd).
#
#   bash tests/mirror/run.sh            # everything
#   SKIP_DOCKER=1 bash tests/mirror/run.sh
#
# MIRROR_TARGET picks the runtime that is the mirror (the upstreams are always the above):
#   serve   (default) `berth serve --policy-config`, with --upstream-timeout 3;
#   lambda  the Lambda function under `cargo lambda watch` with BERTH_POLICY_CONFIG, started by
#           tests/lambda/launch-auth.sh (LAMBDA_AUTH_FROM=policy) on the S3 stand-ins of
#           tests/lambda/run.sh, whose `mirror` step runs this (it exports where they are;
#           LAMBDA_BUCKET and LAMBDA_META_BUCKET name the mirror's own buckets);
#   worker  the Worker under `wrangler dev` with POLICY_CONFIG, started by
#           tests/edge/launch-auth.sh (LAUNCH_POLICY_ONLY=1); tests/edge/run.sh's `mirror` step
#           (infra/edge-build.sh first).
# The last part (`berth gc` on the mirror's directory, then pulls with every upstream down) runs
# for serve only: the other runtimes' GC has its own tests (tests/lambda/gc_test.py, tests/edge/gc.sh).
#
# Environment: BERTH_BIN (default <repo>/target/release/berth, else debug), KEEP_WORK=1 keeps
# the temporary directory, CLIENT_TIMEOUT (s per client command, default 120).
# Prints `ok:`/`FAIL:` per check and `N passed, M failed`; exits non-zero on a failure. Every
# server listens on 127.0.0.1 on a port the kernel picked, and is stopped by PID at exit.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
TTL=6
MIRROR_TARGET=${MIRROR_TARGET:-serve}
case "$MIRROR_TARGET" in serve | lambda | worker) ;; *) echo "MIRROR_TARGET must be serve, lambda or worker" >&2; exit 2 ;; esac

WORK=$(mktemp -d /tmp/berth-mirror.XXXXXX)
# shellcheck source=tests/lib/common.sh
. "$root/tests/lib/common.sh"
trap cleanup_common EXIT
find_berth_bin

# The manifest digest the mirror serves for REPO:REF (HEAD; empty on an error).
served_digest() {
  curl -s -I -m 30 -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$MIRROR/v2/$1/manifests/$2" \
    | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:" {print $2}'
}

# --- images (two versions of one image, to move a tag)
make_two_images

# --- upstream A: berth serve with token auth (user alice may pull and push library/**)
A_PORT=$(free_port); A=127.0.0.1:$A_PORT
CONF=$WORK/upstream-auth.toml
token_auth_config "$CONF" '["library/**"]' '["pull", "push"]'
start_a() {
  start_token_berth "$A" "$WORK/a-data" "$CONF" "$WORK/a.log" "upstream A (berth, token auth)"
  A_PID=$STARTED_PID
}
start_a

# --- upstream B: docker-registry with htpasswd
B_PORT=$(free_port); B=127.0.0.1:$B_PORT
distribution_config "$B" "$WORK/b-data" mirror-test
start_distribution "$B" "$WORK/b.log" "upstream B (docker-registry, htpasswd)"
B_PID=$STARTED_PID

# --- the broken upstream
BAD_PORT=$(free_port)
python3 "$here/bad_upstream.py" "$BAD_PORT" >"$WORK/bad.log" 2>&1 &
BAD_PID=$!; PIDS+=("$BAD_PID")
wait_http "http://127.0.0.1:$BAD_PORT/v2/" 200 "the broken upstream" "$BAD_PID" || exit 1

# --- Berth as the mirror of all three
case "$MIRROR_TARGET" in
  serve) M_PORT=$(free_port) ;;
  lambda) M_PORT=$(free_port 2) ;; # the launcher's shim, and its emulator on the next port
  worker) M_PORT=$(free_port 4) ;; # the launcher's front, and wrangler on +2, its inspector on +3
esac
MIRROR=127.0.0.1:$M_PORT
cat >"$WORK/mirror-policies.toml" <<TOML
# docker's registry-mirrors asks the mirror for library/<name>: the empty prefix takes it.
[[policies.mirrors]]
prefix = ""
upstream = "http://$A"
username = "alice"
password = "$ALICE_PW"
tag_ttl_secs = $TTL

[[policies.mirrors]]
prefix = "dist"
upstream = "http://$B"
username = "bob"
password = "$BOB_PW"
tag_ttl_secs = $TTL

[[policies.mirrors]]
prefix = "bad"
upstream = "http://127.0.0.1:$BAD_PORT"
TOML
# M_PID: the mirror's process (serve), or its launcher, which leads its own process group.
# MEM_PID: the process whose peak memory the big-layer check reads (empty: not checked).
case "$MIRROR_TARGET" in
  serve)
    "$BERTH_BIN" serve --addr "$MIRROR" --data-dir "$WORK/m-data" --policy-config "$WORK/mirror-policies.toml" \
      --upstream-timeout 3 >"$WORK/m.log" 2>&1 &
    M_PID=$!; PIDS+=("$M_PID")
    wait_http "http://$MIRROR/v2/" 200 "the mirror" "$M_PID" || exit 1
    MEM_PID=$M_PID ;;
  lambda)
    LAMBDA_AUTH_FROM=policy BERTH_UPSTREAM_TIMEOUT_SECS=3 BERTH_BIN="$BERTH_BIN" \
      setsid bash "$root/tests/lambda/launch-auth.sh" "$WORK/mirror-policies.toml" "$M_PORT" >"$WORK/m.log" 2>&1 &
    M_PID=$!; GROUPS_STARTED+=("$M_PID")
    wait_http "http://$MIRROR/v2/" 200 "the mirror (Lambda)" "$M_PID" 600 || exit 1
    MEM_PID=$(pgrep -g "$M_PID" -x berth-lambda | head -1) ;;
  worker)
    LAUNCH_POLICY_ONLY=1 LAUNCH_VARS=UPSTREAM_TIMEOUT_SECS:3 LAUNCH_STATE_DIR="$WORK/w-state" BERTH_BIN="$BERTH_BIN" \
      setsid bash "$root/tests/edge/launch-auth.sh" "$WORK/mirror-policies.toml" "$M_PORT" >"$WORK/m.log" 2>&1 &
    M_PID=$!; GROUPS_STARTED+=("$M_PID")
    wait_http "http://$MIRROR/v2/" 200 "the mirror (Worker)" "$M_PID" 600 || exit 1
    # Not measured: workerd's process also runs wrangler dev's local R2 and KV, so its peak is
    # not the Worker's alone (it grew by 973 MiB over this pull in one run).
    MEM_PID= ;;
esac
# mirror_served PATH: the mirror's log shows a 200 for PATH (each runtime logs requests its way).
mirror_served() {
  case "$MIRROR_TARGET" in
    serve) grep -qF "uri=$1 status=200" "$WORK/m.log" ;;
    lambda) grep -q "uri=[^ ]*$1 status=200" "$WORK/m.log" ;;
    worker) grep -qF "${1%%\?*} 200 OK" "$WORK/m.log" ;; # wrangler dev's request lines, without the query
  esac
}
say "mirror: $MIRROR_TARGET"
say "upstream A $A (berth, token auth), upstream B $B (distribution, htpasswd), broken $BAD_PORT, mirror $MIRROR; work $WORK"
if grep -q -e "$ALICE_PW" -e "$BOB_PW" "$WORK/m.log"; then bad "the mirror logged a password"; else ok "no password in the mirror's log"; fi

say "--- push upstream (skopeo)"
check "skopeo push v1 to A library/app" "${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" "oci:$WORK/img1:v1" "docker://$A/library/app:v1"
check "skopeo push v1 to B team/app" "${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "bob:$BOB_PW" "oci:$WORK/img1:v1" "docker://$B/team/app:v1"

say "--- pull through the mirror (skopeo)"
check "skopeo pull library/app:v1 through the mirror (token upstream)" "${SK[@]}" copy -q --src-tls-verify=false "docker://$MIRROR/library/app:v1" "oci:$WORK/out-a:v1"
check "skopeo pull dist/team/app:v1 through the mirror (Basic upstream)" "${SK[@]}" copy -q --src-tls-verify=false "docker://$MIRROR/dist/team/app:v1" "oci:$WORK/out-b:v1"
expect_eq "digest through the mirror from A" "$D1" "$(served_digest library/app v1)"
expect_eq "digest through the mirror from B" "$D1" "$(served_digest dist/team/app v1)"
check "pulled layers are identical" diff -r "$WORK/img1/blobs" "$WORK/out-a/blobs"
tags=$(curl -s "http://$MIRROR/v2/library/app/tags/list")
expect_eq "tags/list on the mirror" '{"name":"library/app","tags":["v1"]}' "$tags"

say "--- pushes into the mirror are refused"
check_fails "skopeo push into the mirrored namespace" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img1:v1" "docker://$MIRROR/library/mine:v1"
code=$(curl -s -o "$WORK/refused.json" -w '%{http_code}' -X POST "http://$MIRROR/v2/dist/team/app/blobs/uploads/")
expect_eq "POST upload into a mirrored namespace" 405 "$code"
grep -q '"UNSUPPORTED"' "$WORK/refused.json" && ok "the refusal is UNSUPPORTED: $(cut -c1-120 "$WORK/refused.json")" || bad "refusal body: $(cat "$WORK/refused.json")"

say "--- upstreams down: the cache still serves"
stop_pid "$A_PID"; stop_pid "$B_PID"
sleep $((TTL + 1)) # past the TTL too: the revalidation fails, the cached tag is served
check "skopeo pull from the cache with A down" "${SK[@]}" copy -q --src-tls-verify=false "docker://$MIRROR/library/app:v1" "oci:$WORK/out-a2:v1"
check "skopeo pull from the cache with B down" "${SK[@]}" copy -q --src-tls-verify=false "docker://$MIRROR/dist/team/app:v1" "oci:$WORK/out-b2:v1"
code=$(curl -s -o "$WORK/down.json" -w '%{http_code}' "http://$MIRROR/v2/library/app/manifests/never-pulled")
expect_eq "an uncached tag with the upstream down" 502 "$code"

say "--- a tag moved upstream is seen after the TTL"
start_a
served_digest library/app v1 >/dev/null # revalidates now (unchanged): the next TTL starts
check "skopeo push v2 as library/app:v1 to A" "${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" "oci:$WORK/img2:v1" "docker://$A/library/app:v1"
expect_eq "within the TTL: still the cached digest" "$D1" "$(served_digest library/app v1)"
sleep $((TTL + 1))
expect_eq "after the TTL: the moved digest" "$D2" "$(served_digest library/app v1)"
check "skopeo pull of the moved tag" "${SK[@]}" copy -q --src-tls-verify=false "docker://$MIRROR/library/app:v1" "oci:$WORK/out-a3:v1"

say "--- a big layer streams through: the mirror's memory stays flat"
BIG_MIB=${BIG_MIB:-64}
python3 "$here/make_image.py" "$WORK/big" v1 "$NONCE-big" $((BIG_MIB * 1024)) >/dev/null || exit 1
check "skopeo push a ${BIG_MIB} MiB layer to A library/big" "${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" "oci:$WORK/big:v1" "docker://$A/library/big:v1"
hwm() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$MEM_PID/status" 2>/dev/null || echo 0; }
peak_before=$(hwm)
check "skopeo pull of the ${BIG_MIB} MiB layer through the mirror (first pull)" "${SK[@]}" copy -q --src-tls-verify=false "docker://$MIRROR/library/big:v1" "oci:$WORK/out-big:v1"
check "the big layer arrived intact" diff -r "$WORK/big/blobs" "$WORK/out-big/blobs"
peak_after=$(hwm)
if [ -z "$MEM_PID" ]; then
  say "  (the mirror's peak memory is not measured on $MIRROR_TARGET)"
elif [ $((peak_after - peak_before)) -lt $((BIG_MIB / 2)) ]; then
  ok "the mirror's peak memory grew by $((peak_after - peak_before)) MiB (peak $peak_after MiB) for a $BIG_MIB MiB layer"
else
  bad "the mirror's peak memory grew by $((peak_after - peak_before)) MiB for a $BIG_MIB MiB layer: buffered?"
fi
rm -rf "$WORK/big" "$WORK/out-big"

say "--- a broken upstream: a clear error, nothing stored"
for path in manifests/v1 "manifests/sha256:$(printf '%064d' 1)"; do
  code=$(curl -s -o "$WORK/bad.json" -w '%{http_code}' -m 30 "http://$MIRROR/v2/bad/x/$path")
  if [ "$code" = 502 ] && grep -q 'nothing was stored' "$WORK/bad.json"; then ok "bad/x/$path: 502, $(grep -o 'upstream registry[^"]*' "$WORK/bad.json" | cut -c1-110)"; else bad "bad/x/$path: $code $(cat "$WORK/bad.json")"; fi
done
# A blob's first whole GET is answered while it is stored where the mirror serves blobs itself
# (serve, the Worker without presigning): the short body then cuts the client's transfer
# before its end (curl: 18, partial file). Where blobs are redirects (Lambda) it is a 502.
# Either way a HEAD afterwards asks the upstream again: nothing was stored.
blob="blobs/sha256:$(printf '%064d' 2)"
out=$(curl -s -o "$WORK/bad.json" -w '%{http_code} %{size_download}' -m 30 "http://$MIRROR/v2/bad/x/$blob"); rc=$?
case "$rc $out" in
  "0 502 "*) grep -q 'nothing was stored' "$WORK/bad.json" && ok "GET bad/x/$blob: 502" || bad "GET bad/x/$blob: 502 $(cat "$WORK/bad.json")" ;;
  "18 200 "*) ok "GET bad/x/$blob: 200, then the transfer is cut before its end ($out)" ;;
  *) bad "GET bad/x/$blob: curl $rc, $out" ;;
esac
expect_eq "HEAD bad/x/$blob after it: still fetched from the upstream (502)" 502 "$(curl -s -o /dev/null -I -w '%{http_code}' -m 30 "http://$MIRROR/v2/bad/x/$blob")"
code=$(curl -s -o "$WORK/bad.json" -w '%{http_code}' -m 30 "http://$MIRROR/v2/bad/loop/manifests/v1")
grep -q 'redirect loop' "$WORK/bad.json" && expect_eq "redirect loop" 502 "$code" || bad "redirect loop: $code $(cat "$WORK/bad.json")"
start=$(date +%s)
code=$(curl -s -o "$WORK/bad.json" -w '%{http_code}' -m 60 "http://$MIRROR/v2/bad/hang/manifests/v1")
took=$(($(date +%s) - start))
if [ "$code" = 502 ] && [ "$took" -lt 20 ]; then ok "a hung upstream: 502 after ${took}s: $(grep -o 'upstream registry[^"]*' "$WORK/bad.json" | cut -c1-110)"; else bad "hung upstream: $code after ${took}s $(cat "$WORK/bad.json")"; fi
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$MIRROR/v2/bad/x/tags/list")
expect_eq "nothing of the broken upstream was stored (tags/list)" 404 "$code"
expect_eq "no repository of the broken upstream in the catalog" "" "$(curl -s "http://$MIRROR/v2/_catalog" | grep -o '"bad/[^"]*"')"

# --- docker with registry-mirrors (own dockerd, as tests/clients/run.sh starts it)
if [ -z "${SKIP_DOCKER:-}" ] && command -v dockerd >/dev/null; then
  say "--- docker pull through registry-mirrors"
  T=$(mktemp -d /tmp/berth-mrd.XXXXXX) # short: dockerd's socket paths must fit in 108 bytes
  printf '{"registry-mirrors": ["http://%s"]}\n' "$MIRROR" >"$T/daemon.json"
  [ -e /etc/docker/key.json ] || touch "$T/remove-key-json"
  dockerd --config-file "$T/daemon.json" --storage-driver=vfs --iptables=false --ip-masq=false \
    --bridge=none --data-root "$T/data" --exec-root "$T/exec" --pidfile "$T/dockerd.pid" \
    -H "unix://$T/docker.sock" >"$T/dockerd.log" 2>&1 &
  DPID=$!; PIDS+=("$DPID")
  export DOCKER_HOST=unix://$T/docker.sock DOCKER_CONFIG=$T/cli
  mkdir -p "$T/cli"
  for ((i = 0; i < 60; i++)); do timeout 5 docker version >/dev/null 2>&1 && break; sleep 0.5; done
  if ((i < 60)); then
    # "fresh" is docker.io/library/fresh, only upstream so far: docker asks the mirror for
    # library/fresh, the mirror fetches it from A.
    check "skopeo push v1 to A library/fresh" "${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" "oci:$WORK/img1:v1" "docker://$A/library/fresh:v1"
    check "docker pull fresh:v1 (docker.io) through registry-mirrors" docker pull -q fresh:v1
    expect_eq "docker's image digest" "$D1" "$(docker image inspect --format '{{index .RepoDigests 0}}' fresh:v1 | sed 's/.*@//')"
    # library/fresh is new in this run: only docker asked the mirror for it.
    mirror_served /v2/library/fresh/manifests/v1 && ok "the mirror answered docker's manifest request" || bad "the mirror saw no pull of library/fresh from docker"
    check "docker pull app:v1 (cached, moved tag) through the mirror" docker pull -q app:v1
    expect_eq "docker's app:v1 is the moved tag's" "$D2" "$(docker image inspect --format '{{index .RepoDigests 0}}' app:v1 | sed 's/.*@//')"
  else
    bad "dockerd did not come up: $(tail -3 "$T/dockerd.log")"
  fi
  stop_pid "$DPID"
  [ -e "$T/remove-key-json" ] && rm -f /etc/docker/key.json
  rm -rf "$T" 2>/dev/null
fi

# --- containerd with a hosts.toml mirror for docker.io (own containerd, ctr)
if [ -z "${SKIP_CONTAINERD:-}" ] && command -v containerd >/dev/null && command -v ctr >/dev/null; then
  say "--- containerd pull through hosts.toml"
  T=$(mktemp -d /tmp/berth-mrc.XXXXXX)
  mkdir -p "$T/hosts/docker.io"
  cat >"$T/hosts/docker.io/hosts.toml" <<TOML
server = "https://registry-1.docker.io"

[host."http://$MIRROR"]
  capabilities = ["pull", "resolve"]
TOML
  cat >"$T/config.toml" <<TOML
version = 2
root = "$T/root"
state = "$T/state"
[grpc]
  address = "$T/c.sock"
TOML
  containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
  CPID=$!; PIDS+=("$CPID")
  for ((i = 0; i < 60; i++)); do timeout 5 ctr --address "$T/c.sock" version >/dev/null 2>&1 && break; sleep 0.5; done
  if ((i < 60)); then
    check "skopeo push v2 to A library/viactr" "${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" "oci:$WORK/img2:v1" "docker://$A/library/viactr:v1"
    # content fetch: the pull without unpacking (no snapshotter needed here).
    check "ctr content fetch docker.io/library/viactr:v1 through hosts.toml" \
      ctr --address "$T/c.sock" content fetch --hosts-dir "$T/hosts" docker.io/library/viactr:v1
    # containerd names the upstream it mirrors in ?ns=docker.io, and resolves the tag with HEAD.
    mirror_served "/v2/library/viactr/manifests/$D2?ns=docker.io" && ok "the mirror served containerd the manifest $D2" || bad "the mirror saw no pull of library/viactr@$D2 from containerd"
  else
    bad "containerd did not come up: $(tail -3 "$T/containerd.log")"
  fi
  stop_pid "$CPID"
  rm -rf "$T" 2>/dev/null
fi

if [ "$MIRROR_TARGET" = serve ]; then
  say "--- garbage collection keeps cached content; the cache serves after it with every upstream down"
  stop_pid "$M_PID"; stop_pid "$A_PID"
  check "berth gc on the mirror's data (grace 0)" "$BERTH_BIN" gc --data-dir "$WORK/m-data" --policy-config "$WORK/mirror-policies.toml" --grace 0s
  "$BERTH_BIN" serve --addr "$MIRROR" --data-dir "$WORK/m-data" --policy-config "$WORK/mirror-policies.toml" \
    --upstream-timeout 3 >>"$WORK/m.log" 2>&1 &
  M_PID=$!; PIDS+=("$M_PID")
  wait_http "http://$MIRROR/v2/" 200 "the mirror" "$M_PID" || exit 1
  check "skopeo pull library/app:v1 from the cache after GC" "${SK[@]}" copy -q --src-tls-verify=false "docker://$MIRROR/library/app:v1" "oci:$WORK/out-gc-a:v1"
  check "skopeo pull dist/team/app:v1 from the cache after GC" "${SK[@]}" copy -q --src-tls-verify=false "docker://$MIRROR/dist/team/app:v1" "oci:$WORK/out-gc-b:v1"
fi

say "$passed passed, $failed failed"
[ "$failed" = 0 ]
