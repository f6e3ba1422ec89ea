# Pull mode (docs/replication.md, "Pull mode"): a `berth serve` with a `[[policies.sync]]`
# rule copies repositories FROM the Distribution registry D (htpasswd) into itself on a 3 s
# interval. Images are pushed to D with skopeo (an image, a two-platform index with --all, a
# tag the rule does not match); digests compared with `skopeo inspect --raw`; a tag moved at D
# is seen after the next interval; `berth replicate sync` by hand and `status`.
#
# Sourced by tests/replication/run.sh (its helpers, counters, $D, $BOB, images and $WORK),
# after its own steps; not run alone.

say "--- pull mode: a berth serve syncing from Distribution every 3 s"
SK_D=("${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "$BOB")
check "skopeo push up/app:v1 to Distribution" "${SK_D[@]}" "oci:$WORK/img1:v1" "docker://$D/up/app:v1"
check "skopeo push up/app:latest to Distribution (not matched)" "${SK_D[@]}" "oci:$WORK/img2:v1" "docker://$D/up/app:latest"
check "skopeo push the index up/multi:v1 to Distribution (--all)" "${SK_D[@]}" --all "oci:$WORK/multi:v1" "docker://$D/up/multi:v1"

P_PORT=$(free_port); P=127.0.0.1:$P_PORT
sync_rule '["up/app", "up/multi"]' hub 3s '["v*"]' >"$WORK/sync.toml"
start_p() {
  "$BERTH_BIN" serve --addr "$P" --data-dir "$WORK/p-data" --policy-config "$WORK/sync.toml" \
    --replication-interval 200 --replication-timeout 30 >>"$WORK/p.log" 2>&1 &
  P_PID=$!; PIDS+=("$P_PID")
  wait_http "http://$P/v2/" 200 "the syncing berth" "$P_PID" || exit 1
}
start_p
expect_at "synced: hub/up/app:v1" "" "$P/hub/up/app:v1" "$D1"
expect_at "synced: hub/up/multi:v1 (the index)" "" "$P/hub/up/multi:v1" "$IDX"
expect_eq "synced: the amd64 child" "$CHILD1" "$(raw_digest "" "$P/hub/up/multi@$CHILD1")"
expect_eq "synced: the arm64 child" "$CHILD2" "$(raw_digest "" "$P/hub/up/multi@$CHILD2")"
expect_eq "tags = [\"v*\"]: up/app:latest is not synced" "" "$(raw_digest "" "$P/hub/up/app:latest")"
check "the synced image pulls whole (skopeo copy)" "${SK[@]}" copy -q --src-tls-verify=false "docker://$P/hub/up/app:v1" "oci:$WORK/out-p:v1"
check "its layers are the pushed ones" diff -r "$WORK/img1/blobs" "$WORK/out-p/blobs"
state=$(curl -s "http://$P/v2/_berth/replication")
last_ok=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1])["sync"][0]; print(s["name"], s["last"]["ok"], s["last"]["report"]["tags"])' "$state" 2>&1)
expect_eq "GET /v2/_berth/replication: the sync rule, its last run" "from-dist True 2" "$last_ok"

say "--- pull mode: a tag moved at Distribution is seen after the next interval"
check "skopeo push another image as up/app:v1" "${SK_D[@]}" "oci:$WORK/img2:v1" "docker://$D/up/app:v1"
expect_at "synced again: hub/up/app:v1 moved" "" "$P/hub/up/app:v1" "$D2"
stop_pid "$P_PID"

say "--- pull mode by hand (berth replicate sync, on the stopped server's data directory)"
check "skopeo push up/app:v1 back to the first image" "${SK_D[@]}" "oci:$WORK/img1:v1" "docker://$D/up/app:v1"
check "berth replicate sync --rule from-dist" "$BERTH_BIN" replicate sync --data-dir "$WORK/p-data" --policy-config "$WORK/sync.toml" --rule from-dist
grep -q '2 tags, 1 synced, 1 unchanged' "$WORK/last.out" && ok "by hand: 1 tag synced, 1 unchanged" || bad "by hand: $(cat "$WORK/last.out")"
"$BERTH_BIN" replicate status --data-dir "$WORK/p-data" >"$WORK/p-status.out" 2>&1
grep -q '^from-dist	ok	.*sync	tags=2 synced=1 unchanged=1' "$WORK/p-status.out" && ok "status: the sync rule's last run" || bad "status: $(cat "$WORK/p-status.out")"
start_p
expect_eq "after by hand: hub/up/app:v1" "$D1" "$(raw_digest "" "$P/hub/up/app:v1")"
stop_pid "$P_PID"
if grep -q -e "$BOB_PW" "$WORK/p.log" "$WORK/p-status.out"; then bad "a password was logged (pull mode)"; else ok "no password in the syncing server's log or status"; fi
