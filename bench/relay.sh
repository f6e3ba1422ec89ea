#!/usr/bin/env bash
# Throughput of one big layer into `berth serve`, three ways, side by side in one run:
#   direct  docker's way straight to the registry: POST, one streamed PATCH (chunked transfer
#           encoding, no Content-Length), PUT ?digest=
#   relay   the same requests through `berth relay` on 127.0.0.1 (which forwards the layer in
#           chunks within the registry's limits, hashing on the way)
#   push    `berth push FILE REGISTRY/REPO` (hashes the file, then chunked PATCHes)
# and the relay's peak RSS (VmHWM) after all of its runs.
#
#   bash bench/relay.sh          # BENCH_BLOB_MIB (1024), BENCH_RUNS (3); prints Markdown
# Release binaries (target/release/berth); every server on 127.0.0.1 on a free port, stopped by
# PID. MB = 10^6 bytes; medians of BENCH_RUNS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NO_PROXY=127.0.0.1 no_proxy=127.0.0.1
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
MIB=${BENCH_BLOB_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
BERTH=${BERTH_BIN:-$root/target/release/berth}
[ -x "$BERTH" ] || cargo build --release --locked -p berth
work=$(mktemp -d /tmp/berth-bench-relay.XXXXXX)
serve_pid="" relay_pid=""
cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(bash tests/free-port.sh)
"$BERTH" serve --addr "127.0.0.1:$port" --data-dir "$work/data" >"$work/serve.log" 2>&1 &
serve_pid=$!
bash tests/wait-port.sh "$port" "berth serve" >/dev/null
"$BERTH" relay --upstream "http://127.0.0.1:$port" --listen 127.0.0.1:0 >"$work/relay.out" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/relay.out" && break; sleep 0.1; done
relay=$(sed -n 's#.*listening on \(http://[0-9.]*:[0-9]*\).*#\1#p' "$work/relay.out")
[ -n "$relay" ] || { cat "$work/relay.log" >&2; exit 1; }

head -c $((MIB * 1024 * 1024)) /dev/urandom >"$work/layer"
digest=sha256:$(sha256sum "$work/layer" | cut -d' ' -f1)
bytes=$((MIB * 1024 * 1024))

# docker_style BASE REPO: seconds for PATCH + PUT (the POST is not the transfer).
docker_style() {
  local base=$1 repo=$2 loc start end
  loc=$(curl -sSf -o /dev/null -D - -X POST "$base/v2/$repo/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  start=$(date +%s.%N)
  loc=$(curl -sSf -o /dev/null -D - -X PATCH -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/octet-stream' \
    -T "$work/layer" "$base$loc" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  sep='?'; [[ "$loc" == *\?* ]] && sep='&'
  curl -sSf -o /dev/null -X PUT "$base$loc${sep}digest=$digest"
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
berth_push() {
  local start end
  start=$(date +%s.%N)
  "$BERTH" push --quiet --state-dir "$work/state" "$work/layer" "127.0.0.1:$port/$1" >/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

declare -A secs
for run in $(seq 1 "$RUNS"); do
  secs[direct]+="$(docker_style "http://127.0.0.1:$port" "bench/direct-$run") "
  secs[relay]+="$(docker_style "$relay" "bench/relay-$run") "
  secs[push]+="$(berth_push "bench/push-$run") "
done
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$relay_pid/status")

python3 - "$bytes" "$hwm" "$MIB" "$RUNS" "${secs[direct]}" "${secs[relay]}" "${secs[push]}" <<'PY'
import statistics, sys
size, hwm, mib, runs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = dict(zip(["direct", "relay", "push"], [list(map(float, a.split())) for a in sys.argv[5:8]]))
med = {k: statistics.median(v) for k, v in rows.items()}
what = {
    "direct": "docker-style streamed PATCH + PUT, straight to `berth serve`",
    "relay": "the same through `berth relay` on 127.0.0.1",
    "push": "`berth push` of the file (hash, then chunked PATCHes)",
}
print(f"| {mib} MiB layer into `berth serve` (median of {runs}) | seconds | MB/s | vs direct |")
print("|---|---:|---:|---:|")
for k in ["direct", "relay", "push"]:
    print(f"| {what[k]} | {med[k]:.2f} | {size / med[k] / 1e6:,.0f} | {med['direct'] / med[k]:.2f}x |")
print(f"\nRelay peak RSS (VmHWM) after its {runs} runs: {hwm / 1024:.1f} MiB. Runs (s): " +
      "; ".join(f"{k} {' '.join(f'{x:.2f}' for x in v)}" for k, v in rows.items()))
PY
