#!/usr/bin/env bash
# Replication on the Worker (docs/replication.md): `wrangler dev --test-scheduled` with local R2,
# the local wake-up queue of wrangler.toml, and a POLICY_CONFIG with the rules of
# tests/replication/lib.sh to two destinations this script runs on 127.0.0.1: Debian's
# docker-registry (htpasswd) and a second `berth serve` (token auth).
#   1. On push, through the queue: skopeo pushes an image and a two-platform index, curl a
#      referrer of the index; every manifest shows at both destinations with its digest, and
#      no Cron Trigger ran (the Worker's log has queue reports only).
#   2. A destination down: Distribution is stopped, two images pushed; the other destination
#      gets them through the queue, Distribution's copies fail and wait for their backoff; it
#      comes back, and nothing reaches it until two Cron Triggers fired at once (`/__scheduled`)
#      copy them. The same triggers run the scheduled full run of the on_push = false rule
#      and the others (BERTH_REPLICATION_SCHEDULE: every rule, as `berth serve
#      --replication-schedule`), enqueued by one of them only; the two reports together
#      copy each entry once (claims), none failed.
#      The same triggers run a sync rule (pull mode) once: app/one from Distribution into
#      pulled/app/one, checked with skopeo.
#   3. A delete replicates to the rule with deletes = true only.
#   4. A 96 MiB layer copied by the Cron Trigger: workerd's peak memory grows by less than twice
#      the layer (wrangler dev's local R2 and fetch hold about one layer; a body buffered in wasm
#      grew it by over four).
#
#   bash infra/edge-build.sh && bash tests/edge/replication.sh
# Needs skopeo, docker-registry and target/release/berth (or BERTH_BIN). Prints ok:/FAIL: per
# check; wrangler runs in its own session, every server is stopped by PID at exit.
set -uo pipefail
EDGE_NAME=replication
# shellcheck source=tests/edge/lib.sh
. "$(dirname "$0")/lib.sh"
edge_needs skopeo
BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}
[ -x "$BERTH_BIN" ] || { echo "edge replication: no berth binary at $BERTH_BIN" >&2; exit 1; }
WAIT_SECS=${WAIT_SECS:-60}

WORK=$(mktemp -d /tmp/berth-edge-replication.XXXXXX)
# shellcheck source=tests/replication/lib.sh
. "$root/tests/replication/lib.sh"
stop() {
  stop_worker
  cleanup_replication
}
trap stop EXIT

make_images
setup_d
setup_t
replication_rules >"$WORK/policies.toml"
# Pull mode: the Cron Trigger also syncs app/one from Distribution (which step 1 fills by
# replication) into pulled/ (which no replication rule covers).
sync_rule '["app/one"]' pulled 1h >>"$WORK/policies.toml"
policy=$(worker_config "$WORK/policies.toml") || exit 1
start_worker "$WORK" --var MAX_REQUEST_BODY:400000000 \
  --var BERTH_REPLICATION_SCHEDULE:1h --var "POLICY_CONFIG:$policy"
start_front "$WORK/front.log"
W=127.0.0.1:$EDGE_PORT F=127.0.0.1:$EDGE_FRONT
say "Worker $W (front $F), destinations $D (distribution, htpasswd) and $T (berth, token auth); work $WORK"

log() { cat "$WORK/wrangler.log"; }
cron_reports() { log | grep -c 'berth: replication: {' ; }
# The JSON of every Cron Trigger replication report, one a line.
cron_jsons() { log | sed -n 's/.*berth: replication: \({.*}\).*/\1/p'; }
# Fires the Cron Trigger N times at once and waits for their N reports (up to 120 s).
fire_cron() { # fire_cron N
  local before i curls=()
  before=$(cron_reports)
  for ((i = 0; i < $1; i++)); do curl -s -o /dev/null -m 300 "http://$W/__scheduled?cron=17+*+*+*+*" & curls+=($!); done
  for ((i = 0; i < 1200; i++)); do [ "$(cron_reports)" -ge $((before + $1)) ] && break; sleep 0.1; done
  wait "${curls[@]}"
}

say "--- on push, through the queue: an image, an index (--all) and a referrer of it"
started=$(date +%s.%N)
check "skopeo push app/one:v1 to the Worker" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img1:v1" "docker://$F/app/one:v1"
expect_at "Distribution: app/one:v1 (the first copy)" "$BOB" "$D/app/one:v1" "$D1"
took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
say "  (push to copy at Distribution: $took s, skopeo's push included)"
check "skopeo push the index app/multi:v1 (--all)" "${SK[@]}" copy -q --all --dest-tls-verify=false "oci:$WORK/multi:v1" "docker://$F/app/multi:v1"
push_referrer "http://$W" app/multi
expect_pushed_copies
expect_eq "Cron Trigger replication runs so far" 0 "$(cron_reports)"
queued=$(log | grep -c 'berth: replication (queue): {')
if [ "$queued" -gt 0 ]; then ok "copied by $queued queue consumer runs"; else bad "no queue consumer replication report"; fi
expect_eq "the rule on_push = false copied nothing" "" "$(raw_digest "$BOB" "$D/manual/app/one:v1")"

say "--- Distribution down during pushes: the Cron Trigger copies after it is back"
stop_pid "$D_PID"
check "skopeo push app/two:v1 with Distribution down" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img2:v1" "docker://$F/app/two:v1"
check "skopeo push app/three:v1 with Distribution down" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img1:v1" "docker://$F/app/three:v1"
expect_at "Berth (token) got rep/app/two:v1 meanwhile" "$ALICE" "$T/rep/app/two:v1" "$D2"
expect_at "Berth (token) got rep/app/three:v1 meanwhile" "$ALICE" "$T/rep/app/three:v1" "$D1"
for ((i = 0; i < 100; i++)); do log | grep -q 'berth: replication (queue): {[^}]*"retrying":[1-9]' && break; sleep 0.1; done
log | grep -q 'berth: replication (queue): {[^}]*"retrying":[1-9]' && ok "the queue run's copies to Distribution failed and wait for a retry" \
  || bad "no queue report with retrying entries"
start_d
sleep 6 # past the first backoff (5 s): due, but nothing wakes the queue
expect_eq "Distribution: no app/two:v1 before the Cron Trigger" "" "$(raw_digest "$BOB" "$D/app/two:v1")"
fire_cron 2
expect_eq "Distribution: app/two:v1 after the Cron Trigger" "$D2" "$(raw_digest "$BOB" "$D/app/two:v1")"
expect_eq "Distribution: app/three:v1 after the Cron Trigger" "$D1" "$(raw_digest "$BOB" "$D/app/three:v1")"
expect_eq "Distribution: manual/app/multi:v1 by the scheduled full run" "$IDX" "$(raw_digest "$BOB" "$D/manual/app/multi:v1")"
expect_eq "Distribution: manual/app/multi's referrer" "$REF" "$(raw_digest "$BOB" "$D/manual/app/multi@$REF")"
full=$(log | sed -n 's/.*a scheduled full run enqueued \([0-9]*\) copies.*/\1/p')
expect_eq "full runs enqueued by the two triggers (3 rules x 4 tags, once: the other found them taken)" 12 "$(printf "%s\n" $full | awk "{s += \$1} END {print s + 0}")"
read -r copied others busy < <(cron_jsons | python3 -c '
import json, sys
r = [json.loads(l) for l in sys.stdin if l.strip()]
print(sum(x["copied"] for x in r), sum(x["retrying"] + x["failed"] for x in r), sum(1 for x in r if x["copied"]))')
expect_eq "copies by the two concurrent triggers (2 retried + 12 of the full run, each once)" 14 "$copied"
expect_eq "retrying or failed in the triggers' reports" 0 "$others"
# The same two triggers ran the sync rule, once (the other found it claimed).
expect_eq "pull mode: pulled/app/one:v1 synced from Distribution by the Cron Trigger" "$D1" "$(raw_digest "" "$F/pulled/app/one:v1")"
expect_eq "pull mode: sync runs in the two triggers' logs" 1 "$(log | grep -c 'sync rules run: 1, failed: 0')"
say "  (triggers that copied something: $busy of 2; reports: $(cron_jsons | tr '\n' ' '))"

say "--- a delete replicates where the rule says so"
expect_delete_replicated "http://$W"

say "--- a large layer streamed from R2 to the destination"
BIG_MIB=${BIG_MIB:-96}
D3=$(python3 "$root/tests/mirror/make_image.py" "$WORK/big" v1 "$NONCE-big" $((BIG_MIB * 1024))) || exit 1
stop_pid "$D_PID"
stop_pid "$T_PID"
check "skopeo push app/big:v1 (${BIG_MIB} MiB layer) with both destinations down" \
  "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/big:v1" "docker://$F/app/big:v1"
# wrangler dev runs two workerd processes (its entry proxy and the runtime): each one's peak
# RSS (KiB) now, "pid:kib" a line.
hwm() {
  local pid
  for pid in $(ps -o pid=,comm= -s "$EDGE_PID" | awk '$2 ~ /workerd/ {print $1}'); do
    echo "$pid:$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null)"
  done
}
sleep 6
before=$(hwm)
start_d
sleep 1
started=$(date +%s.%N)
fire_cron 1
took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
say "  (the Cron Trigger that copied it returned in $took s)"
expect_eq "Distribution: app/big:v1 by the Cron Trigger" "$D3" "$(raw_digest "$BOB" "$D/app/big:v1")"
# The most any workerd's peak grew, and that process's peak before (KiB).
read -r grew from < <(python3 -c '
import sys
before = dict(l.split(":") for l in sys.argv[1].split() if l.endswith(tuple("0123456789")))
after = dict(l.split(":") for l in sys.argv[2].split() if l.endswith(tuple("0123456789")))
growth = [(int(after[p]) - int(before[p]), int(before[p])) for p in after if p in before]
print(*max(growth) if growth else ("", ""))' "$before" "$(hwm)")
# wrangler dev itself (its local R2 and outbound fetch, in the same workerd) holds about the
# layer once, however the Worker sends it (measured the same with the R2 stream handed to fetch
# as it is); a body the Worker buffers in wasm grew it by more than 4 times the layer.
if [ -n "$grew" ] && [ "$grew" -lt $((BIG_MIB * 1024 * 2)) ]; then
  ok "workerd's peak RSS grew by $((grew / 1024)) MiB copying the ${BIG_MIB} MiB layer, under twice its size (from $((from / 1024)) MiB)"
else
  bad "workerd's peak RSS grew by ${grew:-?} KiB (before: $before): was the layer buffered?"
fi
rm -rf "$WORK/big"
if grep -q -e "$ALICE_PW" -e "$BOB_PW" "$WORK/wrangler.log"; then bad "a password was logged"; else ok "no password in the Worker's log"; fi

say "edge replication: $passed passed, $failed failed"
[ "$failed" = 0 ]
