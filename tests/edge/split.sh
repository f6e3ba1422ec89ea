#!/usr/bin/env bash
# The two Workers of a split deployment (edge/Cargo.toml's features `serve` and `maintenance`;
# terraform/modules/cloudflare deploys them on one bucket), each built alone by
# infra/edge-build.sh:
#   1. the request Worker (edge/build-serve) carries no background code: the text of the
#      garbage collection's log line is not in its wasm, its Cron Trigger runs nothing, and its
#      bundle is smaller than the all-in-one Worker's (edge/build) by at least 50 KB gzip;
#   2. the background Worker (edge/build-maintenance) answers no request (workerd: 500, no
#      fetch handler) and its Cron Trigger runs garbage collection to the end.
# What each half does is tested on the all-in-one Worker, which is both halves' code in one
# bundle: tests/edge/run.sh's suite, clients, edge, push and relay steps run the request Worker
# itself; gc, webhooks and replication run the background handlers on the all-in-one Worker,
# because two `wrangler dev` processes cannot share one local bucket (each workerd keeps its own
# copy of the local R2 state in memory).
#
#   bash infra/edge-build.sh && bash tests/edge/split.sh
set -uo pipefail
EDGE_NAME=split
# shellcheck source=tests/edge/lib.sh
. "$(dirname "$0")/lib.sh"
work=$(mktemp -d /tmp/berth-edge-split.XXXXXX)
trap 'stop_worker_and_clean "$work"' EXIT
# The check counters (ok, bad); it wants a work directory.
WORK=$work
# shellcheck source=tests/lib/common.sh
. tests/lib/common.sh
for half in serve maintenance; do
  [ -f "edge/build-$half/index_bg.wasm" ] || { echo "edge split: no edge/build-$half (bash infra/edge-build.sh)"; exit 1; }
done

gc_line="berth: garbage collection"
gzipped() { (gzip -9 <"$1/index_bg.wasm"; gzip -9 <"$1/index.js") | wc -c; }
trigger() { curl -s -o /dev/null -w '%{http_code}' -m 120 "http://127.0.0.1:$EDGE_PORT/__scheduled?cron=17+*+*+*+*"; }
# A background run's log line can follow the trigger's answer by a moment.
logged() { for _ in $(seq 1 20); do grep -q "$1" "$2" && return 0; sleep 0.5; done; return 1; }

# 1. The request Worker.
if grep -qa "$gc_line" edge/build-serve/index_bg.wasm; then
  bad "the request Worker's bundle holds the garbage collection's code"
else
  ok "the request Worker's bundle holds no garbage collection code"
fi
grep -qa "$gc_line" edge/build/index_bg.wasm && ok "the all-in-one Worker's bundle holds it" \
  || bad "the all-in-one Worker's bundle lacks the garbage collection's code: the check above proves nothing"
whole=$(gzipped edge/build) serve=$(gzipped edge/build-serve) maintenance=$(gzipped edge/build-maintenance)
if [ $((whole - serve)) -ge 50000 ]; then
  ok "request Worker $serve B gzip, all-in-one $whole B, background Worker $maintenance B"
else
  bad "the request Worker ($serve B gzip) is not 50 KB smaller than the all-in-one Worker ($whole B)"
fi
mkdir -p "$work/serve"
start_worker "$work/serve" --bundle edge/build-serve --var BERTH_GC_GRACE:0 --var BERTH_GC_SETTLE:0
url="http://127.0.0.1:$EDGE_PORT"
blob="split test $RANDOM$RANDOM" digest=sha256:$(printf '%s' "$blob" | sha256sum | cut -d' ' -f1)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "$blob" "$url/v2/split/a/blobs/uploads/?digest=$digest")
[ "$code" = 201 ] && ok "the request Worker takes a blob (201)" || bad "blob push: $code"
back=$(curl -s "$url/v2/split/a/blobs/$digest")
[ "$back" = "$blob" ] && ok "and serves it back" || bad "blob pull: [$back]"
code=$(trigger)
if logged "$gc_line" "$work/serve/wrangler.log"; then
  bad "the request Worker ran garbage collection on a Cron Trigger"
else
  ok "its Cron Trigger ($code) runs nothing there"
fi
# Nothing collected the unreferenced blob: there was no background code to do it.
code=$(curl -s -o /dev/null -w '%{http_code}' -I "$url/v2/split/a/blobs/$digest")
[ "$code" = 200 ] && ok "the blob is still there (HEAD 200)" || bad "blob HEAD after the trigger: $code"
stop_worker

# 2. The background Worker.
mkdir -p "$work/maintenance"
start_worker "$work/maintenance" --bundle edge/build-maintenance --var BERTH_GC_GRACE:0 --var BERTH_GC_SETTLE:0
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EDGE_PORT/v2/")
[ "$code" = 500 ] && ok "the background Worker answers no request (GET /v2/: 500)" || bad "background Worker GET /v2/: $code"
code=$(trigger)
if [ "$code" = 200 ] && logged "$gc_line: {.*\"finished\":true" "$work/maintenance/wrangler.log"; then
  ok "its Cron Trigger runs garbage collection to the end"
else
  bad "background Worker's Cron Trigger: $code, no finished garbage collection in its log"
fi
stop_worker

echo "edge split: $passed passed, $failed failed"
[ "$failed" = 0 ]
