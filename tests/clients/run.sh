#!/usr/bin/env bash
# End-to-end tests of Berth with real OCI clients: skopeo (+ umoci to build images), podman,
# docker (a private dockerd started here) and oras-py.
#
#   bash tests/clients/run.sh                 # every test, against a fresh `berth serve`
#   bash tests/clients/run.sh skopeo podman   # a selection: a name runs that test, and a group
#                                             # name (skopeo, oras) runs every "group-*" test too
#   bash tests/clients/run.sh --list          # the test names
#
# Environment:
#   BERTH_BIN        berth binary (default: <repo>/target/release/berth)
#   BERTH_URL        http://127.0.0.1:PORT of a registry that is already running (another
#                    runtime, e.g. wrangler dev or cargo lambda watch): nothing is started, and
#                    repository names get a per-run prefix so that earlier runs do not interfere
#   CLIENTS_SERVER   berth (default) | distribution: what to start when BERTH_URL is unset;
#                    `distribution` runs Debian's reference registry (docker-registry) with a
#                    config written here, for side-by-side runs
#   BERTH_PORT       port to start the server on (default: a free one the kernel picks)
#   CLIENT_TIMEOUT   seconds allowed for one client command (default 180)
#   TEST_TIMEOUT     seconds allowed for one whole test (default 600)
#   LAYER_MIB        size of the big random layer/file (default 6: above R2's 5 MiB part size;
#                    a Lambda run without direct-to-S3 uploads needs it below 4)
#   RELAY_LAYER_MIB  size of the layer `docker push` sends through `berth relay` (default 200)
#   KEEP_WORK=1      keep the temporary directory (images, daemon logs, server log) even when
#                    every test passed (a failed run always keeps it and prints its path)
#
# Prints one `--- PASS name`/`--- FAIL name` line per test and, last, `N passed, M failed`
# alone on a line; exits non-zero if any test failed. Everything started here (the registry,
# dockerd) listens on 127.0.0.1 or a unix socket under the temporary directory and is stopped
# by PID on exit.
set -uo pipefail

self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
here=$(dirname "$self")
root=$(cd "$here/../.." && pwd)

ALL_TESTS=(skopeo skopeo-v2s2 skopeo-delete podman docker oras-monolithic oras-chunked push-image relay policies)

# Never let a proxy setting send loopback traffic elsewhere.
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy

CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-180}
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
LAYER_MIB=${LAYER_MIB:-6}
RELAY_LAYER_MIB=${RELAY_LAYER_MIB:-200}
BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}

# ---------------------------------------------------------------------------------------------
# helpers (used by the parent and by each test, which runs as `run.sh --run-one NAME`)

say() { printf '%s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf '  ok: %s\n' "$*"; }

# c CMD...: run a client command with a time limit, echoing it first.
c() {
  printf '  + %s\n' "$*" >&2
  timeout -k 10 "$CLIENT_TIMEOUT" "$@"
}
# must CMD...: like c, and the test fails when the command does.
must() {
  c "$@" || fail "command failed (exit $?): $*"
}
# must_fail CMD...: the command must exit non-zero (but not by hitting its time limit).
must_fail() {
  local rc=0
  c "$@" >/dev/null 2>&1 || rc=$?
  [ "$rc" -ne 0 ] || fail "command succeeded but should have failed: $*"
  [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || fail "command timed out: $*"
  ok "fails as expected (exit $rc): $*"
}
expect_eq() { # expect_eq WHAT EXPECTED ACTUAL
  [ "$2" = "$3" ] || fail "$1: expected [$2], got [$3]"
  ok "$1 = $3"
}
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Register a PID for the parent's cleanup (the tests run in child processes).
register_pid() { echo "$*" >>"$WORK/pids"; } # register_pid PID [DOCKERD-DIR]

# stop_pid PID [SECONDS]: SIGTERM, wait, then SIGKILL. Works for non-children too, and for a
# process group given as -PGID.
stop_pid() {
  local pid=$1 secs=${2:-20} i
  kill -0 -- "$pid" 2>/dev/null || return 0
  kill -TERM -- "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 -- "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    sleep 0.1
  done
  say "pid $pid still alive after ${secs}s, killing" >&2
  kill -KILL -- "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null
  return 0
}

port_free() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# The multi-layer OCI image layout all image tests start from, built once per run with umoci.
# Five gzip layers, one per `umoci insert`: a text file with a per-run nonce, a file that the
# last layer deletes, a big random (incompressible) file of LAYER_MIB MiB, a small directory
# tree, and a whiteout of the second file.
# Per-run content means the registry really receives every blob (nothing is "already there").
ensure_layout() {
  LAYOUT=$WORK/fixture/layout
  [ -f "$WORK/fixture/ready" ] && return 0
  local f=$WORK/fixture-build
  rm -rf "$f" && mkdir -p "$f/l1" "$f/l2" "$f/l3"
  echo "hello from berth client tests, nonce $NONCE" >"$f/l1/hello.txt"
  echo "this file is removed by a whiteout in a later layer" >"$f/l1/remove-me.txt"
  head -c $((LAYER_MIB * 1024 * 1024 + 4321)) /dev/urandom >"$f/l2/big.bin"
  mkdir -p "$f/l3/berth" && printf '{"nonce":"%s"}\n' "$NONCE" >"$f/l3/berth/config.json"
  local L=$f/layout
  must umoci init --layout "$L"
  must umoci new --image "$L:v1"
  must umoci insert --image "$L:v1" "$f/l1/hello.txt" /hello.txt
  must umoci insert --image "$L:v1" "$f/l1/remove-me.txt" /remove-me.txt
  must umoci insert --image "$L:v1" "$f/l2/big.bin" /data/big.bin
  must umoci insert --image "$L:v1" "$f/l3/berth" /etc/berth
  must umoci insert --image "$L:v1" --whiteout /remove-me.txt
  must umoci config --image "$L:v1" --config.cmd /hello.txt --config.label "org.berth.nonce=$NONCE"
  mkdir -p "$WORK/fixture"
  cp "$f/l2/big.bin" "$WORK/fixture/big.bin"
  mv "$L" "$LAYOUT"
  rm -rf "$f"
  touch "$WORK/fixture/ready"
}

# Facts about the fixture: its v1 manifest digest, the manifest/config blob paths, layer digests.
layout_manifest_digest() { jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="v1") | .digest' "$1/index.json"; }
layout_blob() { echo "$1/blobs/${2%%:*}/${2#*:}"; }

# A plain rootfs tarball for `podman import` / `docker import`, unique per call.
make_rootfs_tar() { # make_rootfs_tar OUT.tar LABEL
  local d
  d=$(mktemp -d "$WORK/rootfs.XXXXXX")
  mkdir -p "$d/etc" "$d/srv"
  echo "imported rootfs $2, nonce $NONCE" >"$d/srv/imported.txt"
  echo "ID=berth-test" >"$d/etc/os-release"
  head -c 300000 /dev/urandom >"$d/srv/random.bin"
  tar -C "$d" -cf "$1" . || fail "tar"
  cp "$d/srv/imported.txt" "$1.expected-imported.txt"
  rm -rf "$d"
}

# ---------------------------------------------------------------------------------------------
# tests

test_skopeo() {
  ensure_layout
  local T=$WORK/t-skopeo; mkdir -p "$T"
  local repo=$REG/${PREFIX}org/team/app
  local want; want=$(layout_manifest_digest "$LAYOUT")
  local mblob; mblob=$(layout_blob "$LAYOUT" "$want")
  local cfg; cfg=$(jq -r .config.digest "$mblob")
  local layers; layers=$(jq -c '[.layers[].digest]' "$mblob")
  [ "$(jq 'length' <<<"$layers")" -ge 4 ] || fail "fixture should have at least 4 layers: $layers"

  must skopeo copy --quiet --dest-tls-verify=false --digestfile "$T/push.digest" \
    "oci:$LAYOUT:v1" "docker://$repo:v1"
  expect_eq "pushed manifest digest (unchanged OCI manifest)" "$want" "$(cat "$T/push.digest")"

  must skopeo copy --quiet --src-tls-verify=false "docker://$repo:v1" "oci:$T/back:v1"
  expect_eq "manifest digest after the round trip" "$want" "$(layout_manifest_digest "$T/back")"
  local d
  for d in $(jq -r '.[]' <<<"$layers") "$cfg"; do
    local b; b=$(layout_blob "$T/back" "$d")
    [ -f "$b" ] || fail "blob $d missing from the copied-back layout"
    [ "sha256:$(sha256_of "$b")" = "$d" ] || fail "blob $d has wrong content after the round trip"
    cmp -s "$b" "$(layout_blob "$LAYOUT" "$d")" || fail "blob $d differs from the original"
  done
  ok "all $(jq length <<<"$layers") layers and the config came back byte for byte"

  must skopeo inspect --tls-verify=false "docker://$repo:v1" >"$T/inspect.json"
  expect_eq "inspect Digest" "$want" "$(jq -r .Digest "$T/inspect.json")"
  expect_eq "inspect Layers" "$layers" "$(jq -c .Layers "$T/inspect.json")"
  expect_eq "inspect Labels nonce" "$NONCE" "$(jq -r '.Labels["org.berth.nonce"]' "$T/inspect.json")"
  must skopeo inspect --raw --tls-verify=false "docker://$repo:v1" >"$T/raw.json"
  cmp -s "$T/raw.json" "$mblob" || fail "inspect --raw differs from the pushed manifest bytes"
  ok "inspect --raw returns the pushed manifest bytes"
  must skopeo inspect --config --raw --tls-verify=false "docker://$repo:v1" >"$T/config.json"
  cmp -s "$T/config.json" "$(layout_blob "$LAYOUT" "$cfg")" || fail "inspect --config --raw differs from the config blob"
  ok "inspect --config --raw returns the config blob"
  must skopeo inspect --raw --tls-verify=false "docker://$repo@$want" >"$T/raw-by-digest.json"
  cmp -s "$T/raw-by-digest.json" "$mblob" || fail "manifest by digest differs"
  ok "manifest by digest"

  # Registry-to-registry copies: a second tag in the same repo, and another repo (containers/image
  # tries a cross-repository mount for blobs it knows are in the source repo).
  must skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false "docker://$repo:v1" "docker://$repo:v2"
  must skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false --digestfile "$T/mirror.digest" \
    "docker://$repo:v1" "docker://$REG/${PREFIX}org/team/mirror:v1"
  expect_eq "digest copied to another repository" "$want" "$(cat "$T/mirror.digest")"
  must skopeo inspect --tls-verify=false "docker://$REG/${PREFIX}org/team/mirror:v1" >"$T/mirror.json"
  expect_eq "mirror inspect Layers" "$layers" "$(jq -c .Layers "$T/mirror.json")"

  must skopeo list-tags --tls-verify=false "docker://$repo" >"$T/tags.json"
  expect_eq "list-tags" '["v1","v2"]' "$(jq -c '.Tags | sort' "$T/tags.json")"
}

test_skopeo-v2s2() {
  ensure_layout
  local T=$WORK/t-v2s2; mkdir -p "$T"
  local repo=$REG/${PREFIX}org/team/app
  local oci_m; oci_m=$(layout_blob "$LAYOUT" "$(layout_manifest_digest "$LAYOUT")")

  must skopeo copy --quiet --format v2s2 --dest-tls-verify=false --digestfile "$T/push.digest" \
    "oci:$LAYOUT:v1" "docker://$repo:v1-docker"
  local dg; dg=$(cat "$T/push.digest")
  must skopeo inspect --raw --tls-verify=false "docker://$repo:v1-docker" >"$T/raw.json"
  expect_eq "served manifest digest" "$dg" "sha256:$(sha256_of "$T/raw.json")"
  expect_eq "mediaType" "application/vnd.docker.distribution.manifest.v2+json" "$(jq -r .mediaType "$T/raw.json")"
  expect_eq "config media type" "application/vnd.docker.container.image.v1+json" "$(jq -r .config.mediaType "$T/raw.json")"
  expect_eq "layer media types" '["application/vnd.docker.image.rootfs.diff.tar.gzip"]' \
    "$(jq -c '[.layers[].mediaType] | unique' "$T/raw.json")"
  expect_eq "layer digests (same blobs as the OCI image)" "$(jq -c '[.layers[].digest]' "$oci_m")" \
    "$(jq -c '[.layers[].digest]' "$T/raw.json")"
  must skopeo inspect --tls-verify=false "docker://$repo:v1-docker" >"$T/inspect.json"
  expect_eq "inspect Digest" "$dg" "$(jq -r .Digest "$T/inspect.json")"

  # Pull it back as a plain directory: manifest bytes and every blob must match.
  must skopeo copy --quiet --src-tls-verify=false "docker://$repo:v1-docker" "dir:$T/back"
  cmp -s "$T/back/manifest.json" "$T/raw.json" || fail "dir: manifest differs from the served one"
  local d
  for d in $(jq -r '.config.digest, .layers[].digest' "$T/raw.json"); do
    [ "sha256:$(sha256_of "$T/back/${d#sha256:}")" = "$d" ] || fail "blob $d wrong after pull"
  done
  ok "schema2 manifest and all blobs came back intact"
}

test_skopeo-delete() {
  ensure_layout
  local T=$WORK/t-delete; mkdir -p "$T"
  local repo=$REG/${PREFIX}org/team/doomed
  must skopeo copy --quiet --dest-tls-verify=false --digestfile "$T/push.digest" "oci:$LAYOUT:v1" "docker://$repo:v1"
  local dg; dg=$(cat "$T/push.digest")
  must skopeo inspect --tls-verify=false "docker://$repo:v1" >/dev/null
  must skopeo delete --tls-verify=false "docker://$repo:v1"
  must_fail skopeo inspect --tls-verify=false "docker://$repo:v1"
  must_fail skopeo inspect --tls-verify=false "docker://$repo@$dg"
  # ...and for the right reason: the registry says 404, not 500.
  local accept="application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"
  expect_eq "GET manifest by digest after delete" 404 \
    "$(c curl -s -o /dev/null -w '%{http_code}' -H "Accept: $accept" "http://$REG/v2/${PREFIX}org/team/doomed/manifests/$dg")"
  expect_eq "GET manifest by tag after delete" 404 \
    "$(c curl -s -o /dev/null -w '%{http_code}' -H "Accept: $accept" "http://$REG/v2/${PREFIX}org/team/doomed/manifests/v1")"
}

test_podman() {
  ensure_layout
  local T=$WORK/t-podman; mkdir -p "$T"/{root,runroot,tmp,net}
  # Rootful podman on private storage: vfs driver (no overlay mounts), own root/runroot/tmpdir
  # and network config dir, file events (no journald), cgroupfs (no systemd). The machine's own
  # image store is never touched. Quirk: podman 4.3 still creates an empty
  # /run/containers/networks (its network run dir), whatever the flags.
  local P=(podman --root "$T/root" --runroot "$T/runroot" --tmpdir "$T/tmp" --storage-driver vfs
    --network-config-dir "$T/net" --cgroup-manager cgroupfs --events-backend file --log-level error)
  local R=$REG/${PREFIX}podman
  local oci_m; oci_m=$(layout_blob "$LAYOUT" "$(layout_manifest_digest "$LAYOUT")")
  local cfg; cfg=$(jq -r .config.digest "$oci_m")

  # 1. Pull a multi-layer image (pushed by skopeo) and check what podman stored.
  must skopeo copy --quiet --dest-tls-verify=false --digestfile "$T/multi.digest" "oci:$LAYOUT:v1" "docker://$R/multi:v1"
  must "${P[@]}" pull --quiet --tls-verify=false "$R/multi:v1" >/dev/null
  expect_eq "pulled image ID (= config digest)" "${cfg#sha256:}" "$(c "${P[@]}" image inspect --format '{{.Id}}' "$R/multi:v1")"
  expect_eq "pulled image digest" "$(cat "$T/multi.digest")" "$(c "${P[@]}" image inspect --format '{{.Digest}}' "$R/multi:v1")"
  local mnt; mnt=$(c "${P[@]}" image mount "$R/multi:v1") || fail "podman image mount"
  cmp -s "$mnt/data/big.bin" "$WORK/fixture/big.bin" || fail "big layer content differs after podman pull"
  grep -q "nonce $NONCE" "$mnt/hello.txt" || fail "hello.txt content differs after podman pull"
  [ ! -e "$mnt/remove-me.txt" ] || fail "whiteout not applied: /remove-me.txt still present"
  c "${P[@]}" image unmount "$R/multi:v1" >/dev/null
  ok "pulled rootfs has the right files (big layer identical, whiteout applied)"

  # 2. An image podman made itself (import of a tarball), pushed.
  make_rootfs_tar "$T/rootfs.tar" podman
  must "${P[@]}" import --quiet "$T/rootfs.tar" "$R/imported:1" >/dev/null
  local id_imp; id_imp=$(c "${P[@]}" image inspect --format '{{.Id}}' "$R/imported:1") || fail "inspect imported"
  must "${P[@]}" push --quiet --tls-verify=false --digestfile "$T/imported.digest" "$R/imported:1"
  # 3. Push the pulled image to another repository (blobs may be mounted across repositories).
  must "${P[@]}" push --quiet --tls-verify=false --digestfile "$T/copy.digest" "$R/multi:v1" "$R/copy:v1"
  local d
  for d in imported:1 copy:v1; do
    must skopeo inspect --raw --tls-verify=false "docker://$R/$d" >"$T/raw-${d%%:*}.json"
  done
  expect_eq "registry serves podman's imported manifest" "$(cat "$T/imported.digest")" "sha256:$(sha256_of "$T/raw-imported.json")"
  expect_eq "registry serves podman's copied manifest" "$(cat "$T/copy.digest")" "sha256:$(sha256_of "$T/raw-copy.json")"

  # 4. Remove everything locally, pull back, compare.
  must "${P[@]}" rmi --force --all >/dev/null
  expect_eq "local images after rmi" "" "$(c "${P[@]}" images -q)"
  must "${P[@]}" pull --quiet --tls-verify=false "$R/imported:1" >/dev/null
  must "${P[@]}" pull --quiet --tls-verify=false "$R/copy:v1" >/dev/null
  expect_eq "imported image ID after pull" "$id_imp" "$(c "${P[@]}" image inspect --format '{{.Id}}' "$R/imported:1")"
  expect_eq "imported image digest after pull" "$(cat "$T/imported.digest")" "$(c "${P[@]}" image inspect --format '{{.Digest}}' "$R/imported:1")"
  expect_eq "copied image ID after pull" "${cfg#sha256:}" "$(c "${P[@]}" image inspect --format '{{.Id}}' "$R/copy:v1")"
  expect_eq "copied image digest after pull" "$(cat "$T/copy.digest")" "$(c "${P[@]}" image inspect --format '{{.Digest}}' "$R/copy:v1")"
  mnt=$(c "${P[@]}" image mount "$R/imported:1") || fail "podman image mount"
  cmp -s "$mnt/srv/imported.txt" "$T/rootfs.tar.expected-imported.txt" || fail "imported file differs after pull"
  c "${P[@]}" image unmount "$R/imported:1" >/dev/null
  ok "imported image content intact after push/rmi/pull"
  c "${P[@]}" rmi --force --all >/dev/null
}

# start_dockerd DIR: a private dockerd for one test (sets DOCKER_HOST and DOCKER_CONFIG; stops
# it when the calling test's process exits).
start_dockerd() {
  local T=$1
  local docker=${DOCKER_CLI:-docker}
  echo '{}' >"$T/daemon.json"
  mkdir -p "$T/cli"
  # dockerd from Debian's docker.io 20.10. Flags: vfs (no overlay mounts), no iptables, no
  # bridge (no network setup at all), private data/exec roots, a private config file so the
  # machine's /etc/docker/daemon.json does not apply, and the registry marked insecure (plain
  # HTTP; 127.0.0.0/8 is insecure by default anyway). If /run/containerd/containerd.sock
  # exists dockerd uses that containerd; otherwise it starts its own under --exec-root, which
  # exits with dockerd. Quirk: dockerd 20.10 creates /etc/docker/key.json (its libtrust key)
  # and no flag moves it: stop_docker removes it again if it was not there before.
  [ -e /etc/docker/key.json ] || touch "$T/remove-key-json"
  say "  + dockerd (log: $T/dockerd.log)"
  dockerd --config-file "$T/daemon.json" --storage-driver=vfs --iptables=false --ip-masq=false \
    --bridge=none --data-root "$T/data" --exec-root "$T/exec" --pidfile "$T/dockerd.pid" \
    -H "unix://$T/docker.sock" --insecure-registry "$REG" >"$T/dockerd.log" 2>&1 &
  local dpid=$!
  register_pid "$dpid" "$T"
  # Stop dockerd (and a containerd it started) when this test ends, however it ends.
  trap "stop_docker $dpid '$T'" EXIT
  export DOCKER_HOST=unix://$T/docker.sock DOCKER_CONFIG=$T/cli
  local i
  for ((i = 0; i < 60; i++)); do
    kill -0 "$dpid" 2>/dev/null || { tail -20 "$T/dockerd.log"; fail "dockerd exited"; }
    timeout 5 "$docker" version >/dev/null 2>&1 && break
    sleep 0.5
  done
  ((i < 60)) || { tail -20 "$T/dockerd.log"; fail "dockerd did not answer within 30s"; }
  ok "dockerd up (pid $dpid)"
}

test_docker() {
  ensure_layout
  # Short path: dockerd's unix sockets (and its containerd's) must fit in 108 bytes.
  local T; T=$(mktemp -d /tmp/berth-dk.XXXXXX)
  echo "$T" >>"$WORK/extra-dirs"
  local R=$REG/${PREFIX}docker
  local docker=${DOCKER_CLI:-docker}
  start_dockerd "$T"

  local oci_m; oci_m=$(layout_blob "$LAYOUT" "$(layout_manifest_digest "$LAYOUT")")
  local cfg; cfg=$(jq -r .config.digest "$oci_m")
  # 1. The multi-layer umoci image, loaded from a docker-archive made by skopeo.
  must skopeo copy --quiet "oci:$LAYOUT:v1" "docker-archive:$T/multi.tar:$R/test:1"
  must "$docker" load --quiet -i "$T/multi.tar"
  expect_eq "loaded image ID (= config digest)" "$cfg" "$(c "$docker" image inspect --format '{{.Id}}' "$R/test:1")"
  # 2. An imported single-layer image. (Quirk: the docker CLI 28 in /usr/local/bin has no
  # `import --quiet`; import prints just the new image ID anyway.)
  make_rootfs_tar "$T/rootfs.tar" docker
  must "$docker" import "$T/rootfs.tar" "$R/imported:1" >/dev/null
  local id_imp; id_imp=$(c "$docker" image inspect --format '{{.Id}}' "$R/imported:1") || fail "inspect imported"

  local name
  declare -A pushed
  # Quirk (harmless): dockerd first tries https://REG/v2/ even for an --insecure-registry and
  # falls back to plain HTTP; its log shows "server gave HTTP response to HTTPS client".
  for name in test:1 imported:1; do
    local rc=0
    c "$docker" push "$R/$name" >"$T/push-${name%%:*}.log" 2>&1 || rc=$?
    sed 's/^/    /' "$T/push-${name%%:*}.log"
    [ "$rc" = 0 ] || fail "docker push $R/$name (exit $rc)"
    # docker push ends with "1: digest: sha256:… size: N"
    local dg; dg=$(sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' "$T/push-${name%%:*}.log" | tail -1)
    [ -n "$dg" ] || fail "no digest in docker push output for $name"
    pushed[$name]=$dg
    must skopeo inspect --raw --tls-verify=false "docker://$R/$name" >"$T/raw-${name%%:*}.json"
    expect_eq "registry serves docker's $name manifest" "$dg" "sha256:$(sha256_of "$T/raw-${name%%:*}.json")"
  done
  expect_eq "layers pushed for test:1" "$(jq '.layers | length' "$oci_m")" "$(jq '.layers | length' "$T/raw-test.json")"

  must "$docker" rmi "$R/test:1" "$R/imported:1" >/dev/null
  must_fail "$docker" image inspect "$R/test:1"
  for name in test:1 imported:1; do
    must "$docker" pull --quiet "$R/$name" >/dev/null
    expect_eq "RepoDigests of $name after pull" "[\"$R/${name%%:*}@${pushed[$name]}\"]" \
      "$(c "$docker" image inspect --format '{{json .RepoDigests}}' "$R/$name")"
  done
  expect_eq "test:1 image ID after pull" "$cfg" "$(c "$docker" image inspect --format '{{.Id}}' "$R/test:1")"
  expect_eq "imported:1 image ID after pull" "$id_imp" "$(c "$docker" image inspect --format '{{.Id}}' "$R/imported:1")"

  # Content: copy files out of a created (never started) container.
  local cid; cid=$(c "$docker" create "$R/test:1") || fail "docker create"
  mkdir -p "$T/out"
  must "$docker" cp "$cid:/data/big.bin" "$T/out/big.bin"
  must "$docker" cp "$cid:/hello.txt" "$T/out/hello.txt"
  cmp -s "$T/out/big.bin" "$WORK/fixture/big.bin" || fail "big layer content differs after docker pull"
  grep -q "nonce $NONCE" "$T/out/hello.txt" || fail "hello.txt differs after docker pull"
  must_fail "$docker" cp "$cid:/remove-me.txt" "$T/out/remove-me.txt"
  c "$docker" rm "$cid" >/dev/null
  ok "pulled image has the right files (big layer identical, whiteout applied)"
  c "$docker" rmi "$R/test:1" "$R/imported:1" >/dev/null
}

# `berth push` of whole images (docs/push.md): a multi-platform index podman made (two
# platforms, with a LAYER_MIB layer) from its OCI layout, and a docker archive from stdin; both
# come back through skopeo with identical digests.
test_push-image() {
  ensure_layout
  local T=$WORK/t-push-image; mkdir -p "$T"/{root,runroot,tmp,net,rootfs/data}
  local P=(podman --root "$T/root" --runroot "$T/runroot" --tmpdir "$T/tmp" --storage-driver vfs
    --network-config-dir "$T/net" --cgroup-manager cgroupfs --events-backend file --log-level error)
  local R=$REG/${PREFIX}image
  echo "push-image nonce $NONCE" >"$T/rootfs/data/nonce.txt"
  head -c $((LAYER_MIB * 1024 * 1024 + 99)) /dev/urandom >"$T/rootfs/data/big.bin"
  tar -C "$T/rootfs" -cf "$T/rootfs.tar" . || fail "tar"
  local arch
  for arch in amd64 arm64; do
    must "${P[@]}" import --arch "$arch" "$T/rootfs.tar" "localhost/img:$arch" >/dev/null
  done
  must "${P[@]}" manifest create localhost/multi:1 >/dev/null
  for arch in amd64 arm64; do
    must "${P[@]}" manifest add localhost/multi:1 "containers-storage:localhost/img:$arch" >/dev/null
  done
  must "${P[@]}" manifest push --quiet --all --format oci localhost/multi:1 "oci:$T/layout:1"
  local want; want=$(jq -r '.manifests[0].digest' "$T/layout/index.json")
  expect_eq "podman wrote an image index" "application/vnd.oci.image.index.v1+json" "$(jq -r '.manifests[0].mediaType' "$T/layout/index.json")"

  local got; got=$(must "$BERTH_BIN" push --quiet "$T/layout" "$R/multi:1") || fail "berth push of the layout"
  expect_eq "berth push prints the index digest" "$want" "$got"
  must skopeo inspect --raw --tls-verify=false "docker://$R/multi:1" >"$T/raw.json"
  expect_eq "the tag serves the index, byte for byte" "$want" "sha256:$(sha256_of "$T/raw.json")"
  must skopeo copy --quiet --all --src-tls-verify=false "docker://$R/multi:1" "oci:$T/back:1"
  expect_eq "index digest after skopeo copies it back (all platforms)" "$want" "$(jq -r '.manifests[0].digest' "$T/back/index.json")"
  local m
  for m in $(jq -r '.manifests[].digest' "$T/raw.json"); do
    [ -f "$(layout_blob "$T/back" "$m")" ] || fail "platform manifest $m did not come back"
  done
  ok "both platforms' manifests, configs and layers came back (skopeo checks every digest)"

  # A docker archive on stdin (docker save | berth push -).
  must skopeo copy --quiet "oci:$LAYOUT:v1" "docker-archive:$T/archive.tar:img:v1"
  got=$(c "$BERTH_BIN" push --quiet - "$R/archive:v1" <"$T/archive.tar") || fail "berth push - of a docker archive"
  must skopeo inspect --raw --tls-verify=false "docker://$R/archive:v1" >"$T/archive.json"
  expect_eq "the archive's manifest as pushed" "$got" "sha256:$(sha256_of "$T/archive.json")"
  must skopeo copy --quiet --src-tls-verify=false "docker://$R/archive:v1" "oci:$T/archive-back:v1"
  ok "the docker archive's image pulls back"
}

# `docker push` of an image with one RELAY_LAYER_MIB layer through `berth relay` on 127.0.0.1
# (docs/relay.md): docker streams the layer in one PATCH, the relay forwards it within what the
# registry takes (direct parts to S3 on Lambda, chunks under the Worker's body limit). Pulled
# back through the relay with docker (same image ID, same bytes) and from the registry with skopeo.
test_relay() {
  local T; T=$(mktemp -d /tmp/berth-rl.XXXXXX)
  echo "$T" >>"$WORK/extra-dirs"
  local docker=${DOCKER_CLI:-docker}
  # Made before the relay starts: the loop below may read it before the background job's
  # redirection has created it (sed would fail, and set -e end the test).
  : >"$T/relay.out"
  "$BERTH_BIN" relay --upstream "http://$REG" --listen 127.0.0.1:0 >"$T/relay.out" 2>"$T/relay.log" &
  local rpid=$! relay= i
  register_pid "$rpid"
  for ((i = 0; i < 100; i++)); do
    relay=$(sed -n 's#.*listening on http://\([0-9.]*:[0-9]*\).*#\1#p' "$T/relay.out")
    [ -n "$relay" ] && break
    kill -0 "$rpid" 2>/dev/null || fail "berth relay exited: $(cat "$T/relay.log")"
    sleep 0.1
  done
  [ -n "$relay" ] || fail "berth relay did not say where it listens"
  ok "berth relay on $relay -> http://$REG"
  start_dockerd "$T"
  mkdir -p "$T/rootfs/data"
  head -c $((RELAY_LAYER_MIB * 1024 * 1024)) /dev/urandom >"$T/rootfs/data/big.bin"
  echo "relay nonce $NONCE" >"$T/rootfs/data/nonce.txt"
  tar -C "$T/rootfs" -cf "$T/rootfs.tar" . || fail "tar"
  local name=${PREFIX}relay/big:1
  must "$docker" import "$T/rootfs.tar" "$relay/$name" >/dev/null
  local id; id=$(c "$docker" image inspect --format '{{.Id}}' "$relay/$name") || fail "inspect"
  local rc=0
  c "$docker" push "$relay/$name" >"$T/push.log" 2>&1 || rc=$?
  sed 's/^/    /' "$T/push.log" | tail -5
  [ "$rc" = 0 ] || { tail -20 "$T/relay.log"; fail "docker push through the relay (exit $rc)"; }
  local dg; dg=$(sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' "$T/push.log" | tail -1)
  [ -n "$dg" ] || fail "no digest in docker push output"
  # How the relay sent it: direct parts where the registry offers them (Lambda), else chunks.
  local how; how=$(grep 'blob relayed' "$T/relay.log" | grep -o 'bytes=[0-9]* pieces=[0-9]* direct=[a-z]*' | sort -t= -k2 -n | tail -1)
  [ -n "$how" ] || { tail -5 "$T/relay.log"; fail "the relay logged no relayed layer"; }
  ok "the layer went upstream as: $how"
  if curl -s -o /dev/null -D - -X POST "http://$REG/v2/${PREFIX}relay/probe/blobs/uploads/" | grep -qi '^berth-direct-upload: parts'; then
    [[ "$how" == *direct=true* ]] || fail "the registry offers direct uploads but the relay sent chunks"
  else
    [[ "$how" == *direct=false* ]] || fail "the relay sent direct parts to a registry that offers none"
  fi
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' "/proc/$rpid/status")
  ok "relay peak RSS $((hwm / 1024)) MiB for a $RELAY_LAYER_MIB MiB layer"
  # Bounded by the pieces in flight (docs/relay.md), whatever the layer's size.
  [ "$((hwm / 1024))" -lt 96 ] || fail "the relay's peak RSS is $((hwm / 1024)) MiB, over its 96 MiB bound"
  must skopeo inspect --raw --tls-verify=false "docker://$REG/$name" >"$T/raw.json"
  expect_eq "the registry serves docker's manifest" "$dg" "sha256:$(sha256_of "$T/raw.json")"
  must skopeo copy --quiet --src-tls-verify=false "docker://$REG/$name" "oci:$T/back:1"
  ok "skopeo pulls it from the registry itself (every digest checked)"

  must "$docker" rmi "$relay/$name" >/dev/null
  must "$docker" pull --quiet "$relay/$name" >/dev/null
  expect_eq "image ID after docker pull through the relay" "$id" "$(c "$docker" image inspect --format '{{.Id}}' "$relay/$name")"
  local cid; cid=$(c "$docker" create "$relay/$name" /x) || fail "docker create"
  must "$docker" cp "$cid:/data/big.bin" "$T/big.back"
  cmp -s "$T/big.back" "$T/rootfs/data/big.bin" || fail "the big layer's file differs after the round trip"
  ok "the $RELAY_LAYER_MIB MiB file is identical after docker push and pull through the relay"
  c "$docker" rm "$cid" >/dev/null
  rm -f "$T/big.back" "$T/rootfs/data/big.bin" "$T/rootfs.tar"

  # `docker save | berth push -`: the image as docker keeps it (uncompressed layer tars), straight
  # to the registry; pulled back by docker through the relay, the same image ID.
  local saved=${PREFIX}relay/saved:1
  "$docker" save "$relay/$name" | c "$BERTH_BIN" push --quiet - "$REG/$saved" >"$T/saved.digest" \
    || fail "docker save | berth push -"
  must skopeo inspect --raw --tls-verify=false "docker://$REG/$saved" >"$T/saved.json"
  expect_eq "the saved image's manifest as berth push printed it" "$(cat "$T/saved.digest")" "sha256:$(sha256_of "$T/saved.json")"
  must "$docker" pull --quiet "$relay/$saved" >/dev/null
  expect_eq "image ID of the docker-saved image after the round trip" "$id" "$(c "$docker" image inspect --format '{{.Id}}' "$relay/$saved")"
  c "$docker" rmi "$relay/$name" "$relay/$saved" >/dev/null
  kill -TERM "$rpid" 2>/dev/null
  wait "$rpid" 2>/dev/null || true # its status is TERM's; the test's `set -e` must not see it
}

stop_docker() { # stop_docker PID DIR: dockerd, the containerd it may have started, key.json
  trap '' TERM INT # a second signal must not cut the clean-up short
  local cpid= f=$2/exec/containerd/containerd.pid
  [ -f "$f" ] && cpid=$(cat "$f" 2>/dev/null)
  stop_pid "$1" 30
  # A containerd that dockerd started itself exits with it; make sure (its pid file is gone by
  # then, hence read first).
  [ -n "$cpid" ] && stop_pid "$cpid" 10
  [ -e "$2/remove-key-json" ] && rm -f /etc/docker/key.json "$2/remove-key-json"
  return 0
}

test_oras-monolithic() {
  must python3 "$here/oras_test.py" --registry "$REG" --repo "${PREFIX}oras/artifact" --tag mono \
    --mode monolithic --workdir "$WORK/t-oras-mono" --nonce "$NONCE" --big-mib "$LAYER_MIB"
}

test_oras-chunked() {
  must python3 "$here/oras_test.py" --registry "$REG" --repo "${PREFIX}oras/artifact" --tag chunked \
    --mode chunked --workdir "$WORK/t-oras-chunked" --nonce "$NONCE" --big-mib "$LAYER_MIB"
}

# On exit: stop what is still running (a test, what tests registered, the server) and remove
# the work directory, unless the run failed (its logs are what one reads next) or KEEP_WORK=1.
cleanup() {
  local status=$? # the script's exit status: read before anything else changes $?
  trap '' INT TERM # a second Ctrl-C must not cut the clean-up short
  local pid dir
  # A test still running (interrupted): `timeout` passes the TERM on to it and its children.
  [ -n "$test_pid" ] && stop_pid "$test_pid" 45
  # Anything a test registered (dockerd) and did not stop, newest first; then the server.
  while read -r pid dir; do
    if [ -n "$dir" ]; then stop_docker "$pid" "$dir"; else stop_pid "$pid" 30; fi
  done < <(tac "$WORK/pids" 2>/dev/null)
  [ -n "$server_pid" ] && stop_pid "$server_pid" 20
  if [ "${KEEP_WORK:-0}" = 1 ] || [ "$status" != 0 ]; then
    say "kept the logs and work files (exit $status): $WORK $(tr '\n' ' ' <"$WORK/extra-dirs")"
  else
    while read -r d; do [ -n "$d" ] && rm -rf "$d"; done <"$WORK/extra-dirs"
    rm -rf "$WORK"
  fi
}

# init_work NAME: a fresh work directory /tmp/NAME.XXXXXX ($WORK), cleaned up on exit.
init_work() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  export WORK
  : >"$WORK/pids"
  : >"$WORK/extra-dirs"
  server_pid= test_pid=
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# Tag policies as docker and skopeo users meet them (docs/policies.md): an own `berth serve
# --policy-config` (whatever registry the other tests use: the clients' output depends only on
# the core's answer, the same in every runtime), with `v*` immutable and `latest` refused in
# prod/**. docker push over an immutable tag and of a refused tag fail with the policy's message;
# the same digest pushed again succeeds (CI retries); skopeo cannot delete the immutable tag;
# skopeo copy into a 1 MiB quota fails (docs/quotas.md). The error lines are printed, and
# quoted in docs/policies.md and docs/quotas.md.
test_policies() {
  local T; T=$(mktemp -d /tmp/berth-po.XXXXXX)
  echo "$T" >>"$WORK/extra-dirs"
  local docker=${DOCKER_CLI:-docker}
  cat >"$T/policy.toml" <<'P'
[[policies.immutable_tags]]
repositories = ["prod/**"]
tags = ["v*"]
[[policies.refused_tags]]
repositories = ["prod/**"]
tags = ["latest"]
message = "push a version tag"
[[policies.quotas]]
name = "small"
repositories = ["small/**"]
limit = "1 MiB"
P
  local port; port=$(bash "$root/tests/free-port.sh") || fail "no free port"
  local R=127.0.0.1:$port
  "$BERTH_BIN" serve --addr "$R" --data-dir "$T/data" --policy-config "$T/policy.toml" >"$T/serve.log" 2>&1 &
  local spid=$! i
  register_pid "$spid"
  for ((i = 0; i < 100; i++)); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$R/v2/")" = 200 ] && break
    kill -0 "$spid" 2>/dev/null || fail "berth serve --policy-config exited: $(tail -5 "$T/serve.log")"
    sleep 0.1
  done
  ok "berth serve --policy-config on $R"
  start_dockerd "$T"
  make_rootfs_tar "$T/a.tar" policy-a
  make_rootfs_tar "$T/b.tar" policy-b
  must "$docker" import "$T/a.tar" "$R/prod/app:v1" >/dev/null
  must "$docker" push "$R/prod/app:v1" >"$T/push-a.log" 2>&1
  must "$docker" tag "$R/prod/app:v1" policy-first:1
  must "$docker" import "$T/b.tar" "$R/prod/app:v1" >/dev/null
  local rc=0
  c "$docker" push "$R/prod/app:v1" >"$T/move.log" 2>&1 || rc=$?
  [ "$rc" != 0 ] || fail "docker push moved an immutable tag"
  grep -q '^denied: tag v1 in prod/app is immutable (policies.immutable_tags rule 1): it points at sha256:' "$T/move.log" \
    || fail "docker push over an immutable tag: unexpected output: $(cat "$T/move.log")"
  ok "docker push over an immutable tag fails (exit $rc) with: $(tail -1 "$T/move.log")"
  must "$docker" tag "$R/prod/app:v1" "$R/prod/app:latest"
  rc=0
  c "$docker" push "$R/prod/app:latest" >"$T/latest.log" 2>&1 || rc=$?
  [ "$rc" != 0 ] || fail "docker push created a refused tag"
  grep -qx 'denied: tag latest is not allowed in prod/app (policies.refused_tags rule 1): push a version tag' "$T/latest.log" \
    || fail "docker push of a refused tag: unexpected output: $(cat "$T/latest.log")"
  ok "docker push of a refused tag fails (exit $rc) with: $(tail -1 "$T/latest.log")"
  # The first image again under v1 (a CI retry): accepted.
  must "$docker" tag policy-first:1 "$R/prod/app:v1"
  must "$docker" push "$R/prod/app:v1" >"$T/retry.log" 2>&1
  ok "docker push of the same image to the immutable tag succeeds"
  rc=0
  c skopeo delete --tls-verify=false "docker://$R/prod/app:v1" >"$T/delete.log" 2>&1 || rc=$?
  [ "$rc" != 0 ] || fail "skopeo deleted an immutable tag's manifest"
  grep -q 'cannot be deleted: immutable tag v1 points at it.*(403 Forbidden)' "$T/delete.log" \
    || fail "skopeo delete: unexpected output: $(cat "$T/delete.log")"
  ok "skopeo delete of the immutable tag fails with: $(tail -1 "$T/delete.log")"
  # Over quota: the fixture's LAYER_MIB layer does not fit in 1 MiB.
  ensure_layout
  rc=0
  c skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:v1" "docker://$R/small/app:v1" >"$T/quota.log" 2>&1 || rc=$?
  [ "$rc" != 0 ] || fail "skopeo copy went over the quota"
  grep -q 'denied: quota small exceeded: 1.0 MiB (1048576 bytes) allowed, .* used, this push adds ' "$T/quota.log" \
    || fail "skopeo copy over quota: unexpected output: $(cat "$T/quota.log")"
  ok "skopeo copy over quota fails with: $(tail -1 "$T/quota.log")"
  must_fail skopeo inspect --tls-verify=false "docker://$R/small/app:v1"
  c "$BERTH_BIN" quota usage --url "http://$R" | sed 's/^/    /'
  stop_pid "$spid" 20
}

# tests/clients/auth.sh sources this file for the helpers and fixtures above, and stops here.
[ "${BERTH_CLIENTS_LIB:-0}" = 1 ] && return 0

# ---------------------------------------------------------------------------------------------
# one test, in its own process (so that the parent can bound it with `timeout`)

if [ "${1:-}" = "--run-one" ]; then
  name=$2
  set -eE
  trap 'exit 143' TERM
  "test_$name"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# the parent: pick tests, start the registry, run, summarize

case "${1:-}" in
  -h | --help) sed -n '2,/^set -uo/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  --list) printf '%s\n' "${ALL_TESTS[@]}"; exit 0 ;;
esac

selected=()
for arg in "$@"; do
  found=0
  for t in "${ALL_TESTS[@]}"; do
    if [ "$t" = "$arg" ] || [[ "$t" == "$arg"-* ]]; then
      [[ " ${selected[*]} " == *" $t "* ]] || selected+=("$t")
      found=1
    fi
  done
  [ "$found" = 1 ] || { echo "unknown test: $arg (known: ${ALL_TESTS[*]})" >&2; exit 2; }
done
[ ${#selected[@]} -gt 0 ] || selected=("${ALL_TESTS[@]}")

init_work berth-clients

NONCE=$(date +%s)-$$-$RANDOM
export NONCE CLIENT_TIMEOUT LAYER_MIB

start_time=$SECONDS
if [ -n "${BERTH_URL:-}" ]; then
  REG=${BERTH_URL#http://}
  REG=${REG%/}
  # A registry that outlives this run: keep each run's repositories apart.
  PREFIX=run-$(date +%Y%m%d%H%M%S)-$RANDOM/
  say "using the registry at http://$REG (repositories under $PREFIX)"
else
  PREFIX=
  port=${BERTH_PORT:-$(bash "$root/tests/free-port.sh")} || { echo "no free port" >&2; exit 1; }
  REG=127.0.0.1:$port
  case "${CLIENTS_SERVER:-berth}" in
    berth)
      BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}
      [ -x "$BERTH_BIN" ] || { echo "berth binary not found: $BERTH_BIN (build it, or set BERTH_BIN / BERTH_URL)" >&2; exit 1; }
      say "starting $BERTH_BIN serve on $REG (log: $WORK/server.log)"
      "$BERTH_BIN" serve --addr "$REG" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
      server_pid=$!
      ;;
    distribution)
      cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $WORK/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REG
EOF
      say "starting docker-registry on $REG (log: $WORK/server.log)"
      docker-registry serve "$WORK/registry.yml" >"$WORK/server.log" 2>&1 &
      server_pid=$!
      ;;
    *) echo "CLIENTS_SERVER must be berth or distribution" >&2; exit 2 ;;
  esac
fi
export REG PREFIX

# Wait for GET /v2/ to answer 200.
for ((i = 0; i < 150; i++)); do
  if [ -n "$server_pid" ] && ! kill -0 "$server_pid" 2>/dev/null; then
    tail -20 "$WORK/server.log" >&2; echo "the registry exited during start-up" >&2; exit 1
  fi
  [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$REG/v2/")" = 200 ] && break
  sleep 0.2
done
((i < 150)) || { echo "http://$REG/v2/ did not answer 200 within 30s" >&2; exit 1; }
say "registry ready at http://$REG"

passed=0 failed=0 failed_names=()
for t in "${selected[@]}"; do
  say ""
  say "=== RUN   $t"
  t0=$SECONDS
  # In the background and waited for, so that a signal to this script is handled at once
  # (cleanup stops the test, which stops its dockerd) instead of after the test ends.
  timeout -k 15 "$TEST_TIMEOUT" bash ${CLIENTS_XTRACE:+-x} "$self" --run-one "$t" &
  test_pid=$!
  wait "$test_pid"
  rc=$?
  test_pid=
  if [ "$rc" = 0 ]; then
    say "--- PASS  $t ($((SECONDS - t0))s)"
    passed=$((passed + 1))
  else
    [ "$rc" = 124 ] && say "test $t hit its ${TEST_TIMEOUT}s time limit"
    say "--- FAIL  $t ($((SECONDS - t0))s, exit $rc)"
    failed=$((failed + 1))
    failed_names+=("$t")
  fi
done

if [ -n "$server_pid" ]; then
  if ! kill -0 "$server_pid" 2>/dev/null; then
    say "the registry process died during the run; last log lines:"
    tail -20 "$WORK/server.log"
    failed=$((failed + 1))
  elif [ "$failed" -gt 0 ]; then
    say ""
    say "last registry log lines ($WORK/server.log):"
    tail -25 "$WORK/server.log"
  fi
fi

say ""
[ "$failed" -gt 0 ] && say "failed: ${failed_names[*]}"
say "total $((SECONDS - start_time))s"
say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
