#!/usr/bin/env bash
# How fast `wrangler dev`'s local R2 serves a single object versus a multipart one of the same
# bytes, through a plain JS Worker (bench/r2read/): what bounds a first pull of an uploaded blob
# under wrangler dev, whatever the registry does. Prints the medians of BENCH_RUNS reads each.
#
#   bash bench/r2-read.sh        # BENCH_BLOB_MIB (200), BENCH_RUNS (3)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
export NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
MIB=${BENCH_BLOB_MIB:-200} RUNS=${BENCH_RUNS:-3}
work=$(mktemp -d /tmp/berth-r2read.XXXXXX)
cp bench/r2read/index.js bench/r2read/wrangler.toml "$work/"
port=$(bash tests/free-port.sh) inspector=$(bash tests/free-port.sh)
(cd "$work" && exec setsid "$root/.tools/node/node_modules/.bin/wrangler" dev --ip 127.0.0.1 --port "$port" \
  --inspector-port "$inspector" --persist-to "$work/state" --show-interactive-dev-session=false \
  --log-level warn) >"$work/wrangler.log" 2>&1 &
pid=$!
trap 'kill -TERM -- -$pid 2>/dev/null; sleep 1; kill -KILL -- -$pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 60); do curl -s -o /dev/null "http://127.0.0.1:$port/none" && break; sleep 1; done
head -c $((MIB * 1024 * 1024)) /dev/urandom >"$work/blob"
[ "$(curl -s -T "$work/blob" -X PUT "http://127.0.0.1:$port/put-single")" = ok ] || { tail "$work/wrangler.log"; exit 1; }
curl -s -T "$work/blob" -X PUT "http://127.0.0.1:$port/put-multi" | grep -q '^ok' || exit 1
for kind in single multi; do
  curl -s -o "$work/back" "http://127.0.0.1:$port/$kind"
  cmp -s "$work/back" "$work/blob" || { echo "$kind: the bytes read back differ" >&2; exit 1; }
  speeds=()
  for _ in $(seq 1 "$RUNS"); do
    speeds+=("$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$port/$kind")")
  done
  printf '%s\n' "${speeds[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p" | awk -v k="$kind" -v m="$MIB" \
    '{ printf "| %s object (%d MiB) read through a Worker | %.0f MB/s |\n", k, m, $1 / 1e6 }'
done
