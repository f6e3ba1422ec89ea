#!/usr/bin/env bash
# What token auth costs: manifest GET requests/s with auth off vs on (a bearer token checked on
# every request: one ES256 signature verification), and token endpoint requests/s with a
# password (one Argon2id verification each) and anonymously.
#
#   cargo build --release -p berth && bench/auth-overhead.sh
#
# Environment: BERTH_BIN (default target/release/berth), PORT_OFF / PORT_ON (default 5260 /
# 5261), SECS (default 5 per measurement), CONC (default 16). Needs oha, curl, jq.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BERTH_BIN:-$root/target/release/berth}
PORT_OFF=${PORT_OFF:-5260} PORT_ON=${PORT_ON:-5261} SECS=${SECS:-5} CONC=${CONC:-16}
W=$(mktemp -d /tmp/berth-auth-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT

cfg=$W/auth.toml
"$BIN" key generate --config "$cfg" >/dev/null
echo "bench-password-1" | "$BIN" user add bench --group devs --config "$cfg" 2>/dev/null
printf '\n[[access]]\nrepositories = ["**"]\nprincipals = ["group:devs"]\nactions = ["pull", "push"]\n' >>"$cfg"
# Both at BERTH_LOG=warn: a log line per request would cost more than what is measured.
export BERTH_LOG=warn
"$BIN" serve --addr 127.0.0.1:$PORT_OFF --data-dir "$W/off" --fsync false >"$W/off.log" 2>&1 & pids+=($!)
"$BIN" serve --addr 127.0.0.1:$PORT_ON --data-dir "$W/on" --fsync false --auth-config "$cfg" >"$W/on.log" 2>&1 & pids+=($!)
sleep 1

# push_manifest PORT [TOKEN]: a config blob and a manifest under bench/app:v1.
push_manifest() {
  local port=$1 auth=() cfgblob='{"architecture":"amd64","os":"linux"}' d m
  [ -n "${2:-}" ] && auth=(-H "Authorization: Bearer $2")
  d=sha256:$(printf '%s' "$cfgblob" | sha256sum | cut -d' ' -f1)
  curl -sf "${auth[@]}" -X POST --data-binary "$cfgblob" "http://127.0.0.1:$port/v2/bench/app/blobs/uploads/?digest=$d" >/dev/null
  m=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}' "$d" "${#cfgblob}")
  curl -sf "${auth[@]}" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$m" "http://127.0.0.1:$port/v2/bench/app/manifests/v1" >/dev/null
}
token=$(curl -sf -u bench:bench-password-1 "http://127.0.0.1:$PORT_ON/token?service=berth&scope=repository:bench/app:pull,push" | jq -r .token)
push_manifest $PORT_OFF
push_manifest $PORT_ON "$token"

# rps ARGS…: requests/s over SECS seconds (after a 1 s warm-up), and the status codes seen.
rps() {
  oha --no-tui --output-format quiet -z 1s -c "$CONC" "$@" >/dev/null 2>&1
  oha --no-tui --output-format json -z "${SECS}s" -c "$CONC" "$@" >"$W/oha.json"
  echo "$(jq -r '.summary.requestsPerSec | floor' "$W/oha.json") $(jq -c .statusCodeDistribution "$W/oha.json")"
}
accept='Accept: application/vnd.oci.image.manifest.v1+json'
off=$(rps -H "$accept" "http://127.0.0.1:$PORT_OFF/v2/bench/app/manifests/v1")
on=$(rps -H "$accept" -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT_ON/v2/bench/app/manifests/v1")
pw=$(rps -a bench:bench-password-1 "http://127.0.0.1:$PORT_ON/token?service=berth&scope=repository:bench/app:pull")
anon=$(rps "http://127.0.0.1:$PORT_ON/token?service=berth&scope=repository:bench/app:pull")
echo "| measurement | requests/s, status codes |"
echo "|---|---:|"
echo "| manifest GET, auth off | $off |"
echo "| manifest GET, auth on (bearer token) | $on |"
echo "| token endpoint, password (Argon2id) | $pw |"
echo "| token endpoint, anonymous | $anon |"
