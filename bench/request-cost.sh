#!/usr/bin/env bash
# Storage operations per registry request, on the Worker (R2, KV, Cache API under `wrangler dev`)
# and on Lambda (S3 under `cargo lambda watch`, the stack of tests/lambda/run.sh): the
# request-cost table of BENCHMARKS.md.
#
#   bash bench/request-cost.sh      # prints a Markdown table
#
# Both runtimes count their own backend calls when told to (edge/src/calls.rs,
# lambda/src/calls.rs) and say so in a `Berth-Backend-Calls` response header;
# bench/request_cost.py sends the same requests, one at a time, to each and tabulates the header.
# Every server listens on 127.0.0.1 on a free port picked at run time and is stopped by PID.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_CA_BUNDLE
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
work=$(mktemp -d /tmp/berth-request-cost.XXXXXX)
edge_pid="" lambda_pid=""
cleanup() {
  [ -n "$edge_pid" ] && { kill -TERM -- "-$edge_pid" 2>/dev/null; sleep 1; kill -KILL -- "-$edge_pid" 2>/dev/null; }
  [ -n "$lambda_pid" ] && { kill -TERM "$lambda_pid" 2>/dev/null; wait "$lambda_pid" 2>/dev/null; }
  rm -rf "$work"
}
trap cleanup EXIT

bash infra/edge-build.sh >"$work/edge-build.log" 2>&1 || { cat "$work/edge-build.log" >&2; exit 1; }
port=$(bash tests/free-port.sh) inspector=$(bash tests/free-port.sh)
setsid bash infra/edge/wrangler-dev.sh --ip 127.0.0.1 --port "$port" --inspector-port "$inspector" \
  --persist-to "$work/state" --show-interactive-dev-session=false --log-level warn \
  --var "UPLOAD_SECRET:cost-$RANDOM$RANDOM" --var COUNT_BACKEND_CALLS:1 >"$work/wrangler.log" 2>&1 &
edge_pid=$!

BERTH_COUNT_BACKEND_CALLS=1 bash tests/lambda/run.sh --serve >"$work/lambda.log" 2>&1 &
lambda_pid=$!

for _ in $(seq 1 120); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
  [ "$code" = 200 ] && break
  sleep 1
done
[ "$code" = 200 ] || { echo "wrangler dev did not start:" >&2; tail -30 "$work/wrangler.log" >&2; exit 1; }
for _ in $(seq 1 3000); do grep -q '^INIT_MS=' "$work/lambda.log" && break; sleep 0.2; done
lambda_url=$(sed -n 's/^BERTH_URL=\([^ ]*\).*/\1/p' "$work/lambda.log")
[ -n "$lambda_url" ] || { echo "the Lambda stack did not start:" >&2; tail -30 "$work/lambda.log" >&2; exit 1; }

echo "Commit $(git rev-parse --short HEAD); each cell: total operations, then which."
echo
python3 bench/request_cost.py "Worker (R2, KV, Cache API)=http://127.0.0.1:$port" "Lambda (S3)=$lambda_url"
