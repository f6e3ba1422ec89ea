#!/usr/bin/env bash
# CPU time per garbage collection invocation of the Worker (issue 14): `wrangler dev
# --test-scheduled` with local R2 and BERTH_GC_GRACE=0, BERTH_GC_SETTLE=0 (one trigger runs the
# whole pipeline, as in tests/edge/gc.sh). Pushes EDGE_GC_IMAGES images (default 40) in 4
# repositories (each a config, 2 own layers and its repository's shared layer), deletes a quarter
# of them, then bench/edge_gc_cpu.mjs profiles the isolate over two /__scheduled invocations:
# the first collects, the second finds nothing (the fixed cost of a run).
#
#   bash infra/edge-build.sh && bash bench/edge-gc.sh
# wrangler dev and its inspector listen on free ports picked now; stopped by PID (its process
# group) on exit. Local figures from a shared VM, not Cloudflare's edge.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_CA_BUNDLE
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
[ -f edge/build/index.js ] || { echo "bench/edge-gc.sh: build the bundle first (bash infra/edge-build.sh)" >&2; exit 1; }
images=${EDGE_GC_IMAGES:-40}
port=$(bash tests/free-port.sh) inspector=$(bash tests/free-port.sh)
work=$(mktemp -d /tmp/berth-edge-gcbench.XXXXXX)
setsid bash infra/edge/wrangler-dev.sh --ip 127.0.0.1 --port "$port" \
  --inspector-port "$inspector" --persist-to "$work/state" --show-interactive-dev-session=false \
  --test-scheduled --var "UPLOAD_SECRET:edge-gc-bench-$RANDOM$RANDOM" \
  --var BERTH_GC_GRACE:0 --var BERTH_GC_SETTLE:0 >"$work/wrangler.log" 2>&1 &
pid=$!
trap 'kill -TERM -- -$pid 2>/dev/null || true; sleep 2; kill -KILL -- -$pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { tail -30 "$work/wrangler.log" >&2; exit 1; }
  sleep 0.2
done
url="http://127.0.0.1:$port"

python3 - "$url" "$images" <<'PY'
import hashlib, json, os, sys, urllib.request
url, images = sys.argv[1], int(sys.argv[2])
def digest(b): return "sha256:" + hashlib.sha256(b).hexdigest()
def call(method, path, body=None, headers={}):
    with urllib.request.urlopen(urllib.request.Request(url + path, data=body, method=method, headers=headers)) as r:
        return r.status
shared = {r: os.urandom(4096) for r in range(4)}
for r, blob in shared.items():
    call("POST", f"/v2/gcbench/r{r}/blobs/uploads/?digest={digest(blob)}", blob)
for i in range(images):
    repo = f"gcbench/r{i % 4}"
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": i, "nonce": os.urandom(8).hex()}).encode()
    layers = [os.urandom(2048), os.urandom(3072)]
    for b in [config] + layers:
        call("POST", f"/v2/{repo}/blobs/uploads/?digest={digest(b)}", b)
    layers.append(shared[i % 4])
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(l), "size": len(l)} for l in layers]}).encode()
    call("PUT", f"/v2/{repo}/manifests/t{i}", m, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    if i % 4 == 0:
        assert call("DELETE", f"/v2/{repo}/manifests/{digest(m)}") == 202
PY

out=$(WS_MODULE="$root/.tools/node/node_modules/ws" node bench/edge_gc_cpu.mjs "$inspector" "$url" "$work/wrangler.log")
echo "$out"
python3 - "$out" "$images" <<'PY'
import json, sys
o, images = json.loads(sys.argv[1]), int(sys.argv[2])
f, s = o["first"], o["second"]
assert f["report"]["finished"] and f["report"]["content_deleted"] > 0, f
assert s["report"]["content_deleted"] == 0, s
print(f"| {images} images in 4 repositories, {images // 4} deleted: collects {f['report']['content_deleted']} contents "
      f"({f['report']['bytes_freed']} bytes), {f['report']['steps']} steps | {f['cpu_ms']} ms (+{f['program_ms']} ms program) | {f['wall_ms']} ms |")
print(f"| the same store again: nothing to collect, {s['report']['steps']} steps | {s['cpu_ms']} ms (+{s['program_ms']} ms program) | {s['wall_ms']} ms |")
PY
