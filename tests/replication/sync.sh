# Pull mode (docs/replication.md, "Pull mode"): a `berth serve` with a `[[policies.sync]]`
# rule copies repositories FROM the Distribution registry D (htpasswd) into itself on a 3 s
# interval. Images are pushed to D with skopeo (an image, a two-platform index with --all, a
# tag the rule does not match); digests compared with `skopeo inspect --raw`; a tag moved at D
# is seen after the next interval; `berth replicate sync` by hand and `status`. Referrers: a
# signature of the index pushed to D with the referrers tag schema (Distribution has no
# referrers API: an index tagged sha256-<hex>, what `oras attach` writes there, done with curl
# since oras is not installed) arrives and is listed by the syncing Berth's referrers API.
# Deletions: with `delete_missing = true`, a tag deleted at D goes here after the next run,
# not while D is down, and not the manifest nor a tag D still has.
#
# Sourced by tests/replication/run.sh (its helpers, counters, $D, $BOB, images and $WORK),
# after its own steps; not run alone.

say "--- pull mode: a berth serve syncing from Distribution every 3 s"
SK_D=("${SK[@]}" copy -q --dest-tls-verify=false --dest-creds "$BOB")
check "skopeo push up/app:v1 to Distribution" "${SK_D[@]}" "oci:$WORK/img1:v1" "docker://$D/up/app:v1"
check "skopeo push up/app:latest to Distribution (not matched)" "${SK_D[@]}" "oci:$WORK/img2:v1" "docker://$D/up/app:latest"
check "skopeo push the index up/multi:v1 to Distribution (--all)" "${SK_D[@]}" --all "oci:$WORK/multi:v1" "docker://$D/up/multi:v1"
# A signature of the index, as `oras attach` leaves it at a registry without the referrers
# API: the artifact by digest, and an index of the index's referrers under sha256-<hex>.
push_referrer "http://$D" up/multi "$BOB"
REF_SIZE=$(wc -c <"$WORK/multi/referrer.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"artifactType":"application/vnd.example.signature"}]}' \
  "$REF" "$REF_SIZE" >"$WORK/ref-index.json"
code=$(curl -s -u "$BOB" -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$WORK/ref-index.json" \
  -H 'content-type: application/vnd.oci.image.index.v1+json' "http://$D/v2/up/multi/manifests/${IDX/:/-}")
expect_eq "Distribution: the tag-schema index ${IDX/:/-} pushed" 201 "$code"
code=$(curl -s -u "$BOB" -o /dev/null -w '%{http_code}' "http://$D/v2/up/multi/referrers/$IDX")
expect_eq "Distribution has no referrers API" 404 "$code"

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
expect_at "synced: the index's referrer (found by the tag schema)" "" "$P/hub/up/multi@$REF" "$REF"
for ((i = 0; i < 5; i++)); do # its referrer entry is written just after its manifest record
  listed=$(curl -s "http://$P/v2/hub/up/multi/referrers/$IDX" | python3 -c 'import json,sys; print(" ".join(m["digest"] for m in json.load(sys.stdin)["manifests"]))' 2>&1)
  [ "$listed" = "$REF" ] && break
  sleep 1
done
expect_eq "the syncing Berth's referrers API lists it under the index" "$REF" "$listed"
expect_eq "the tag-schema tag itself is not copied (tags = [\"v*\"])" "" "$(raw_digest "" "$P/hub/up/multi:${IDX/:/-}")"
check "the synced image pulls whole (skopeo copy)" "${SK[@]}" copy -q --src-tls-verify=false "docker://$P/hub/up/app:v1" "oci:$WORK/out-p:v1"
check "its layers are the pushed ones" diff -r "$WORK/img1/blobs" "$WORK/out-p/blobs"
# The first run's status (it may still be asking for the referrers of what it stored).
for ((i = 0; i < WAIT_SECS; i++)); do
  state=$(curl -s "http://$P/v2/_berth/replication")
  python3 -c 'import json,sys; sys.exit(json.loads(sys.argv[1])["sync"][0].get("last") is None)' "$state" 2>/dev/null && break
  sleep 1
done
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

say "--- pull mode with delete_missing: a tag deleted at Distribution goes here, only then"
check "skopeo push up/gone:keep to Distribution" "${SK_D[@]}" "oci:$WORK/img1:v1" "docker://$D/up/gone:keep"
check "skopeo push up/gone:v2 to Distribution" "${SK_D[@]}" "oci:$WORK/img2:v1" "docker://$D/up/gone:v2"
sync_rule '["up/gone"]' hub 3s '["*"]' 'delete_missing = true' >"$WORK/sync.toml"
start_p
expect_at "synced: hub/up/gone:keep" "" "$P/hub/up/gone:keep" "$D1"
expect_at "synced: hub/up/gone:v2" "" "$P/hub/up/gone:v2" "$D2"
check "skopeo push hub/up/gone:here to the syncing Berth (not the rule's)" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img2:v1" "docker://$P/hub/up/gone:here"
stop_pid "$D_PID"
sleep 7 # two intervals with the source down
expect_eq "Distribution down: hub/up/gone:v2 kept" "$D2" "$(raw_digest "" "$P/hub/up/gone:v2")"
start_d
code=$(curl -s -u "$BOB" -o /dev/null -w '%{http_code}' -X DELETE "http://$D/v2/up/gone/manifests/$D2")
expect_eq "DELETE up/gone@D2 (its tag v2) at Distribution" 202 "$code"
for ((i = 0; i < 30; i++)); do [ -z "$(raw_digest "" "$P/hub/up/gone:v2")" ] && break; sleep 1; done
expect_eq "delete_missing: hub/up/gone:v2 removed" "" "$(raw_digest "" "$P/hub/up/gone:v2")"
expect_eq "its manifest stays by digest" "$D2" "$(raw_digest "" "$P/hub/up/gone@$D2")"
expect_eq "hub/up/gone:keep (still at Distribution) kept" "$D1" "$(raw_digest "" "$P/hub/up/gone:keep")"
expect_eq "hub/up/gone:here (pushed here) kept" "$D2" "$(raw_digest "" "$P/hub/up/gone:here")"
stop_pid "$P_PID"
n=$(grep -c 'removed a tag gone at the remote' "$WORK/p.log")
expect_eq "removals logged (one: the tag, once)" 1 "$n"
