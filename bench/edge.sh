#!/usr/bin/env bash
# Berth's Worker in `wrangler dev` (real workerd, local R2 and KV): manifest GET throughput and
# latency, and the CPU time the Worker spends per manifest GET and per MiB of upload.
#
#   bash bench/edge.sh      # builds the bundle if needed (infra/edge-build.sh), prints Markdown
#   EDGE_BENCH_AUTH=1 bash bench/edge.sh   # the same with token auth on, plus password logins
#
# - requests/s, p50, p99: `oha -z $BENCH_DURATION -c $BENCH_CONNS` GET of a manifest by tag
#   (the request docker sends first on every pull), on 127.0.0.1.
# - CPU: bench/edge_cpu.mjs samples the Worker's V8 isolate with the inspector's CPU profiler
#   while it serves MANIFEST_GETS sequential manifest GETs and one UPLOAD_MIB docker-style
#   streamed PATCH + PUT; what Workers bill is the isolate's CPU time.
# wrangler dev listens on EDGE_BENCH_PORT (default: a free pair picked now by tests/free-port.sh)
# and its inspector on the next port; it is stopped by PID (its process group) on exit. Numbers
# from `wrangler dev` on a shared VM are local figures, not Cloudflare's edge.
# bench/edge-peers.sh runs this Worker next to cloudflare/serverless-registry and a hello Worker.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_CA_BUNDLE
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
port=${EDGE_BENCH_PORT:-$(bash tests/free-port.sh 2)} && inspector=$(( port + 1 ))
duration=${BENCH_DURATION:-10s} conns=${BENCH_CONNS:-16}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
work=$(mktemp -d /tmp/berth-edge-bench.XXXXXX)

# The request Worker of a split deployment (edge/build-serve): what answers the requests measured.
# EDGE_BENCH_BUNDLE=DIR runs another build of it instead, e.g. one with function names for TOP
# (`BERTH_WASM_NAMES=1 bash infra/edge/worker-build.sh serve`, copied aside), and
# EDGE_BENCH_WRANGLER_ARGS adds wrangler dev options (`--no-minify`: the JS glue's names in TOP).
if [ -n "${EDGE_BENCH_BUNDLE:-}" ]; then
  bundle_dir=$(realpath "$EDGE_BENCH_BUNDLE")
  bundle="$bundle_dir: gzip $(( $(gzip -9c "$bundle_dir/index.js" | wc -c) + $(gzip -9c "$bundle_dir/index_bg.wasm" | wc -c) )) bytes"
else
  bundle_dir=edge/build-serve
  bundle=$(bash infra/edge-build.sh 2>/dev/null | grep '^edge serve bundle')
fi
# EDGE_BENCH_AUTH=1: the same with token auth on (AUTH_CONFIG made by the admin commands); every
# request carries a bearer token, and the CPU of password logins is measured too.
auth_vars=() token=""
if [ "${EDGE_BENCH_AUTH:-0}" = 1 ]; then
  berth=${BERTH_BIN:-$root/target/release/berth}
  export AUTH_USER=bench AUTH_PASSWORD=bench-password-$RANDOM$RANDOM
  "$berth" key generate --kid bench --config "$work/auth.toml" >/dev/null
  echo "$AUTH_PASSWORD" | "$berth" user add bench --config "$work/auth.toml" 2>/dev/null
  printf '\n[[access]]\nrepositories = ["bench/**"]\nprincipals = ["user:bench"]\nactions = ["pull", "push"]\n' >>"$work/auth.toml"
  auth_vars=(--var "AUTH_CONFIG:$("$berth" auth export --json --config "$work/auth.toml")")
fi
setsid bash infra/edge/wrangler-dev.sh --bundle "$bundle_dir" --ip 127.0.0.1 --port "$port" --inspector-port "$inspector" \
  --persist-to "$work/state" --show-interactive-dev-session=false --log-level warn \
  --var "UPLOAD_SECRET:bench-$RANDOM$RANDOM" --var MAX_REQUEST_BODY:400000000 "${auth_vars[@]}" ${EDGE_BENCH_WRANGLER_ARGS:-} >"$work/wrangler.log" 2>&1 &
pid=$!
# `|| true`: under set -e a failed kill (wrangler already gone) would end the trap before the rm.
trap 'kill -TERM -- -$pid 2>/dev/null || true; sleep 2; kill -KILL -- -$pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
  [ "$code" = 200 ] || [ "$code" = 401 ] && break
  sleep 1
done
url="http://127.0.0.1:$port" repo="bench/edge"
auth_header=()
if [ -n "${AUTH_USER:-}" ]; then
  token=$(curl -sf -u "$AUTH_USER:$AUTH_PASSWORD" "$url/token?service=berth&scope=repository:$repo:pull,push" | jq -r .token)
  auth_header=(-H "Authorization: Bearer $token")
fi

# A small image: config, one layer, the manifest as tag v1.
python3 - "$url" "$repo" "$token" <<'PY'
import hashlib, json, sys, urllib.request
url, repo, token = sys.argv[1:]
auth = {"Authorization": f"Bearer {token}"} if token else {}
def push(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    urllib.request.urlopen(urllib.request.Request(f"{url}/v2/{repo}/blobs/uploads/?digest={d}", data=data, method="POST", headers=auth))
    return d, len(data)
cfg, layer = push(b'{"architecture":"amd64","os":"linux"}'), push(b"x" * 4096)
m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg[0], "size": cfg[1]},
     "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer[0], "size": layer[1]}]}
urllib.request.urlopen(urllib.request.Request(f"{url}/v2/{repo}/manifests/v1", data=json.dumps(m).encode(),
    method="PUT", headers={"Content-Type": m["mediaType"], **auth}))
PY

"$OHA" -z "$duration" -c "$conns" --no-tui --output-format json "${auth_header[@]}" \
  -H "Accept: application/vnd.oci.image.manifest.v1+json" "$url/v2/$repo/manifests/v1" >"$work/oha.json"
cpu=$(WS_MODULE="$root/.tools/node/node_modules/ws" node bench/edge_cpu.mjs "$inspector" "$url" "$repo")

python3 - "$work/oha.json" "$cpu" "$bundle" "$duration" "$conns" <<'PY'
import json, sys
oha, cpu = json.load(open(sys.argv[1])), json.loads(sys.argv[2])
bundle, duration, conns = sys.argv[3:]
s, p = oha["summary"], oha["latencyPercentiles"]
codes = oha.get("statusCodeDistribution", {})
print(f"| measure (wrangler dev, local R2/KV) | value |")
print(f"|---|---:|")
print(f"| manifest GET by tag, requests/s (oha -z {duration} -c {conns}) | {s['requestsPerSec']:,.0f} |")
print(f"| manifest GET p50 / p99 | {p['p50']*1000:.2f} ms / {p['p99']*1000:.2f} ms |")
print(f"| status codes | {codes} |")
print(f"| Worker CPU per manifest GET (isolate profiler, {cpu['manifest_gets']} GETs) | {cpu['cpu_ms_per_manifest_get']} ms (+ {cpu['program_ms_per_manifest_get']} ms V8 \"(program)\") |")
if "cpu_ms_per_upload_mib" in cpu:
    print(f"| Worker CPU per MiB of upload ({cpu['upload_mib']} MiB streamed PATCH + PUT) | {cpu['cpu_ms_per_upload_mib']} ms (+ {cpu['program_ms_per_upload_mib']} ms V8 \"(program)\") |")
if "token_gets" in cpu:
    print(f"| Worker CPU per token GET with a password (Argon2id; {cpu['token_gets']} GETs) | {cpu['cpu_ms_per_password_token_get']} ms (+ {cpu['program_ms_per_password_token_get']} ms V8 \"(program)\") |")
print(f"| bundle (the request Worker, edge/build-serve) | {bundle.split(': ', 1)[-1]} |")
PY
