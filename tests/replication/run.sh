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
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy

BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}
[ -x "$BERTH_BIN" ] || BERTH_BIN=$root/target/debug/berth
[ -x "$BERTH_BIN" ] || { echo "berth binary not found (build it or set BERTH_BIN)" >&2; exit 1; }
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-120}
# How long a replication may take to show at a destination (the retry after a destination
# came back waits for the outbox's backoff: 5 s, 10 s, 20 s).
WAIT_SECS=${WAIT_SECS:-90}

WORK=$(mktemp -d /tmp/berth-replication.XXXXXX)
PIDS=()
passed=0 failed=0
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ "$failed" = 0 ] && [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else echo "work dir kept: $WORK"; fi
}
trap cleanup EXIT

say() { printf '%s\n' "$*"; }
ok() { passed=$((passed + 1)); printf '  ok: %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL: %s\n' "$*"; }
check() { # check WHAT CMD...: the command must succeed
  local what=$1; shift
  if timeout -k 5 "$CLIENT_TIMEOUT" "$@" >"$WORK/last.out" 2>&1; then ok "$what"; else bad "$what: $(tail -3 "$WORK/last.out")"; fi
}
expect_eq() { if [ "$2" = "$3" ]; then ok "$1 = $3"; else bad "$1: expected [$2], got [$3]"; fi; }
stop_pid() { # SIGTERM, then SIGKILL after 10 s
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 0
}
free_port() { bash "$root/tests/free-port.sh"; }
wait_http() { # wait_http URL CODE WHAT PID
  local i
  for ((i = 0; i < 150; i++)); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1")" = "$2" ] && return 0
    kill -0 "$4" 2>/dev/null || { echo "$3 exited" >&2; return 1; }
    sleep 0.2
  done
  echo "$3 did not answer $2 at $1" >&2; return 1
}
SK=(skopeo --insecure-policy)
export REGISTRY_AUTH_FILE=$WORK/containers-auth.json
echo '{}' >"$REGISTRY_AUTH_FILE"

# The digest of the manifest at docker://HOST/REF as its exact bytes say (skopeo inspect --raw);
# empty when there is none. CREDS: user:password or "".
raw_digest() { # raw_digest CREDS HOST/REPO:TAG|HOST/REPO@DIGEST
  local creds=() out
  [ -n "$1" ] && creds=(--creds "$1")
  out=$(timeout -k 5 30 "${SK[@]}" inspect --raw --tls-verify=false "${creds[@]}" "docker://$2" 2>/dev/null) || return 0
  printf 'sha256:%s' "$(printf '%s' "$out" | sha256sum | cut -d' ' -f1)"
}
# Waits until REF at a destination has digest WANT (up to WAIT_SECS), then checks it.
expect_at() { # expect_at WHAT CREDS REF WANT
  local i got=""
  for ((i = 0; i < WAIT_SECS; i++)); do
    got=$(raw_digest "$2" "$3")
    [ "$got" = "$4" ] && break
    sleep 1
  done
  expect_eq "$1" "$4" "$got"
}

# --- images: one single-platform image, a two-platform index with a referrer
NONCE=$(date +%s)-$$
D1=$(python3 "$root/tests/mirror/make_image.py" "$WORK/img1" v1 "$NONCE-1") || exit 1
D2=$(python3 "$root/tests/mirror/make_image.py" "$WORK/img2" v1 "$NONCE-2") || exit 1
read -r IDX CHILD1 CHILD2 REF < <(python3 "$here/make_index.py" "$WORK/multi" v1 "$NONCE") || exit 1

# --- destination D: docker-registry with htpasswd
D_PORT=$(free_port); D=127.0.0.1:$D_PORT
BOB_PW=bob-$RANDOM-$RANDOM
HASH=$(python3 -W ignore -c 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))' "$BOB_PW" 2>/dev/null) \
  || HASH=$(htpasswd -nbB bob "$BOB_PW" | cut -d: -f2) || exit 1
echo "bob:$HASH" >"$WORK/htpasswd"
cat >"$WORK/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/d-data
  delete:
    enabled: true
http:
  addr: $D
auth:
  htpasswd:
    realm: replication-test
    path: $WORK/htpasswd
YAML
start_d() {
  # Distribution reads REGISTRY_* variables as config: skopeo's REGISTRY_AUTH_FILE must not reach it.
  env -u REGISTRY_AUTH_FILE docker-registry serve "$WORK/registry.yml" >>"$WORK/d.log" 2>&1 &
  D_PID=$!; PIDS+=("$D_PID")
  wait_http "http://$D/v2/" 401 "destination D (docker-registry, htpasswd)" "$D_PID" || exit 1
}
start_d

# --- destination T: berth serve with token auth (alice may pull, push and delete rep/**)
T_PORT=$(free_port); T=127.0.0.1:$T_PORT
CONF=$WORK/t-auth.toml
ALICE_PW=alice-$RANDOM-$RANDOM
"$BERTH_BIN" key generate --kid k1 --config "$CONF" >/dev/null || exit 1
echo "$ALICE_PW" | "$BERTH_BIN" user add alice --group devs --config "$CONF" 2>/dev/null || exit 1
cat >>"$CONF" <<TOML

[[access]]
repositories = ["rep/**"]
principals = ["group:devs"]
actions = ["pull", "push", "delete"]
TOML
"$BERTH_BIN" serve --addr "$T" --data-dir "$WORK/t-data" --auth-config "$CONF" >"$WORK/t.log" 2>&1 &
T_PID=$!; PIDS+=("$T_PID")
wait_http "http://$T/v2/" 401 "destination T (berth, token auth)" "$T_PID" || exit 1

# --- the source: berth serve with the rules
S_PORT=$(free_port); S=127.0.0.1:$S_PORT
cat >"$WORK/policies.toml" <<TOML
[[policies.replication]]
name = "to-dist"
repositories = ["app/**"]
destination = "http://$D"
username = "bob"
password = "$BOB_PW"

[[policies.replication]]
name = "to-berth"
repositories = ["app/**"]
tags = ["v*"]
destination = "http://$T"
username = "alice"
password = "$ALICE_PW"
prefix = "rep"
deletes = true

[[policies.replication]]
name = "by-hand"
repositories = ["app/**"]
destination = "http://$D"
username = "bob"
password = "$BOB_PW"
prefix = "manual"
on_push = false
TOML
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
EMPTY=sha256:$(printf '{}' | sha256sum | cut -d' ' -f1)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary '{}' -H 'content-type: application/octet-stream' "http://$S/v2/app/multi/blobs/uploads/?digest=$EMPTY")
expect_eq "the referrer's empty blob pushed" 201 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$WORK/multi/referrer.json" \
  -H 'content-type: application/vnd.oci.image.manifest.v1+json' "http://$S/v2/app/multi/manifests/$REF")
expect_eq "the referrer pushed by digest" 201 "$code"

BOB=bob:$BOB_PW ALICE=alice:$ALICE_PW
expect_at "Distribution: app/one:v1" "$BOB" "$D/app/one:v1" "$D1"
expect_at "Distribution: app/multi:v1 (the index)" "$BOB" "$D/app/multi:v1" "$IDX"
expect_at "Distribution: the amd64 child" "$BOB" "$D/app/multi@$CHILD1" "$CHILD1"
expect_at "Distribution: the arm64 child" "$BOB" "$D/app/multi@$CHILD2" "$CHILD2"
expect_at "Distribution: the referrer" "$BOB" "$D/app/multi@$REF" "$REF"
expect_at "Berth (token): rep/app/one:v1" "$ALICE" "$T/rep/app/one:v1" "$D1"
expect_at "Berth (token): rep/app/multi:v1" "$ALICE" "$T/rep/app/multi:v1" "$IDX"
expect_at "Berth (token): the arm64 child" "$ALICE" "$T/rep/app/multi@$CHILD2" "$CHILD2"
expect_at "Berth (token): the referrer" "$ALICE" "$T/rep/app/multi@$REF" "$REF"
check "Distribution: the image pulls whole (skopeo copy)" "${SK[@]}" copy -q --src-tls-verify=false --src-creds "$BOB" "docker://$D/app/one:v1" "oci:$WORK/out-d:v1"
check "pulled layers are identical" diff -r "$WORK/img1/blobs" "$WORK/out-d/blobs"
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
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$S/v2/app/one/manifests/$D1")
expect_eq "DELETE app/one@D1 at the source" 202 "$code"
for ((i = 0; i < 30; i++)); do [ -z "$(raw_digest "$ALICE" "$T/rep/app/one@$D1")" ] && break; sleep 1; done
expect_eq "Berth (token, deletes = true): rep/app/one@D1 gone" "" "$(raw_digest "$ALICE" "$T/rep/app/one@$D1")"
expect_eq "Distribution (deletes = false): app/one@D1 kept" "$D1" "$(raw_digest "$BOB" "$D/app/one@$D1")"

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
