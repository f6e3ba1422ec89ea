# Sourced by the edge test scripts that run their own Worker (tests/edge/gc.sh, webhooks.sh,
# replication.sh): goes to the repository's root, clears proxies, checks the bundle is built
# (infra/edge-build.sh) and the commands the caller needs, and starts `wrangler dev
# --test-scheduled` with local R2 in its own session (start_worker), optionally behind the
# TLS-refusing front skopeo goes through (start_front); stop_worker stops both by PID.
#
#   EDGE_NAME=gc; . "$(dirname "$0")/lib.sh"; edge_needs skopeo   # EDGE_NAME: for messages
# shellcheck shell=bash

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_CA_BUNDLE
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
[ -f edge/build/index.js ] || { echo "edge $EDGE_NAME: build the bundle first (bash infra/edge-build.sh)"; exit 1; }
edge_needs() { # edge_needs COMMAND...: exits saying which one is missing
  local cmd
  for cmd in "$@"; do command -v "$cmd" >/dev/null || { echo "edge $EDGE_NAME: needs $cmd"; exit 1; }; done
}

# worker_config FILE: an auth or policy config file as the Worker reads it (`berth auth export
# --json`: keys inlined, JSON; the Worker has no TOML parser). In `$(...)`, so the caller exits:
#   policy=$(worker_config FILE) || exit 1
worker_config() {
  "${BERTH_BIN:-$root/target/release/berth}" auth export --json --config "$1" \
    || { echo "edge $EDGE_NAME: berth auth export --json --config $1 failed" >&2; exit 1; }
}

EDGE_PID="" EDGE_FRONT_PID=""
# start_worker DIR [WRANGLER ARGS...]: wrangler dev on 127.0.0.1:$EDGE_PORT (a free port), its
# state in DIR/state and its output in DIR/wrangler.log; returns once it answers GET /v2/ at all
# (up to 60 s; the background Worker of tests/edge/split.sh answers it with 500), exits showing
# the log's end if it stops or does not answer.
start_worker() {
  local dir=$1 i; shift
  EDGE_PORT=$(bash tests/free-port.sh) || exit 1
  setsid bash infra/edge/wrangler-dev.sh --ip 127.0.0.1 --port "$EDGE_PORT" \
    --inspector-port "$(bash tests/free-port.sh)" --persist-to "$dir/state" --show-interactive-dev-session=false \
    --test-scheduled --var "UPLOAD_SECRET:edge-$EDGE_NAME-$RANDOM$RANDOM" "$@" >"$dir/wrangler.log" 2>&1 &
  EDGE_PID=$!
  for ((i = 0; i < 300; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EDGE_PORT/v2/" 2>/dev/null)" != 000 ] && return 0
    kill -0 "$EDGE_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "edge $EDGE_NAME: wrangler dev did not answer on $EDGE_PORT; its log:"; tail -30 "$dir/wrangler.log"
  exit 1
}
# start_front LOG: tests/clients/plain_front.py on $EDGE_FRONT (a free port) in front of the
# Worker: skopeo tries https first, and workerd would hold its handshake 10 s.
start_front() {
  EDGE_FRONT=$(bash tests/free-port.sh) || exit 1
  python3 tests/clients/plain_front.py "$EDGE_FRONT" "$EDGE_PORT" >"$1" 2>&1 &
  EDGE_FRONT_PID=$!
  bash tests/wait-port.sh "$EDGE_FRONT" "the plain front" >/dev/null || exit 1
}
# Stops the front and wrangler's process group (it holds the workerd processes): SIGTERM,
# then SIGKILL after 10 s.
stop_worker() {
  local i
  if [ -n "$EDGE_FRONT_PID" ]; then kill -TERM "$EDGE_FRONT_PID" 2>/dev/null; fi
  [ -n "$EDGE_PID" ] || return 0
  kill -TERM -- "-$EDGE_PID" 2>/dev/null
  for ((i = 0; i < 50; i++)); do kill -0 "$EDGE_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$EDGE_PID" 2>/dev/null
  return 0
}
# For the EXIT trap of a script whose work directory is DIR: stops the Worker, removes DIR
# when the script succeeded, else says where its logs are.
stop_worker_and_clean() { # stop_worker_and_clean DIR
  local status=$?
  stop_worker
  if [ "$status" = 0 ]; then rm -rf "$1"; else echo "edge $EDGE_NAME: kept the logs in $1"; fi
}
