#!/usr/bin/env bash
# Starts the Worker with token auth on, for the auth tests (tests/tests/auth.rs and
# tests/clients/auth.sh run it through BERTH_AUTH_LAUNCH; tests/edge/run.sh's `auth` step):
#
#   tests/edge/launch-auth.sh CONFIG_FILE PORT
#
# CONFIG_FILE is a `berth serve --auth-config` file; `berth auth export --json` inlines its key
# files into the one JSON text the Worker reads from its AUTH_CONFIG secret (a deployment runs
# `berth auth export --json --config FILE | wrangler secret put AUTH_CONFIG`). wrangler dev takes it as a
# --var here, which shows it in the process list: fine for the throwaway keys of a test.
# Runs `wrangler dev` on 127.0.0.1:PORT+2 (inspector PORT+3) behind tests/clients/plain_front.py
# on PORT (it closes TLS attempts at once; see that file), with its state in a temporary
# directory, until its process group is stopped. Run infra/edge-build.sh first.
# LAUNCH_POLICY_ONLY=1: CONFIG_FILE is a policy file (only `[policies]`, no auth), given to the
# Worker as POLICY_CONFIG through the same command (tests/mirror/run.sh's mirror rules); LAUNCH_VARS adds `--var`s
# (space-separated NAME:VALUE); LAUNCH_STATE_DIR: where wrangler keeps its local R2 and KV (the
# caller removes it; default: a new temporary directory).
set -euo pipefail
config=$1 port=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false

if [ -n "${LAUNCH_POLICY_ONLY:-}" ]; then
  config_var="POLICY_CONFIG:$("$BERTH_BIN" auth export --json --config "$config")"
else
  config_var="AUTH_CONFIG:$("$BERTH_BIN" auth export --json --config "$config")"
fi
extra=()
for v in ${LAUNCH_VARS:-}; do extra+=(--var "$v"); done
state=${LAUNCH_STATE_DIR:-$(mktemp -d /tmp/berth-edge-auth.XXXXXX)}
bash "$root/infra/edge/wrangler-dev.sh" --ip 127.0.0.1 --port $((port + 2)) \
  --inspector-port $((port + 3)) --persist-to "$state" --show-interactive-dev-session=false \
  --var "UPLOAD_SECRET:edge-auth-test-$RANDOM$RANDOM" --var MAX_REQUEST_BODY:400000000 \
  --var "$config_var" "${extra[@]}" &
python3 "$root/tests/clients/plain_front.py" "$port" $((port + 2)) &
wait -n
