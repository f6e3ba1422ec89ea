#!/usr/bin/env bash
# The pull-through cache's throughput and memory (issue 16; docs/mirror.md): a SIZE_MIB layer
# (default 1024) pushed to an upstream `berth serve`, then pulled (blob GET, streamed to
# /dev/null) directly from the upstream, through a mirror `berth serve` the first time (fetched,
# verified and stored before it answers), and through the mirror again (from its cache). Prints
# MB/s for each and the mirror's peak RSS (VmHWM) after each pull.
#
#   cargo build --release -p berth && bash bench/mirror.sh
#
# Environment: BERTH_BIN (default target/release/berth), SIZE_MIB (1024), BENCH_DIR (/tmp) for
# the two data directories (removed at exit). Both servers listen on free 127.0.0.1 ports and
# are stopped by PID.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BERTH_BIN:-$root/target/release/berth}
SIZE_MIB=${SIZE_MIB:-1024}
W=$(mktemp -d "${BENCH_DIR:-/tmp}/berth-mirror-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost BERTH_LOG=warn

up=$(bash "$root/tests/free-port.sh") mirror=$(bash "$root/tests/free-port.sh")
cat >"$W/mirror.toml" <<TOML
[[policies.mirrors]]
prefix = "hub"
upstream = "http://127.0.0.1:$up"
TOML
"$BIN" serve --addr 127.0.0.1:$up --data-dir "$W/up" --fsync false >"$W/up.log" 2>&1 & pids+=($!)
"$BIN" serve --addr 127.0.0.1:$mirror --data-dir "$W/mirror" --fsync false \
  --policy-config "$W/mirror.toml" >"$W/mirror.log" 2>&1 & pids+=($!)
mirror_pid=$!
bash "$root/tests/wait-port.sh" "$up" "the upstream"
bash "$root/tests/wait-port.sh" "$mirror" "the mirror"

# The layer: random bytes, pushed in chunks by `berth push` (it prints the digest).
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$W/layer"
digest=$("$BIN" push --quiet --state-dir "$W/push-state" "$W/layer" "http://127.0.0.1:$up/library/big")
[ "$digest" = "sha256:$(sha256sum "$W/layer" | cut -d' ' -f1)" ] || { echo "berth push printed $digest" >&2; exit 1; }
rm -f "$W/layer"

# pull URL: MB/s of one blob GET streamed to /dev/null; fails unless it is 200 with every byte.
pull() {
  local out
  out=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$1")
  read -r code size secs <<<"$out"
  [ "$code" = 200 ] && [ "$size" = "$((SIZE_MIB * 1024 * 1024))" ] || { echo "pull $1: $out" >&2; exit 1; }
  awk -v b="$size" -v s="$secs" 'BEGIN { printf "%.0f MB/s (%.2f s)", b / s / 1e6, s }'
}
rss() { awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$mirror_pid/status"; }

echo "| pull of a $SIZE_MIB MiB layer | throughput | mirror peak RSS after |"
echo "|---|---:|---:|"
echo "| from the upstream directly | $(pull "http://127.0.0.1:$up/v2/library/big/blobs/$digest") | $(rss) |"
echo "| through the mirror, first pull (fetch, verify, store, then answer) | $(pull "http://127.0.0.1:$mirror/v2/hub/library/big/blobs/$digest") | $(rss) |"
echo "| through the mirror, cached | $(pull "http://127.0.0.1:$mirror/v2/hub/library/big/blobs/$digest") | $(rss) |"
