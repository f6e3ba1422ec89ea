#!/usr/bin/env bash
# Real clients against `berth serve --auth-config`: docker login/push/pull (own dockerd, vfs),
# skopeo with credentials, podman login (private storage), oras-py login, berth push's own
# token flow, anonymous pull of a public repository and refusal on a private one, robot
# accounts, and the CI flow: a local OIDC issuer's identity token used as the password of user
# `oidc` (docker login and skopeo). BERTH_AUTH_LAUNCH runs it all against another runtime.
#
#   bash tests/clients/auth.sh                  # every test
#   bash tests/clients/auth.sh skopeo docker    # a selection (names: see ALL_TESTS below)
#
# Environment: BERTH_BIN (default <repo>/target/release/berth), BERTH_PORT (default: a free
# port the kernel picks), BERTH_AUTH_LAUNCH (a script run as `SCRIPT CONFIG PORT` that starts another
# runtime with that auth config, instead of berth serve), ISSUER_PORT (default: a free port), CLIENT_TIMEOUT (s per client command),
# KEEP_WORK=1 keeps the temporary directory even when every test passed (a failed run keeps it
# and prints its path). The users, robot and signing keys are made with
# the real admin commands (berth key generate / user add / robot add).
#
# Prints `--- PASS name` / `--- FAIL name` per test and, last, `N passed, M failed`; exits
# non-zero when a test failed. The server, the issuer and dockerd listen on 127.0.0.1 or unix
# sockets under the temporary directory and are stopped by PID on exit.
set -uo pipefail
auth_self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
auth_here=$(dirname "$auth_self")

# Helpers and fixtures (must, must_fail, c, ok, fail, expect_eq, stop_pid, port_free,
# ensure_layout, make_rootfs_tar, start_dockerd, stop_docker, cleanup) come from the client suite.
# shellcheck source=run.sh
BERTH_CLIENTS_LIB=1 source "$auth_here/run.sh"
root=$(cd "$auth_here/../.." && pwd)

ALL_TESTS=(skopeo podman docker oras oidc berth-push)

# What the tests need, installed when missing (apt and pip only; quick when present).
bash "$root/infra/install-deps.sh" >/dev/null || { echo "installing test dependencies failed" >&2; exit 1; }
if ! python3 -c 'import cryptography' >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq python3-cryptography >/dev/null \
    || python3 -m pip install -q cryptography || { echo "cannot install python cryptography" >&2; exit 1; }
fi

selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${ALL_TESTS[@]}")

init_work berth-auth-clients

NONCE=$(date +%s)-$$-$RANDOM
LAYER_MIB=${LAYER_MIB:-2}
export NONCE LAYER_MIB CLIENT_TIMEOUT
# Credentials never come from the machine's own files.
export REGISTRY_AUTH_FILE=$WORK/containers-auth.json DOCKER_CONFIG=$WORK/docker-config
echo '{}' >"$REGISTRY_AUTH_FILE"
mkdir -p "$DOCKER_CONFIG"

port=${BERTH_PORT:-$(bash "$root/tests/free-port.sh")} || { echo "no free port" >&2; exit 1; }
ISSUER_PORT=${ISSUER_PORT:-$(bash "$root/tests/free-port.sh")} || { echo "no free port" >&2; exit 1; }
REG=127.0.0.1:$port
ISSUER=http://127.0.0.1:$ISSUER_PORT
export REG ISSUER

# --- the auth config, made with the admin commands
BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}
[ -x "$BERTH_BIN" ] || { echo "berth binary not found: $BERTH_BIN (build it or set BERTH_BIN)" >&2; exit 1; }
CONF=$WORK/auth.toml
ALICE_PW=alice-$RANDOM-$RANDOM
BOB_PW=bob-$RANDOM-$RANDOM
export ALICE_PW BOB_PW
admin() { "$BERTH_BIN" "$@" --config "$CONF"; }
admin key generate --kid k1 >/dev/null || exit 1
echo "$ALICE_PW" | admin user add alice --group devs 2>/dev/null || exit 1
echo "$BOB_PW" | admin user add bob --group readers 2>/dev/null || exit 1
ROBOT_SECRET=$(admin robot add ci-bot 2>/dev/null) || exit 1
export ROBOT_SECRET
cat >>"$CONF" <<EOF

[[access]]
repositories = ["public/**"]
public = true

[[access]]
repositories = ["team/**", "public/**"]
principals = ["group:devs"]
actions = ["pull", "push"]

[[access]]
repositories = ["team/**"]
principals = ["group:readers"]
actions = ["pull"]

[[access]]
repositories = ["ci/**"]
principals = ["robot:ci-bot", "oidc:local-ci"]
actions = ["pull", "push"]

[[oidc]]
name = "local-ci"
issuer = "$ISSUER"
audience = "berth"
token_ttl_secs = 300
[oidc.claims]
repository = "org/*"
ref = "refs/heads/main"
EOF

python3 "$auth_here/oidc_issuer.py" serve --key "$WORK/issuer.pem" --port "$ISSUER_PORT" >"$WORK/issuer.log" 2>&1 &
register_pid $!
if [ -n "${BERTH_AUTH_LAUNCH:-}" ]; then
  # Another runtime with this config (the Worker, the Lambda function): the script starts it on
  # $port in the foreground; it runs in its own process group, stopped as a group at exit.
  setsid "$BERTH_AUTH_LAUNCH" "$CONF" "$port" >"$WORK/server.log" 2>&1 &
  server_pid=-$!
  polls=900
else
  "$BERTH_BIN" serve --addr "$REG" --data-dir "$WORK/data" --auth-config "$CONF" >"$WORK/server.log" 2>&1 &
  server_pid=$!
  polls=100
fi
for ((i = 0; i < polls; i++)); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/" || true)
  [ "$code" = 401 ] && curl -sf "$ISSUER/jwks" >/dev/null && break
  kill -0 -- "$server_pid" 2>/dev/null || { cat "$WORK/server.log"; echo "the registry exited" >&2; exit 1; }
  sleep 0.2
done
[ "$code" = 401 ] || { cat "$WORK/server.log"; echo "the registry with auth did not come up" >&2; exit 1; }
say "${BERTH_AUTH_LAUNCH:-berth serve} with auth on $REG, OIDC issuer on $ISSUER (work dir $WORK)"

id_token() { # id_token REF: an identity token as a CI job on branch REF of org/app would get
  python3 "$auth_here/oidc_issuer.py" mint --key "$WORK/issuer.pem" --issuer "$ISSUER" --aud berth \
    --claim repository=org/app --claim "ref=$1" --claim "sub=repo:org/app:ref:$1"
}

# --- tests (each runs in a subshell; `fail` ends it)

test_skopeo() {
  ensure_layout
  local S=(skopeo)
  must "${S[@]}" copy --quiet --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" "oci:$LAYOUT:v1" "docker://$REG/team/skopeo:v1"
  must "${S[@]}" inspect --tls-verify=false --creds "alice:$ALICE_PW" "docker://$REG/team/skopeo:v1" >/dev/null
  must "${S[@]}" inspect --tls-verify=false --creds "bob:$BOB_PW" "docker://$REG/team/skopeo:v1" >/dev/null
  must_fail "${S[@]}" copy --quiet --dest-tls-verify=false --dest-no-creds "oci:$LAYOUT:v1" "docker://$REG/team/skopeo:anon"
  must_fail "${S[@]}" copy --quiet --dest-tls-verify=false --dest-creds "alice:wrong-password" "oci:$LAYOUT:v1" "docker://$REG/team/skopeo:bad"
  must_fail "${S[@]}" copy --quiet --dest-tls-verify=false --dest-creds "bob:$BOB_PW" "oci:$LAYOUT:v1" "docker://$REG/team/skopeo:bob"
  must_fail "${S[@]}" delete --tls-verify=false --creds "alice:$ALICE_PW" "docker://$REG/team/skopeo:v1"
  must_fail "${S[@]}" inspect --tls-verify=false --no-creds "docker://$REG/team/skopeo:v1"
  # Anonymous pull of a public repository, with skopeo and with curl (no token at all).
  must "${S[@]}" copy --quiet --dest-tls-verify=false --dest-creds "alice:$ALICE_PW" "oci:$LAYOUT:v1" "docker://$REG/public/skopeo:v1"
  must "${S[@]}" copy --quiet --src-tls-verify=false --src-no-creds "docker://$REG/public/skopeo:v1" "oci:$WORK/anon-copy:v1"
  expect_eq "anonymous curl of a public manifest" 200 "$(c curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/public/skopeo/manifests/v1")"
  expect_eq "anonymous curl of a private manifest" 401 "$(c curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/team/skopeo/manifests/v1")"
  # A robot account pushes where its rule allows, and nowhere else.
  must "${S[@]}" copy --quiet --dest-tls-verify=false --dest-creds "ci-bot:$ROBOT_SECRET" "oci:$LAYOUT:v1" "docker://$REG/ci/skopeo:v1"
  must_fail "${S[@]}" copy --quiet --dest-tls-verify=false --dest-creds "ci-bot:$ROBOT_SECRET" "oci:$LAYOUT:v1" "docker://$REG/team/skopeo:robot"
}

test_podman() {
  local T=$WORK/t-podman; mkdir -p "$T"/{root,runroot,tmp,net}
  local P=(podman --root "$T/root" --runroot "$T/runroot" --tmpdir "$T/tmp" --storage-driver vfs
    --network-config-dir "$T/net" --cgroup-manager cgroupfs --events-backend file --log-level error)
  local A=(--tls-verify=false --authfile "$T/auth.json")
  echo '{}' >"$T/auth.json"
  make_rootfs_tar "$T/rootfs.tar" podman-auth
  must "${P[@]}" import --quiet "$T/rootfs.tar" "$REG/team/podman:1" >/dev/null
  must_fail "${P[@]}" push "${A[@]}" "$REG/team/podman:1"
  echo "wrong" | must_fail "${P[@]}" login "${A[@]}" -u alice --password-stdin "$REG"
  echo "$ALICE_PW" | must "${P[@]}" login "${A[@]}" -u alice --password-stdin "$REG"
  must "${P[@]}" push --quiet "${A[@]}" --digestfile "$T/push.digest" "$REG/team/podman:1"
  must "${P[@]}" push --quiet "${A[@]}" "$REG/team/podman:1" "$REG/public/podman:1"
  must "${P[@]}" rmi --force --all >/dev/null
  must "${P[@]}" pull --quiet "${A[@]}" "$REG/team/podman:1" >/dev/null
  expect_eq "pulled digest" "$(cat "$T/push.digest")" "$(c "${P[@]}" image inspect --format '{{.Digest}}' "$REG/team/podman:1")"
  must "${P[@]}" logout --authfile "$T/auth.json" "$REG"
  must "${P[@]}" rmi --force --all >/dev/null
  must_fail "${P[@]}" pull --quiet "${A[@]}" "$REG/team/podman:1"
  must "${P[@]}" pull --quiet "${A[@]}" "$REG/public/podman:1" >/dev/null
  ok "anonymous pull of the public copy works after logout"
  c "${P[@]}" rmi --force --all >/dev/null
}

test_docker() {
  local T; T=$(mktemp -d /tmp/berth-dka.XXXXXX)
  echo "$T" >>"$WORK/extra-dirs"
  local docker=${DOCKER_CLI:-docker}
  start_dockerd "$T"
  make_rootfs_tar "$T/rootfs.tar" docker-auth
  must "$docker" import "$T/rootfs.tar" "$REG/team/docker:1" >/dev/null
  local id; id=$(c "$docker" image inspect --format '{{.Id}}' "$REG/team/docker:1") || fail "inspect"
  must_fail "$docker" push "$REG/team/docker:1"
  echo "wrong" | must_fail "$docker" login -u alice --password-stdin "$REG"
  echo "$ALICE_PW" | must "$docker" login -u alice --password-stdin "$REG"
  # docker login keeps the refresh token (identity token) from the OAuth2 flow, not the password.
  grep -q '"identitytoken"' "$DOCKER_CONFIG/config.json" || fail "docker stored no refresh (identity) token"
  grep -q "$(printf 'alice:%s' "$ALICE_PW" | base64 -w0)" "$DOCKER_CONFIG/config.json" && fail "docker stored the password"
  ok "docker stored a refresh token, not the password"
  must "$docker" push "$REG/team/docker:1" >/dev/null
  must "$docker" tag "$REG/team/docker:1" "$REG/public/docker:1"
  must "$docker" push "$REG/public/docker:1" >/dev/null
  must "$docker" rmi "$REG/team/docker:1" "$REG/public/docker:1" >/dev/null
  must "$docker" pull --quiet "$REG/team/docker:1" >/dev/null
  expect_eq "image ID after pull" "$id" "$(c "$docker" image inspect --format '{{.Id}}' "$REG/team/docker:1")"
  must "$docker" logout "$REG"
  must "$docker" rmi "$REG/team/docker:1" >/dev/null
  must_fail "$docker" pull --quiet "$REG/team/docker:1"
  must "$docker" pull --quiet "$REG/public/docker:1" >/dev/null
  ok "anonymous docker pull of a public repository"

  # The CI flow of docs/auth.md: the job's identity token as the password of user `oidc`.
  id_token refs/heads/main | must "$docker" login -u oidc --password-stdin "$REG"
  must "$docker" tag "$REG/public/docker:1" "$REG/ci/docker:1"
  must "$docker" push "$REG/ci/docker:1" >/dev/null
  must_fail "$docker" push "$REG/team/docker:1"
  must "$docker" logout "$REG"
  id_token refs/heads/feature | must_fail "$docker" login -u oidc --password-stdin "$REG"
}

test_oras() {
  local T=$WORK/t-oras; mkdir -p "$T/out"
  head -c 300000 /dev/urandom >"$T/payload.bin"
  # oras-py reads and writes ~/.docker/config.json whatever DOCKER_CONFIG says: give it a home
  # of its own, or a login from an earlier run (same port, old password) would be used here.
  mkdir -p "$T/home"
  HOME=$T/home must python3 - "$REG" "$T" <<'EOF'
import os, sys, hashlib
import oras.client
reg, work = sys.argv[1], sys.argv[2]
def digest(p): return hashlib.sha256(open(p, "rb").read()).hexdigest()
os.chdir(work)
anon = oras.client.OrasClient(hostname=reg, insecure=True)
try:
    anon.push(files=["payload.bin"], target=f"{reg}/team/oras:v1", disable_path_validation=True)
    sys.exit("an anonymous push succeeded")
except SystemExit:
    raise
except Exception as e:
    print(f"  ok: anonymous push refused ({type(e).__name__})")
client = oras.client.OrasClient(hostname=reg, insecure=True)
client.login(username="alice", password=os.environ["ALICE_PW"], hostname=reg, tls_verify=False)
client.push(files=["payload.bin"], target=f"{reg}/team/oras:v1", disable_path_validation=True)
files = client.pull(target=f"{reg}/team/oras:v1", outdir=os.path.join(work, "out"))
got = [f for f in files if os.path.basename(f) == "payload.bin"]
assert got and digest(got[0]) == digest("payload.bin"), f"pulled {files}"
print("  ok: oras login, push and pull with a bearer token")
EOF
}

test_oidc() {
  ensure_layout
  local tok; tok=$(id_token refs/heads/main) || fail "mint"
  must skopeo copy --quiet --dest-tls-verify=false --dest-creds "oidc:$tok" "oci:$LAYOUT:v1" "docker://$REG/ci/oidc:v1"
  must_fail skopeo copy --quiet --dest-tls-verify=false --dest-creds "oidc:$tok" "oci:$LAYOUT:v1" "docker://$REG/team/oidc:v1"
  local other; other=$(id_token refs/heads/dev) || fail "mint"
  must_fail skopeo copy --quiet --dest-tls-verify=false --dest-creds "oidc:$other" "oci:$LAYOUT:v1" "docker://$REG/ci/oidc:dev"
  # The exchanged token lives minutes, and the token endpoint says why a token is refused.
  local resp; resp=$(c curl -s -u "oidc:$tok" "http://$REG/token?service=berth&scope=repository:ci/oidc:push") || fail "curl"
  expect_eq "expires_in of a CI token" 300 "$(jq -r .expires_in <<<"$resp")"
  resp=$(c curl -s -u "oidc:$other" "http://$REG/token?service=berth&scope=repository:ci/oidc:push")
  expect_eq "refusal of a branch no policy trusts" DENIED "$(jq -r '.errors[0].code' <<<"$resp")"
  # (Audit values print bare unless they need quoting: see docs/auth.md, Audit log.)
  grep -Eq 'event="token" subject=oidc:local-ci identity="?repo:org/app:ref:refs/heads/main"? ' "$WORK/server.log" \
    || fail "no audit line for the OIDC token exchange"
  ok "audit log names the CI identity"
}

test_berth-push() {
  # berth push gets its own tokens from the token endpoint: anonymous, a user, a robot.
  local T=$WORK/t-push; mkdir -p "$T"
  head -c $((12 * 1024 * 1024 + 777)) /dev/urandom >"$T/blob"
  local want; want=sha256:$(sha256_of "$T/blob")
  local push=("$BERTH_BIN" push --quiet --chunk-mib 5 --state-dir "$T/state" "$T/blob")
  must_fail "${push[@]}" "http://$REG/team/bpush"
  local err; err=$(echo "$BOB_PW" | "${push[@]}" --username bob --password-stdin "http://$REG/team/bpush" 2>&1) \
    && fail "bob (pull only) pushed: $err"
  ok "a pull-only user is refused: $(tail -1 <<<"$err" | cut -c1-160)"
  local got; got=$(echo "$ALICE_PW" | c "${push[@]}" --username alice --password-stdin "http://$REG/team/bpush") \
    || fail "berth push as alice"
  expect_eq "digest berth push printed" "$want" "$got"
  local tok; tok=$(c curl -s -u "alice:$ALICE_PW" "http://$REG/token?service=berth&scope=repository:team/bpush:pull" | jq -r .token)
  # -L follows Lambda's 307 to storage; curl does not send the Authorization header there.
  expect_eq "digest of the blob pulled back" "$want" \
    "sha256:$(curl -sfL -H "Authorization: Bearer $tok" "http://$REG/v2/team/bpush/blobs/$want" | sha256sum | cut -d' ' -f1)"
  got=$(BERTH_PASSWORD=$ROBOT_SECRET c "${push[@]}" --username ci-bot "http://$REG/ci/bpush") || fail "berth push as the robot"
  expect_eq "digest pushed by the robot" "$want" "$got"
}

passed=0 failed=0
for name in "${selected[@]}"; do
  [[ " ${ALL_TESTS[*]} " == *" $name "* ]] || { echo "unknown test: $name (known: ${ALL_TESTS[*]})" >&2; exit 2; }
  say "=== RUN $name"
  started=$SECONDS
  if ( set -eE; trap 'exit 143' TERM; "test_$name" ); then
    say "--- PASS $name ($((SECONDS - started))s)"; passed=$((passed + 1))
  else
    say "--- FAIL $name ($((SECONDS - started))s)"; failed=$((failed + 1))
  fi
done
# Every push and every token must be in the audit log; no password may be.
if grep -q -e "$ALICE_PW" -e "$BOB_PW" -e "$ROBOT_SECRET" "$WORK/server.log"; then
  say "--- FAIL secrets-not-logged"; failed=$((failed + 1))
else
  say "--- PASS secrets-not-logged"; passed=$((passed + 1))
fi
say "$passed passed, $failed failed"
[ "$failed" = 0 ]
