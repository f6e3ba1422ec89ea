#!/usr/bin/env bash
# Garbage collection on the Worker (docs/gc.md): `wrangler dev --test-scheduled` with local R2,
# grace and settle 0 so one Cron Trigger does the whole pipeline, and the retention rule of
# tests/gc-retention.toml (POLICY_CONFIG) on the repository gc/ret. The checks are
# tests/edge/gc_test.py: content freed in the local R2 bucket itself (wrangler's --persist-to
# state), the kept images pulled over HTTP and with skopeo, then retention under the trigger
# (expired tags gone, kept ones pull, the `retention-delete` audit lines in the Worker's log).
#
#   bash infra/edge-build.sh && bash tests/edge/gc.sh
# The bundle must be built (edge/build). wrangler runs in its own session, stopped by PID (its
# process group), and so does the TLS-refusing front skopeo goes through (plain_front.py).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_CA_BUNDLE
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
[ -f edge/build/index.js ] || { echo "edge gc: build the bundle first (bash infra/edge-build.sh)"; exit 1; }
command -v skopeo >/dev/null || { echo "edge gc: needs skopeo"; exit 1; }

port=$(bash tests/free-port.sh) inspector=$(bash tests/free-port.sh) front=$(bash tests/free-port.sh)
work=$(mktemp -d /tmp/berth-edge-gc.XXXXXX)
setsid bash infra/edge/wrangler-dev.sh --ip 127.0.0.1 --port "$port" \
  --inspector-port "$inspector" --persist-to "$work/state" --show-interactive-dev-session=false \
  --test-scheduled --var "UPLOAD_SECRET:edge-gc-$RANDOM$RANDOM" \
  --var BERTH_GC_GRACE:0 --var BERTH_GC_SETTLE:0 \
  --var "POLICY_CONFIG:$(grep -v '^#' tests/gc-retention.toml)" >"$work/wrangler.log" 2>&1 &
pid=$!
front_pid=""
stop() {
  local status=$?
  if [ -n "$front_pid" ]; then kill -TERM "$front_pid" 2>/dev/null; fi
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
# skopeo tries https first; workerd would hold its handshake 10 s (see plain_front.py).
python3 tests/clients/plain_front.py "$front" "$port" >"$work/front.log" 2>&1 &
front_pid=$!
bash tests/wait-port.sh "$front" "the plain front" >/dev/null || exit 1

python3 tests/edge/gc_test.py "$port" "$work/wrangler.log" "$work/state" "$front"
