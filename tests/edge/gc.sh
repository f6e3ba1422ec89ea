#!/usr/bin/env bash
# Garbage collection on the Worker (docs/gc.md): `wrangler dev --test-scheduled` with local R2,
# grace and settle 0 so one Cron Trigger does the whole pipeline. Pushes two images sharing a
# layer, deletes one, fires the trigger at /__scheduled, then checks: the deleted image's own
# blobs are gone (404), the report in the Worker's log freed exactly their bytes, and the other
# image pulls with every digest verified. Then fires it again: nothing more goes.
#
#   bash infra/edge-build.sh && bash tests/edge/gc.sh
# The bundle must be built (edge/build); wrangler runs in its own session, stopped by PID.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_CA_BUNDLE
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
[ -f edge/build/index.js ] || { echo "edge gc: build the bundle first (bash infra/edge-build.sh)"; exit 1; }

port=$(bash tests/free-port.sh) inspector=$(bash tests/free-port.sh)
work=$(mktemp -d /tmp/berth-edge-gc.XXXXXX)
setsid .tools/node/node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "$port" \
  --inspector-port "$inspector" --persist-to "$work/state" --show-interactive-dev-session=false \
  --test-scheduled --var "UPLOAD_SECRET:edge-gc-$RANDOM$RANDOM" \
  --var BERTH_GC_GRACE:0 --var BERTH_GC_SETTLE:0 >"$work/wrangler.log" 2>&1 &
pid=$!
stop() {
  local status=$?
  kill -TERM -- "-$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null
  if [ "$status" = 0 ]; then rm -rf "$work"; else echo "edge gc: kept the logs in $work"; fi
}
trap stop EXIT
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { tail -30 "$work/wrangler.log"; exit 1; }
  sleep 0.2
done

python3 - "$port" "$work/wrangler.log" <<'PY'
import hashlib, json, os, re, sys, time, urllib.request, urllib.error
port, log = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"

def call(method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

def push_blob(repo, data):
    status, body = call("POST", f"/v2/{repo}/blobs/uploads/?digest={digest(data)}", data,
                        {"content-type": "application/octet-stream"})
    assert status == 201, (status, body)

def push_image(repo, tag, layers):
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    for blob in [config] + layers:
        push_blob(repo, blob)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(l), "size": len(l)} for l in layers],
    }).encode()
    status, body = call("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                        {"content-type": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 201, (status, body)
    return config, manifest

def pull(repo, ref):
    status, manifest = call("GET", f"/v2/{repo}/manifests/{ref}", headers={"accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200, (ref, status)
    m = json.loads(manifest)
    for d in [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]:
        status, blob = call("GET", f"/v2/{repo}/blobs/{d}")
        assert status == 200 and digest(blob) == d, (d, status)

def scheduled():
    before = open(log, errors="replace").read().count("garbage collection:")
    status, _ = call("GET", "/__scheduled?cron=17+*+*+*+*")
    assert status == 200, status
    for _ in range(100):
        reports = re.findall(r"berth: garbage collection: (\{.*\})", open(log, errors="replace").read())
        if len(reports) > before:
            return json.loads(reports[-1])
        time.sleep(0.1)
    raise SystemExit("no garbage collection report in the Worker's log")

shared = os.urandom(3000)
own_kept, own_gone = os.urandom(2000), os.urandom(2500)
push_image("gc/a", "kept", [own_kept, shared])
config_gone, manifest_gone = push_image("gc/a", "gone", [own_gone, shared])
status, _ = call("DELETE", f"/v2/gc/a/manifests/{digest(manifest_gone)}")
assert status == 202, status

report = scheduled()
print("edge gc: report", report)
expected = len(config_gone) + len(own_gone) + len(manifest_gone)
assert report["finished"], report
assert report["bytes_freed"] == expected, (report["bytes_freed"], expected)
for d in (digest(own_gone), digest(config_gone)):
    status, _ = call("HEAD", f"/v2/gc/a/blobs/{d}")
    assert status == 404, (d, status)
pull("gc/a", "kept")
again = scheduled()
assert again["bytes_freed"] == 0, again
pull("gc/a", "kept")
print(f"edge gc: ok (freed {expected} bytes; the kept image pulls)")
PY
