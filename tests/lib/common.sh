# Sourced by the shell tests that drive real registries and clients (tests/mirror/run.sh, and
# through tests/replication/lib.sh the replication tests of every runtime): the check helpers
# and counters, process and port helpers, skopeo, the test images, and the two kinds of
# registry they run on 127.0.0.1 on a port the kernel picked, stopped by PID at exit:
#   Debian's docker-registry (CNCF Distribution) with htpasswd Basic auth (start_distribution);
#   a `berth serve` with token auth (start_token_berth).
# The caller sets root and WORK first (BERTH_BIN before start_token_berth); CLIENT_TIMEOUT
# (s per client command) has a default. Checks print `  ok: …` or `FAIL: …`; the caller prints
# "$passed passed, $failed failed" at its end.
# shellcheck shell=bash

export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy

CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-120}
PIDS=()           # processes started here, stopped by PID (stop_pid) at exit
GROUPS_STARTED=() # process groups (setsid): a launcher with what it started, stopped whole
passed=0 failed=0

# The berth binary: BERTH_BIN, else <repo>/target/release/berth, else the debug one.
find_berth_bin() {
  BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}
  [ -x "$BERTH_BIN" ] || BERTH_BIN=$root/target/debug/berth
  [ -x "$BERTH_BIN" ] || { echo "berth binary not found (build it or set BERTH_BIN)" >&2; exit 1; }
}

# For the caller's EXIT trap: stops every group and process started, and removes WORK unless a
# check failed or KEEP_WORK is set.
cleanup_common() {
  local pid
  for pid in "${GROUPS_STARTED[@]}"; do stop_group "$pid"; done
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [ "$failed" = 0 ] && [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else echo "work dir kept: $WORK"; fi
}

say() { printf '%s\n' "$*"; }
ok() { passed=$((passed + 1)); printf '  ok: %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL: %s\n' "$*"; }
check() { # check WHAT CMD...: the command must succeed
  local what=$1; shift
  if timeout -k 5 "$CLIENT_TIMEOUT" "$@" >"$WORK/last.out" 2>&1; then ok "$what"; else bad "$what: $(tail -3 "$WORK/last.out")"; fi
}
check_fails() { # check_fails WHAT CMD...: the command must fail (not by its time limit)
  local what=$1 rc=0; shift
  timeout -k 5 "$CLIENT_TIMEOUT" "$@" >"$WORK/last.out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ]; then ok "$what (exit $rc)"; else bad "$what: exit $rc"; fi
}
expect_eq() { if [ "$2" = "$3" ]; then ok "$1 = $3"; else bad "$1: expected [$2], got [$3]"; fi; }

stop_pid() { # SIGTERM, then SIGKILL after 10 s
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 0
}
stop_group() { # the process group PID leads: SIGTERM, then SIGKILL after 10 s
  local pid=$1 i
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do kill -0 -- "-$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 0
}
free_port() { bash "$root/tests/free-port.sh" "$@"; } # free_port [COUNT]
wait_http() { # wait_http URL CODE WHAT PID [TRIES of 0.2 s, default 150]
  local i
  for ((i = 0; i < ${5:-150}; i++)); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1")" = "$2" ] && return 0
    kill -0 "$4" 2>/dev/null || { echo "$3 exited" >&2; return 1; }
    sleep 0.2
  done
  echo "$3 did not answer $2 at $1" >&2; return 1
}

SK=(skopeo --insecure-policy)
export REGISTRY_AUTH_FILE=$WORK/containers-auth.json
echo '{}' >"$REGISTRY_AUTH_FILE"

# Two single-layer images, img1 and img2 in WORK (tests/mirror/make_image.py), tagged v1; their
# manifest digests D1 and D2, and NONCE, unique to this run, for more.
make_two_images() {
  NONCE=$(date +%s)-$$
  D1=$(python3 "$root/tests/mirror/make_image.py" "$WORK/img1" v1 "$NONCE-1") || exit 1
  D2=$(python3 "$root/tests/mirror/make_image.py" "$WORK/img2" v1 "$NONCE-2") || exit 1
}

# --- Distribution with htpasswd: user bob with a new password (BOB_PW, BOB=bob:password)
# distribution_config ADDR DATA_DIR REALM [delete]: writes $WORK/htpasswd and
# $WORK/registry.yml (with `delete` enabled if asked).
distribution_config() {
  local hash delete=""
  BOB_PW=bob-$RANDOM-$RANDOM
  BOB=bob:$BOB_PW
  # bcrypt via libcrypt; htpasswd if present.
  hash=$(python3 -W ignore -c 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))' "$BOB_PW" 2>/dev/null) \
    || hash=$(htpasswd -nbB bob "$BOB_PW" | cut -d: -f2) || exit 1
  echo "bob:$hash" >"$WORK/htpasswd"
  [ "${4:-}" = delete ] && delete=$'\n  delete:\n    enabled: true'
  cat >"$WORK/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $2$delete
http:
  addr: $1
auth:
  htpasswd:
    realm: $3
    path: $WORK/htpasswd
YAML
}
# start_distribution ADDR LOG WHAT: serves $WORK/registry.yml until it answers 401; STARTED_PID.
start_distribution() {
  # Distribution reads REGISTRY_* variables as config: skopeo's REGISTRY_AUTH_FILE must not reach it.
  env -u REGISTRY_AUTH_FILE docker-registry serve "$WORK/registry.yml" >>"$2" 2>&1 &
  STARTED_PID=$!; PIDS+=("$STARTED_PID")
  wait_http "http://$1/v2/" 401 "$3" "$STARTED_PID" || exit 1
}

# --- berth serve with token auth: user alice with a new password (ALICE_PW, ALICE=alice:password)
# token_auth_config CONF REPOSITORIES ACTIONS (TOML arrays): a signing key, alice in group devs,
# and the one access rule giving devs ACTIONS on REPOSITORIES.
token_auth_config() {
  ALICE_PW=alice-$RANDOM-$RANDOM
  ALICE=alice:$ALICE_PW
  "$BERTH_BIN" key generate --kid k1 --config "$1" >/dev/null || exit 1
  echo "$ALICE_PW" | "$BERTH_BIN" user add alice --group devs --config "$1" 2>/dev/null || exit 1
  cat >>"$1" <<TOML

[[access]]
repositories = $2
principals = ["group:devs"]
actions = $3
TOML
}
# start_token_berth ADDR DATA_DIR CONF LOG WHAT: until it answers 401; STARTED_PID.
start_token_berth() {
  "$BERTH_BIN" serve --addr "$1" --data-dir "$2" --auth-config "$3" >>"$4" 2>&1 &
  STARTED_PID=$!; PIDS+=("$STARTED_PID")
  wait_http "http://$1/v2/" 401 "$5" "$STARTED_PID" || exit 1
}
