#!/usr/bin/env bash
# What metrics and webhooks cost: manifest GET requests/s on `berth serve` with both off, with
# metrics on (`--metrics-addr`: every request counted, a scraper reading /metrics every second),
# and with metrics and webhooks on: an endpoint for pushes (the common case: a GET writes
# nothing), and one that also asks for pulls (every GET writes an outbox entry, delivered to a
# local receiver in the background). Runs alternate between the servers ROUNDS times so that
# other load on a shared machine hits all alike; prints each round and the medians.
#
#   cargo build --release -p berth && bench/metrics-overhead.sh
#
# Environment: BERTH_BIN (default target/release/berth), SECS (default 5 per measurement),
# CONC (default 16), ROUNDS (default 3). Needs oha, curl, jq, python3. Servers listen on free
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
free() { bash "$root/tests/free-port.sh"; }
port_off=$(free) port_on=$(free) port_m=$(free) port_hp=$(free) port_hpm=$(free) port_hl=$(free) port_hlm=$(free) port_rx=$(free)
# The webhook receiver: answers 204 to every POST and counts them, and the pull events in them
# (berth serve sends up to 100 to a POST).
python3 - "$port_rx" >"$W/receiver.log" 2>&1 <<'PY' & pids+=($!)
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    count = 0
    pulls = 0
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        H.count += 1
        H.pulls += body.count(b'"action":"pull"')
        self.send_response(204); self.end_headers()
    def do_GET(self):
        body = f"{H.count} POSTs carrying {H.pulls} pull events".encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
# hooks_config EVENTS: a policy config with one endpoint at the receiver.
hooks_config() {
  printf '[webhooks]\n[[webhooks.endpoints]]\nname = "bench"\nurl = "http://127.0.0.1:%s/hook"\nsecret = "bench-secret-0123456789"\nevents = %s\nallow_private = true\n' "$port_rx" "$1"
}
hooks_config '["push", "tag"]' >"$W/hooks-push.toml"
hooks_config '["push", "tag", "pull"]' >"$W/hooks-pull.toml"
"$BIN" serve --addr 127.0.0.1:$port_off --data-dir "$W/off" --fsync false >"$W/off.log" 2>&1 & pids+=($!)
"$BIN" serve --addr 127.0.0.1:$port_on --data-dir "$W/on" --fsync false --metrics-addr 127.0.0.1:$port_m >"$W/on.log" 2>&1 & pids+=($!)
"$BIN" serve --addr 127.0.0.1:$port_hp --data-dir "$W/hp" --fsync false --metrics-addr 127.0.0.1:$port_hpm \
  --policy-config "$W/hooks-push.toml" >"$W/hp.log" 2>&1 & pids+=($!)
"$BIN" serve --addr 127.0.0.1:$port_hl --data-dir "$W/hl" --fsync false --metrics-addr 127.0.0.1:$port_hlm \
  --policy-config "$W/hooks-pull.toml" >"$W/hl.log" 2>&1 & pids+=($!)
bash "$root/tests/wait-port.sh" "$port_off" "berth (metrics off)"
bash "$root/tests/wait-port.sh" "$port_m" "berth (metrics on)"
bash "$root/tests/wait-port.sh" "$port_hpm" "berth (metrics and webhooks for pushes)"
bash "$root/tests/wait-port.sh" "$port_hlm" "berth (metrics and webhooks for pulls)"
bash "$root/tests/wait-port.sh" "$port_rx" "the webhook receiver"

# push_manifest PORT: a config blob and a manifest under bench/app:v1.
push_manifest() {
  local port=$1 cfgblob='{"architecture":"amd64","os":"linux"}' d m
  d=sha256:$(printf '%s' "$cfgblob" | sha256sum | cut -d' ' -f1)
  curl -sf -X POST --data-binary "$cfgblob" "http://127.0.0.1:$port/v2/bench/app/blobs/uploads/?digest=$d" >/dev/null
  m=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}' "$d" "${#cfgblob}")
  curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$m" "http://127.0.0.1:$port/v2/bench/app/manifests/v1" >/dev/null
}
for port in $port_off $port_on $port_hp $port_hl; do push_manifest "$port"; done

# A scraper, as Prometheus would be (every second, on every server with metrics).
( while sleep 1; do for m in $port_m $port_hpm $port_hlm; do curl -sf "http://127.0.0.1:$m/metrics" >/dev/null || true; done; done ) & pids+=($!)

# rps PORT: manifest GET requests/s over SECS seconds (after a 1 s warm-up); fails on a non-200.
rps() {
  local url="http://127.0.0.1:$1/v2/bench/app/manifests/v1" accept='Accept: application/vnd.oci.image.manifest.v1+json'
  "$OHA" --no-tui --output-format quiet -z 1s -c "$CONC" -H "$accept" "$url" >/dev/null 2>&1
  "$OHA" --no-tui --output-format json -z "${SECS}s" -c "$CONC" -H "$accept" "$url" >"$W/oha.json"
  [ "$(jq -c .statusCodeDistribution "$W/oha.json")" = "$(jq -c '.statusCodeDistribution | with_entries(select(.key == "200"))' "$W/oha.json")" ] \
    || { echo "non-200 answers: $(jq -c .statusCodeDistribution "$W/oha.json")" >&2; exit 1; }
  jq -r '.summary.requestsPerSec | floor' "$W/oha.json"
}
offs=() ons=() hps=() hls=()
echo "| round | both off (req/s) | metrics (req/s) | metrics + webhooks for pushes (req/s) | metrics + webhooks for pulls (req/s) |"
echo "|---|---:|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  off=$(rps $port_off); on=$(rps $port_on); hp=$(rps $port_hp); hl=$(rps $port_hl)
  offs+=("$off"); ons+=("$on"); hps+=("$hp"); hls+=("$hl")
  echo "| $r | $off | $on | $hp | $hl |"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mo=$(median "${offs[@]}") mn=$(median "${ons[@]}") mhp=$(median "${hps[@]}") mhl=$(median "${hls[@]}")
echo "| median | $mo | $mn | $mhp | $mhl |"
cost() { awk -v off="$mo" -v on="$2" -v what="$1" 'BEGIN { printf "cost of %s: %.1f %% (vs both off, medians)\n", what, (off - on) * 100 / off }'; }
echo
cost "metrics" "$mn"
cost "metrics + webhooks for pushes" "$mhp"
cost "metrics + webhooks for pulls" "$mhl"
counted=$(curl -sf "http://127.0.0.1:$port_m/metrics" | awk '/^berth_http_requests_total\{route="manifest_get",method="GET",status="200"\}/ {print $2}')
echo "manifest GETs counted by the metrics-on server: $counted"
echo "manifest GETs counted by the pull-subscribed server: $(curl -sf "http://127.0.0.1:$port_hlm/metrics" | awk '/^berth_http_requests_total\{route="manifest_get",method="GET",status="200"\}/ {print $2}')"
sleep 3
echo "webhook deliveries the receiver got (2 per server for the first push, then the pulls): $(curl -sf "http://127.0.0.1:$port_rx/")"
echo "pull events the pull-subscribed server dropped (its buffer full): $(grep -o 'dropped=[0-9]*' "$W/hl.log" | tail -1 | cut -d= -f2 | grep . || echo 0)"
