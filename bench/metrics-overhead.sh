#!/usr/bin/env bash
# What metrics cost: manifest GET requests/s on `berth serve` with metrics off vs on
# (`--metrics-addr`: every request counted, a scraper reading /metrics every second). Runs
# alternate off/on ROUNDS times so that other load on a shared machine hits both alike; prints
# each round and the medians.
#
#   cargo build --release -p berth && bench/metrics-overhead.sh
#
# Environment: BERTH_BIN (default target/release/berth), SECS (default 5 per measurement),
# CONC (default 16), ROUNDS (default 3). Needs oha, curl, jq. Servers listen on free
# 127.0.0.1 ports and are stopped by PID.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BERTH_BIN:-$root/target/release/berth}
SECS=${SECS:-5} CONC=${CONC:-16} ROUNDS=${ROUNDS:-3}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
W=$(mktemp -d /tmp/berth-metrics-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

# Both at BERTH_LOG=warn: a log line per request would cost more than what is measured.
export BERTH_LOG=warn
port_off=$(bash "$root/tests/free-port.sh") port_on=$(bash "$root/tests/free-port.sh") port_m=$(bash "$root/tests/free-port.sh")
"$BIN" serve --addr 127.0.0.1:$port_off --data-dir "$W/off" --fsync false >"$W/off.log" 2>&1 & pids+=($!)
"$BIN" serve --addr 127.0.0.1:$port_on --data-dir "$W/on" --fsync false --metrics-addr 127.0.0.1:$port_m >"$W/on.log" 2>&1 & pids+=($!)
bash "$root/tests/wait-port.sh" "$port_off" "berth (metrics off)"
bash "$root/tests/wait-port.sh" "$port_m" "berth (metrics on)"

# push_manifest PORT: a config blob and a manifest under bench/app:v1.
push_manifest() {
  local port=$1 cfgblob='{"architecture":"amd64","os":"linux"}' d m
  d=sha256:$(printf '%s' "$cfgblob" | sha256sum | cut -d' ' -f1)
  curl -sf -X POST --data-binary "$cfgblob" "http://127.0.0.1:$port/v2/bench/app/blobs/uploads/?digest=$d" >/dev/null
  m=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}' "$d" "${#cfgblob}")
  curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$m" "http://127.0.0.1:$port/v2/bench/app/manifests/v1" >/dev/null
}
push_manifest $port_off
push_manifest $port_on

# A scraper, as Prometheus would be (every second, on the metrics-on server only).
( while sleep 1; do curl -sf "http://127.0.0.1:$port_m/metrics" >/dev/null || true; done ) & pids+=($!)

# rps PORT: manifest GET requests/s over SECS seconds (after a 1 s warm-up); fails on a non-200.
rps() {
  local url="http://127.0.0.1:$1/v2/bench/app/manifests/v1" accept='Accept: application/vnd.oci.image.manifest.v1+json'
  "$OHA" --no-tui --output-format quiet -z 1s -c "$CONC" -H "$accept" "$url" >/dev/null 2>&1
  "$OHA" --no-tui --output-format json -z "${SECS}s" -c "$CONC" -H "$accept" "$url" >"$W/oha.json"
  [ "$(jq -c .statusCodeDistribution "$W/oha.json")" = "$(jq -c '.statusCodeDistribution | with_entries(select(.key == "200"))' "$W/oha.json")" ] \
    || { echo "non-200 answers: $(jq -c .statusCodeDistribution "$W/oha.json")" >&2; exit 1; }
  jq -r '.summary.requestsPerSec | floor' "$W/oha.json"
}
offs=() ons=()
echo "| round | metrics off (req/s) | metrics on (req/s) |"
echo "|---|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  off=$(rps $port_off); on=$(rps $port_on)
  offs+=("$off"); ons+=("$on")
  echo "| $r | $off | $on |"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mo=$(median "${offs[@]}") mn=$(median "${ons[@]}")
echo "| median | $mo | $mn |"
awk -v off="$mo" -v on="$mn" 'BEGIN { printf "\ncost of metrics: %.1f %% (on vs off, medians)\n", (off - on) * 100 / off }'
counted=$(curl -sf "http://127.0.0.1:$port_m/metrics" | awk '/^berth_http_requests_total\{route="manifest_get",method="GET",status="200"\}/ {print $2}')
echo "manifest GETs counted by the metrics-on server: $counted"
