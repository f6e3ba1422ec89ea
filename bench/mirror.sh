#!/usr/bin/env bash
# The pull-through cache's throughput and memory (issue 16; docs/mirror.md): a SIZE_MIB layer
# (default 1024) pushed to an upstream `berth serve`, then pulled (blob GET, streamed to
# /dev/null) directly from the upstream, through a mirror `berth serve` the first time (answered
# while it is fetched, verified and stored), and through the mirror again (from its cache).
# ROUNDS rounds (default 3), each with a fresh mirror; prints the median MB/s and time to the
# first byte of each pull, and the mirror's peak RSS (VmHWM) over its round.
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
ROUNDS=${ROUNDS:-3}
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
bash "$root/tests/wait-port.sh" "$up" "the upstream"

# The layer: random bytes, pushed in chunks by `berth push` (it prints the digest).
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$W/layer"
digest=$("$BIN" push --quiet --state-dir "$W/push-state" "$W/layer" "http://127.0.0.1:$up/library/big")
[ "$digest" = "sha256:$(sha256sum "$W/layer" | cut -d' ' -f1)" ] || { echo "berth push printed $digest" >&2; exit 1; }
rm -f "$W/layer"

# pull URL: "seconds ttfb-seconds" of one blob GET streamed to /dev/null; fails unless it is 200
# with every byte.
pull() {
  local out
  out=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total} %{time_starttransfer}' "$1")
  read -r code size secs ttfb <<<"$out"
  [ "$code" = 200 ] && [ "$size" = "$((SIZE_MIB * 1024 * 1024))" ] || { echo "pull $1: $out" >&2; exit 1; }
  echo "$secs $ttfb"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

: >"$W/times"
for round in $(seq "$ROUNDS"); do
  "$BIN" serve --addr 127.0.0.1:$mirror --data-dir "$W/mirror$round" --fsync false \
    --policy-config "$W/mirror.toml" >"$W/mirror.log" 2>&1 & pids+=($!)
  mirror_pid=$!
  bash "$root/tests/wait-port.sh" "$mirror" "the mirror"
  echo "direct $(pull "http://127.0.0.1:$up/v2/library/big/blobs/$digest")" >>"$W/times"
  echo "first $(pull "http://127.0.0.1:$mirror/v2/hub/library/big/blobs/$digest")" >>"$W/times"
  echo "cached $(pull "http://127.0.0.1:$mirror/v2/hub/library/big/blobs/$digest")" >>"$W/times"
  awk '/^VmHWM/ { print "rss", $2 }' "/proc/$mirror_pid/status" >>"$W/times"
  kill "$mirror_pid"; wait "$mirror_pid" 2>/dev/null || true
  rm -rf "$W/mirror$round"
done

row() {
  local secs ttfb
  secs=$(awk -v k="$1" '$1 == k { print $2 }' "$W/times" | median)
  ttfb=$(awk -v k="$1" '$1 == k { print $3 }' "$W/times" | median)
  awk -v b="$((SIZE_MIB * 1024 * 1024))" -v s="$secs" -v t="$ttfb" -v label="$2" \
    'BEGIN { printf "| %s | %.0f MB/s (%.2f s) | %.0f ms |\n", label, b / s / 1e6, s, t * 1000 }'
}
echo "| pull of a $SIZE_MIB MiB layer (median of $ROUNDS) | throughput | first byte after |"
echo "|---|---:|---:|"
row direct "from the upstream directly"
row first "through the mirror, first pull (answered while fetched, verified and stored)"
row cached "through the mirror, cached"
echo "mirror peak RSS (VmHWM), largest of the rounds: $(awk '$1 == "rss" { print $2 }' "$W/times" | sort -g | tail -1 | awk '{ printf "%.0f MiB", $1 / 1024 }')"
