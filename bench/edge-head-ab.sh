#!/usr/bin/env bash
# Blob HEAD requests/s of two builds of the request Worker, alternating, under `wrangler dev`
# (infra/edge/wrangler-dev.sh --bundle DIR, wrangler.toml's bindings, local R2): for a change
# to the HEAD path, measured against the build before it on the same machine.
#
#   cp -a edge/build-serve /tmp/before   # then change, rebuild (bash infra/edge-build.sh)
#   bash bench/edge-head-ab.sh /tmp/before edge/build-serve     # ROUNDS (3), oha -z 5s -c 16
# Each round starts each Worker on a fresh state and a free port, pushes one small blob, checks
# its HEAD is 200, runs oha, and stops the Worker by its process group.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
a=$(realpath "$1") b=$(realpath "$2") rounds=${ROUNDS:-3}
run() { # DIR LABEL
  local w p pid d blob code
  w=$(mktemp -d) p=$(bash tests/free-port.sh)
  setsid bash infra/edge/wrangler-dev.sh --bundle "$1" --ip 127.0.0.1 --port "$p" \
    --inspector-port "$(bash tests/free-port.sh)" --persist-to "$w/state" --show-interactive-dev-session=false \
    --log-level warn --var "UPLOAD_SECRET:ab-$RANDOM$RANDOM" >"$w/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 60); do curl -s -o /dev/null "http://127.0.0.1:$p/v2/" && break; sleep 1; done
  blob="ab $RANDOM$RANDOM" d=sha256:$(printf '%s' "$blob" | sha256sum | cut -d' ' -f1)
  curl -s -o /dev/null -X POST --data-binary "$blob" "http://127.0.0.1:$p/v2/ab/x/blobs/uploads/?digest=$d"
  code=$(curl -s -o /dev/null -w '%{http_code}' -I "http://127.0.0.1:$p/v2/ab/x/blobs/$d")
  [ "$code" = 200 ] || { echo "$2: blob HEAD answered $code" >&2; kill -TERM -- "-$pid"; exit 1; }
  "$OHA" -z 5s -c 16 --no-tui --output-format json -m HEAD "http://127.0.0.1:$p/v2/ab/x/blobs/$d" >"$w/oha.json"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], round(d['summary']['requestsPerSec']), d['statusCodeDistribution'])" "$w/oha.json" "$2"
  kill -TERM -- "-$pid" 2>/dev/null || true; sleep 2; kill -KILL -- "-$pid" 2>/dev/null || true; rm -rf "$w"
}
for _ in $(seq 1 "$rounds"); do run "$a" "$1"; run "$b" "$2"; done
