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
EDGE_NAME=gc
# shellcheck source=tests/edge/lib.sh
. "$(dirname "$0")/lib.sh"
edge_needs skopeo

work=$(mktemp -d /tmp/berth-edge-gc.XXXXXX)
trap 'stop_worker_and_clean "$work"' EXIT
policy=$(worker_config tests/gc-retention.toml) || exit 1
start_worker "$work" --var BERTH_GC_GRACE:0 --var BERTH_GC_SETTLE:0 --var "POLICY_CONFIG:$policy"
start_front "$work/front.log"

python3 tests/edge/gc_test.py "$EDGE_PORT" "$work/wrangler.log" "$work/state" "$EDGE_FRONT"
