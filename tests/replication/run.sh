#!/usr/bin/env bash
# Replication (docs/replication.md) with real registries and clients: a source `berth serve`
# with two on-push rules, to Debian's docker-registry (CNCF Distribution, htpasswd Basic auth)
# and to a second `berth serve` with token auth (under the prefix `rep`, deletes replicated),
# and a third rule that only runs by hand (`berth replicate`). Pushed with skopeo (an image, a
# two-platform index with `--all`) and curl (a referrer of the index, by digest); digests
# compared with `skopeo inspect --raw` at each destination. Distribution is stopped before a
# push and started again: the copy completes after it is back (outbox retry). Last, pull mode
# (tests/replication/sync.sh): a berth serve with a sync rule copying from Distribution.
#
#   bash tests/replication/run.sh
#
# Environment: BERTH_BIN (default <repo>/target/release/berth, else debug), KEEP_WORK=1 keeps
# the temporary directory, CLIENT_TIMEOUT (s per client command, default 120).
# Prints `ok:`/`FAIL:` per check and `N passed, M failed`; exits non-zero on a failure. Every
# server listens on 127.0.0.1 on a port the kernel picked, and is stopped by PID at exit.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# How long a replication may take to show at a destination (the retry after a destination
# came back waits for the outbox's backoff: 5 s, 10 s, 20 s).
WAIT_SECS=${WAIT_SECS:-90}

WORK=$(mktemp -d /tmp/berth-replication.XXXXXX)
# shellcheck source=tests/replication/lib.sh
. "$here/lib.sh"
trap cleanup_replication EXIT
find_berth_bin

make_images
setup_d
setup_t

# --- the source: berth serve with the rules
S_PORT=$(free_port); S=127.0.0.1:$S_PORT
replication_rules >"$WORK/policies.toml"
start_s() { # start_s [EXTRA SERVE FLAGS...]
  "$BERTH_BIN" serve --addr "$S" --data-dir "$WORK/s-data" --policy-config "$WORK/policies.toml" \
    --replication-interval 200 --replication-timeout 30 "$@" >>"$WORK/s.log" 2>&1 &
  S_PID=$!; PIDS+=("$S_PID")
  wait_http "http://$S/v2/" 200 "the source" "$S_PID" || exit 1
}
start_s
say "source $S, destinations $D (distribution, htpasswd) and $T (berth, token auth); work $WORK"

say "--- on push: an image, an index (--all) and a referrer of it"
check "skopeo push app/one:v1 to the source" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img1:v1" "docker://$S/app/one:v1"
check "skopeo push the index app/multi:v1 (--all)" "${SK[@]}" copy -q --all --dest-tls-verify=false "oci:$WORK/multi:v1" "docker://$S/app/multi:v1"
push_referrer "http://$S" app/multi

expect_pushed_copies
# Berth's referrers API at T lists the referrer under the index (it came after its subject).
CHALLENGE=$(curl -s -D- -o /dev/null "http://$T/v2/rep/app/multi/referrers/$IDX" | tr -d '\r' | grep -i '^www-authenticate:')
REALM=$(sed -n 's/.*realm="\([^"]*\)".*/\1/p' <<<"$CHALLENGE") SERVICE=$(sed -n 's/.*service="\([^"]*\)".*/\1/p' <<<"$CHALLENGE")
curl -s -G -u "$ALICE" --data-urlencode "service=$SERVICE" --data-urlencode "scope=repository:rep/app/multi:pull" "$REALM" >"$WORK/token.json"
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("token", ""))' "$WORK/token.json")
listed=$(curl -s -H "Authorization: Bearer $TOKEN" "http://$T/v2/rep/app/multi/referrers/$IDX" | grep -c "$REF")
expect_eq "Berth (token): the referrers API lists it" 1 "$listed"
expect_eq "the rule on_push = false copied nothing" "" "$(raw_digest "$BOB" "$D/manual/app/one:v1")"

say "--- the destination down during a push: the copy completes after it is back"
stop_pid "$D_PID"
check "skopeo push app/two:v1 with Distribution down" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img2:v1" "docker://$S/app/two:v1"
expect_at "Berth (token) got app/two:v1 meanwhile" "$ALICE" "$T/rep/app/two:v1" "$D2"
sleep 3 # at least one attempt fails
grep -q 'replication failed' "$WORK/s.log" && ok "a failed attempt is logged" || bad "no failed attempt in the log"
start_d
expect_at "Distribution: app/two:v1 after it came back" "$BOB" "$D/app/two:v1" "$D2"

say "--- the destination killed during a copy: the copy completes after it is back"
BIG_MIB=${BIG_MIB:-128}
D3=$(python3 "$root/tests/mirror/make_image.py" "$WORK/big" v1 "$NONCE-big" $((BIG_MIB * 1024))) || exit 1
check "skopeo push app/big:v1 (${BIG_MIB} MiB layer)" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/big:v1" "docker://$S/app/big:v1"
# Distribution keeps an upload in progress under _uploads: kill it (SIGKILL) once one exists.
uploads=$WORK/d-data/docker/registry/v2/repositories/app/big/_uploads
mid=no
for ((i = 0; i < 1500; i++)); do
  if [ -n "$(ls -A "$uploads" 2>/dev/null)" ]; then mid=yes; break; fi
  sleep 0.02
done
kill -KILL "$D_PID" 2>/dev/null; wait "$D_PID" 2>/dev/null
if [ "$mid" = yes ]; then ok "Distribution killed with an upload of app/big in progress"; else say "  note: no upload in progress was seen before the kill"; fi
sleep 2
start_d
expect_at "Distribution: app/big:v1 after it came back" "$BOB" "$D/app/big:v1" "$D3"
expect_at "Berth (token): rep/app/big:v1" "$ALICE" "$T/rep/app/big:v1" "$D3"
# The layer was streamed from the blob store to both destinations (and retried), never held
# whole: the source's peak memory stays well under the layer's size.
peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$S_PID/status")
if [ -n "$peak_kib" ] && [ "$peak_kib" -lt $((BIG_MIB * 1024 * 3 / 4)) ]; then
  ok "the source's peak RSS $((peak_kib / 1024)) MiB < 3/4 of the ${BIG_MIB} MiB layer"
else
  bad "the source's peak RSS ${peak_kib:-?} KiB: was the layer buffered?"
fi
rm -rf "$WORK/big"

say "--- a delete replicates where the rule says so"
expect_delete_replicated "http://$S"

say "--- by hand (berth replicate, on the stopped source's data directory)"
stop_pid "$S_PID"
check "berth replicate --rule by-hand app/multi:v1" "$BERTH_BIN" replicate --data-dir "$WORK/s-data" --policy-config "$WORK/policies.toml" --rule by-hand app/multi:v1
expect_eq "Distribution: manual/app/multi:v1" "$IDX" "$(raw_digest "$BOB" "$D/manual/app/multi:v1")"
expect_eq "Distribution: manual/app/multi's referrer" "$REF" "$(raw_digest "$BOB" "$D/manual/app/multi@$REF")"
check "berth replicate --rule by-hand --all" "$BERTH_BIN" replicate --data-dir "$WORK/s-data" --policy-config "$WORK/policies.toml" --rule by-hand --all
expect_eq "Distribution: manual/app/two:v1" "$D2" "$(raw_digest "$BOB" "$D/manual/app/two:v1")"

say "--- on a schedule (--replication-schedule): the by-hand rule (on_push = false) copies a new push"
start_s --replication-schedule 3
check "skopeo push app/sched:v1" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img1:v1" "docker://$S/app/sched:v1"
expect_at "Distribution: manual/app/sched:v1 by the schedule" "$BOB" "$D/manual/app/sched:v1" "$D1"
stop_pid "$S_PID"

"$BERTH_BIN" replicate status --data-dir "$WORK/s-data" >"$WORK/status.out" 2>&1
grep -q '^by-hand	ok' "$WORK/status.out" && ok "status: by-hand ok" || bad "status: $(cat "$WORK/status.out")"
grep -q '^to-dist	ok' "$WORK/status.out" && ok "status: to-dist ok (after the retry)" || bad "status: $(cat "$WORK/status.out")"
grep -q 'outbox: 0 waiting, 0 failed' "$WORK/status.out" && ok "status: the outbox is empty" || bad "status: $(cat "$WORK/status.out")"
if grep -q -e "$ALICE_PW" -e "$BOB_PW" "$WORK/s.log" "$WORK/status.out"; then bad "a password was logged"; else ok "no password in the source's log or status"; fi

# Pull mode: a berth serve syncing from Distribution (tests/replication/sync.sh).
source "$here/sync.sh"

say "$passed passed, $failed failed"
[ "$failed" = 0 ]
