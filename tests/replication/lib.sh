# Sourced by the replication tests (tests/replication/run.sh for `berth serve`,
# tests/edge/replication.sh for the Worker, tests/lambda/replication.sh for Lambda): the
# check helpers (tests/lib/common.sh), the test images, and the two destinations, each on
# 127.0.0.1 on a port the kernel picked and stopped by PID (cleanup_replication, from the
# caller's EXIT trap):
#   D  Debian's docker-registry (CNCF Distribution) with htpasswd Basic auth (user bob);
#   T  a second `berth serve` with token auth (user alice may pull, push, delete rep/**).
# The caller sets root, WORK and BERTH_BIN first; CLIENT_TIMEOUT (s per client command) and
# WAIT_SECS (how long a copy may take to show) have defaults.
# shellcheck shell=bash

# shellcheck source=tests/lib/common.sh
. "$root/tests/lib/common.sh"
WAIT_SECS=${WAIT_SECS:-90}

cleanup_replication() { cleanup_common; }

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

# --- images: D1 and D2, single-platform; IDX, a two-platform index (children CHILD1, CHILD2)
# with a referrer REF (pushed with push_referrer).
make_images() {
  make_two_images
  read -r IDX CHILD1 CHILD2 REF < <(python3 "$root/tests/replication/make_index.py" "$WORK/multi" v1 "$NONCE") || exit 1
}
# The referrer of the index, by digest, with its empty config blob, into REPO at the registry
# URL (http://host:port); CREDS (user:password) for a registry with Basic auth.
push_referrer() { # push_referrer URL REPO [CREDS]
  local empty code auth=()
  [ -n "${3:-}" ] && auth=(-u "$3")
  empty=sha256:$(printf '{}' | sha256sum | cut -d' ' -f1)
  code=$(curl -s "${auth[@]}" -D "$WORK/post.h" -o /dev/null -w '%{http_code}' -X POST --data-binary '{}' -H 'content-type: application/octet-stream' "$1/v2/$2/blobs/uploads/?digest=$empty")
  if [ "$code" = 202 ]; then # no single-POST upload (Distribution): the upload's PUT
    local at
    at=$(tr -d '\r' <"$WORK/post.h" | sed -n 's/^[Ll]ocation: //p')
    case $at in /*) at=$1$at ;; esac
    case $at in *\?*) at="$at&digest=$empty" ;; *) at="$at?digest=$empty" ;; esac
    code=$(curl -s "${auth[@]}" -o /dev/null -w '%{http_code}' -X PUT --data-binary '{}' -H 'content-type: application/octet-stream' "$at")
  fi
  expect_eq "the referrer's empty blob pushed" 201 "$code"
  code=$(curl -s "${auth[@]}" -o /dev/null -w '%{http_code}' -X PUT --data-binary "@$WORK/multi/referrer.json" \
    -H 'content-type: application/vnd.oci.image.manifest.v1+json' "$1/v2/$2/manifests/$REF")
  expect_eq "the referrer pushed by digest" 201 "$code"
}

# The copies of what make_images made and push_referrer pushed (app/one:v1, app/multi:v1 with
# its children and referrer) at both destinations, with their digests; the image pulls whole.
expect_pushed_copies() {
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
}

# DELETE app/one@D1 at the source URL, then (after WAKE, a command, if given) gone at T, whose
# rule replicates deletes, and kept at D, whose rule does not.
expect_delete_replicated() { # expect_delete_replicated URL [WAKE...]
  local code i url=$1; shift
  code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$url/v2/app/one/manifests/$D1")
  expect_eq "DELETE app/one@D1 at the source" 202 "$code"
  [ $# -gt 0 ] && "$@"
  for ((i = 0; i < 30; i++)); do [ -z "$(raw_digest "$ALICE" "$T/rep/app/one@$D1")" ] && break; sleep 1; done
  expect_eq "Berth (token, deletes = true): rep/app/one@D1 gone" "" "$(raw_digest "$ALICE" "$T/rep/app/one@$D1")"
  expect_eq "Distribution (deletes = false): app/one@D1 kept" "$D1" "$(raw_digest "$BOB" "$D/app/one@$D1")"
}

# --- destination D: docker-registry with htpasswd (D, BOB_PW, BOB; start_d, D_PID)
setup_d() {
  D_PORT=$(free_port); D=127.0.0.1:$D_PORT
  distribution_config "$D" "$WORK/d-data" replication-test delete
  start_d
}
start_d() {
  start_distribution "$D" "$WORK/d.log" "destination D (docker-registry, htpasswd)"
  D_PID=$STARTED_PID
}

# --- destination T: berth serve with token auth (T, ALICE_PW, ALICE, T_PID)
setup_t() {
  T_PORT=$(free_port); T=127.0.0.1:$T_PORT
  token_auth_config "$WORK/t-auth.toml" '["rep/**"]' '["pull", "push", "delete"]'
  start_token_berth "$T" "$WORK/t-data" "$WORK/t-auth.toml" "$WORK/t.log" "destination T (berth, token auth)"
  T_PID=$STARTED_PID
}

# The rules every runtime's test uses: to-dist (D, every tag, deletes not replicated),
# to-berth (T under `rep`, tags v*, deletes replicated), and by-hand (D under `manual`,
# on_push = false: only by hand or on a schedule).
replication_rules() {
  cat <<TOML
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
}

# A sync rule (pull mode) from Distribution: sync_rule REPOSITORIES PREFIX EVERY [TAGS]
# [MORE], the lists as TOML arrays; MORE: further lines of the rule (`delete_missing = true`).
sync_rule() {
  cat <<TOML

[[policies.sync]]
name = "from-dist"
source = "http://$D"
username = "bob"
password = "$BOB_PW"
repositories = $1
tags = ${4:-[\"*\"]}
prefix = "$2"
every = "$3"
${5:-}
TOML
}
