#!/usr/bin/env bash
# Berth on Lambda, locally (function binary under `cargo lambda watch`, blobs in s3s-fs, metadata
# in moto; the stack of tests/lambda/run.sh): cold start, manifest GET and blob redirect latency,
# and `berth push` throughput of a 1 GiB blob straight into the local S3.
#
#   bash bench/lambda.sh            # prints a Markdown section for BENCHMARKS.md
#
# Environment: BENCH_REQUESTS (500 per latency run), BENCH_BLOB_MIB (1024), BENCH_RUNS (3).
# The emulator runs one invocation at a time (as one Lambda instance does), so latency is
# measured with one connection. Ports as tests/lambda/run.sh (free ones, picked at run time).
# Cold start and warm request times next to `berth serve`: bench/lambda-start.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
REQUESTS=${BENCH_REQUESTS:-500}
BLOB_MIB=${BENCH_BLOB_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
work=$(mktemp -d /tmp/berth-bench-lambda.XXXXXX)
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

BERTH_REDIRECT_EXPIRY_SECS=300 bash tests/lambda/run.sh --serve >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 3000); do grep -q '^INIT_MS=' "$work/serve.log" && break; sleep 0.2; done
grep -q '^INIT_MS=' "$work/serve.log" || { cat "$work/serve.log" >&2; exit 1; }
INIT_MS=$(sed -n 's/^INIT_MS=//p' "$work/serve.log")
IN_PROCESS=$(grep -o 'init_ms=[0-9.]*' "$work/serve.log" | head -1 | cut -d= -f2 || true)
# run.sh picks its ports at run time: the URL is the one it prints.
URL=$(sed -n 's/^BERTH_URL=\([^ ]*\).*/\1/p' "$work/serve.log")
BERTH=$root/target/release/berth
repo=bench-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')/app

# A small image: one 1 MiB layer, a config, a manifest.
head -c $((1024 * 1024)) /dev/urandom >"$work/layer"
layer=$("$BERTH" push --quiet "$work/layer" "$URL/$repo")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}' "$layer" >"$work/config"
cfg=$("$BERTH" push --quiet "$work/config" "$URL/$repo")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":1048576}]}' \
  "$cfg" "$(stat -c %s "$work/config")" "$layer" >"$work/manifest"
"$BERTH" push --quiet --manifest "$work/manifest" "$URL/$repo:v1" >/dev/null

latency() { # latency URL -> "p50 p99" in ms
  "$OHA" -n "$REQUESTS" -c 1 --no-tui --output-format json --redirect 0 \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$1" >"$work/oha.json"
  jq -r '"\(.latencyPercentiles.p50 * 1000 | . * 100 | round / 100) \(.latencyPercentiles.p99 * 1000 | . * 100 | round / 100) \(.statusCodeDistribution | tostring)"' "$work/oha.json"
}
read -r man50 man99 mcodes < <(latency "$URL/v2/$repo/manifests/v1")
read -r red50 red99 rcodes < <(latency "$URL/v2/$repo/blobs/$layer")

head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$work/big"
rates=()
for i in $(seq 1 "$RUNS"); do
  r="$repo-$i"
  start=$(date +%s%N)
  BERTH_PUSH_STATE_DIR=$work/state "$BERTH" push --quiet --jobs 4 "$work/big" "$URL/$r" >/dev/null
  ns=$(( $(date +%s%N) - start ))
  rates+=("$(echo "scale=1; $BLOB_MIB * 1048576 / ($ns / 1000) " | bc)")
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")

cat <<MD
## Lambda runtime (local emulation), $(date -u '+%Y-%m-%d %H:%M UTC'), HEAD $(git rev-parse --short HEAD)

Command: \`bash bench/lambda.sh\` (BENCH_REQUESTS=$REQUESTS, BENCH_BLOB_MIB=$BLOB_MIB, BENCH_RUNS=$RUNS).
Release function binary polling \`cargo lambda watch --only-lambda-apis\` (one invocation at a
time, as one Lambda instance), blobs in s3s-fs, metadata in moto, all on 127.0.0.1 of this
2-core machine shared with other builds. Latency with \`oha -n $REQUESTS -c 1\` (no redirect
following); the emulator and the local S3s add their own overhead, so these are upper bounds
for the function's share, not AWS figures.

| measure | value |
|---|---|
| cold start: process start to first response (through the emulator) | $INIT_MS ms |
| init inside the process (config, SDK, until ready for events) | ${IN_PROCESS:-?} ms |
| manifest GET by tag, p50 / p99 | $man50 / $man99 ms ($mcodes) |
| blob GET (307 to a presigned S3 URL), p50 / p99 | $red50 / $red99 ms ($rcodes) |
| \`berth push\` of $BLOB_MIB MiB straight to the local S3, 4 parallel 16 MiB parts (median of $RUNS) | $median MB/s (runs: ${rates[*]}) |
MD
