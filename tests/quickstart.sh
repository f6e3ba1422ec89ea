#!/usr/bin/env bash
# Runs README.md's Quickstart as written, so it cannot drift: the first ```sh block under
# "## Quickstart" is extracted (not copied), `berth serve` is started on a free port with its
# data in a temporary directory, 127.0.0.1:5000 in the commands becomes that address, `berth`
# on PATH is BERTH_BIN, and the block runs with `set -euxo pipefail` in an empty directory.
# Then the results are checked (catalog, tags, copied layout, docker run's greeting, berth
# push's digest). The ```sh block under "### Over TLS" runs next the same way (127.0.0.1:5443
# becomes a second free port; its certs.d directory is removed afterwards).
#
# The docker lines need a daemon: a private dockerd is started as tests/clients/run.sh does
# (root, vfs, no network setup; stopped on exit). Without dockerd or root, or with
# QUICKSTART_DOCKER=0, the lines starting with `docker` are left out and the run says so.
#
#   bash tests/quickstart.sh
# Environment: BERTH_BIN (default <repo>/target/release/berth), KEEP_WORK=1 keeps the work
# directory (it is kept anyway when the run fails, and its path printed).
set -uo pipefail
tests=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$tests/.." && pwd)

# The client suite's helpers: init_work/cleanup, start_dockerd/stop_docker, stop_pid. (It sets
# its own $here and $root; $tests is this directory.)
BERTH_CLIENTS_LIB=1 source "$tests/clients/run.sh"
init_work berth-quickstart

BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}
[ -x "$BERTH_BIN" ] || { echo "berth binary not found: $BERTH_BIN (build it or set BERTH_BIN)" >&2; exit 1; }
mkdir -p "$WORK/bin" "$WORK/run"
ln -s "$BERTH_BIN" "$WORK/bin/berth"

# The block: from the first ```sh fence after "## Quickstart" to the closing fence.
awk '/^## Quickstart/ { q = 1; next }
     q && /^## / { exit }
     q && !inside && /^```sh$/ { inside = 1; next }
     inside && /^```$/ { exit }
     inside { print }' "$root/README.md" >"$WORK/readme-block.sh"
[ -s "$WORK/readme-block.sh" ] || fail "no \`\`\`sh block under ## Quickstart in README.md"
grep -q '127\.0\.0\.1:5000' "$WORK/readme-block.sh" || fail "the Quickstart block no longer uses 127.0.0.1:5000"

port=$(bash "$tests/free-port.sh") || fail "no free port"
REG=127.0.0.1:$port
export REG
say "starting $BERTH_BIN serve on $REG (log: $WORK/server.log)"
"$BERTH_BIN" serve --addr "$REG" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
server_pid=$!
bash "$tests/wait-port.sh" "$port" "berth serve" || exit 1

docker=1
if [ "${QUICKSTART_DOCKER:-1}" = 0 ]; then
  docker=0 why="QUICKSTART_DOCKER=0"
elif ! command -v dockerd >/dev/null || ! command -v docker >/dev/null || [ "$(id -u)" != 0 ]; then
  docker=0 why="no dockerd/docker, or not root"
fi
if [ "$docker" = 1 ]; then
  # Short path: dockerd's unix sockets must fit in 108 bytes.
  T=$(mktemp -d /tmp/berth-qs-dk.XXXXXX)
  echo "$T" >>"$WORK/extra-dirs"
  start_dockerd "$T"
  # start_dockerd's trap stops dockerd when a test process ends; here the work-directory
  # cleanup stops it (it was registered) and must stay the EXIT trap.
  trap cleanup EXIT
  cp "$WORK/readme-block.sh" "$WORK/quickstart-run.sh"
else
  say "SKIPPING the Quickstart's docker lines ($why); running the others"
  grep -v '^docker ' "$WORK/readme-block.sh" >"$WORK/quickstart-run.sh"
fi
sed -i "s/127\.0\.0\.1:5000/$REG/g" "$WORK/quickstart-run.sh"

say "running README.md's Quickstart (log: $WORK/quickstart.log):"
sed 's/^/    /' "$WORK/quickstart-run.sh"
(cd "$WORK/run" && PATH="$WORK/bin:$PATH" timeout -k 10 600 bash -euxo pipefail "$WORK/quickstart-run.sh") \
  >"$WORK/quickstart.log" 2>&1
rc=$?
sed 's/^/  | /' "$WORK/quickstart.log"
[ "$rc" = 0 ] || fail "the Quickstart failed (exit $rc); the registry's log: $WORK/server.log"

# What the commands should have left behind.
catalog=$(curl -sf "http://$REG/v2/_catalog") || fail "GET /v2/_catalog"
grep -q '"demo/app"' <<<"$catalog" || fail "demo/app missing from the catalog: $catalog"
tags=$(curl -sf "http://$REG/v2/demo/app/tags/list") || fail "GET tags"
grep -q '"v1"' <<<"$tags" || fail "demo/app:v1 missing: $tags"
ok "catalog and tags: $catalog $tags"
[ -s "$WORK/run/copy/index.json" ] || fail "skopeo copy out left no layout in ./copy"
ok "skopeo copied the image out again"
if grep -q '^berth push ' "$WORK/quickstart-run.sh"; then
  grep -q "sha256:" "$WORK/quickstart.log" || fail "berth push printed no digest"
  ok "berth push printed a digest"
fi
if [ "$docker" = 1 ]; then
  grep -q '"demo/hello"' <<<"$catalog" || fail "docker push of demo/hello missing from the catalog: $catalog"
  if grep -q '^docker run' "$WORK/quickstart-run.sh"; then
    grep -qx 'Hello from Berth!' "$WORK/quickstart.log" || fail "docker run did not print the greeting"
    ok "docker run printed the greeting"
  fi
  ok "docker pulled and pushed"
fi
# The TLS block: its own server (started by the block), its own port.
awk '/^### Over TLS/ { q = 1; next }
     q && /^##/ { exit }
     q && !inside && /^```sh$/ { inside = 1; next }
     inside && /^```$/ { exit }
     inside { print }' "$root/README.md" >"$WORK/readme-tls.sh"
[ -s "$WORK/readme-tls.sh" ] || fail "no \`\`\`sh block under ### Over TLS in README.md"
tls_port=$(bash "$tests/free-port.sh") || fail "no free port"
if [ "$docker" = 1 ]; then
  cp "$WORK/readme-tls.sh" "$WORK/tls-run.sh"
else
  grep -v -e '^docker ' -e '/etc/docker/certs.d' "$WORK/readme-tls.sh" >"$WORK/tls-run.sh"
fi
sed -i -e "s/127\.0\.0\.1:5443/127.0.0.1:$tls_port/g" -e "s/127\.0\.0\.1:5000/$REG/g" "$WORK/tls-run.sh"
say "running README.md's Quickstart over TLS (log: $WORK/tls.log):"
sed 's/^/    /' "$WORK/tls-run.sh"
(cd "$WORK/run" && PATH="$WORK/bin:$PATH" timeout -k 10 600 bash -euxo pipefail "$WORK/tls-run.sh") \
  >"$WORK/tls.log" 2>&1
rc=$?
# What the block put under /etc goes, whatever happened (the block stops its own server).
rm -rf "/etc/docker/certs.d/127.0.0.1:$tls_port"
sed 's/^/  | /' "$WORK/tls.log"
[ "$rc" = 0 ] || fail "the Quickstart over TLS failed (exit $rc)"
# Each client checked the certificate against the CA (skopeo with verification on); docker's
# push and pull went over the only protocol that port speaks.
ok "the Quickstart over TLS ran as written"
say "the Quickstart works as written"
