#!/usr/bin/env bash
# Berth on Lambda, locally: cold start, per-request time next to `berth serve` on the same
# requests, and what the deployable function weighs.
#
#   bash bench/lambda-start.sh       # prints a Markdown section
#
# The stack of tests/lambda/run.sh (s3s-fs for blobs, moto for metadata and Secrets Manager,
# `cargo lambda watch --only-lambda-apis`, tests/lambda/content_type_shim.py in front), with the
# upload key read from Secrets Manager at init as in a deployment. The function is started
# BENCH_COLD times: each start is timed from process start to the first response (a `/v2/`
# request already queued in the emulator, so nothing polls) and by its own `init_ms` log line
# (with `sdk_ms`, `secrets_ms`). The last one stays up for the warm runs: BENCH_REQUESTS each of
# a manifest GET by tag, a blob HEAD and a small monolithic push (POST ...?digest= with a
# distinct BENCH_PUSH_BYTES blob each time), timed by one client (curl's time_total, a fresh
# connection per request) against the function and against `berth serve`; the function's own
# `ms=` request log lines give its share of the Lambda time.
#
# Environment: FUNCTION (the function binary; default: the `lambda` profile's, what
# `cargo lambda build --profile lambda` zips, built first if missing), BERTH_BIN (berth for
# `serve`), BENCH_COLD (5), BENCH_REQUESTS (100), BENCH_PUSH_BYTES (4096).
# Every server listens on 127.0.0.1 on a free port picked at run time and is stopped by PID on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
COLD=${BENCH_COLD:-5}
REQUESTS=${BENCH_REQUESTS:-100}
PUSH_BYTES=${BENCH_PUSH_BYTES:-4096}
target_dir=${CARGO_TARGET_DIR:-$root/target}
FUNCTION=${FUNCTION:-$target_dir/x86_64-unknown-linux-gnu/lambda/berth-lambda}
BERTH=${BERTH_BIN:-$target_dir/release/berth}
ZIP=$target_dir/lambda/berth-lambda/bootstrap.zip
[ -x "$FUNCTION" ] || cargo build --locked --profile lambda --target x86_64-unknown-linux-gnu -p berth-lambda
[ -x "$BERTH" ] || cargo build --locked --release -p berth
command -v cargo-lambda >/dev/null || pip install --quiet cargo-lambda
command -v moto_server >/dev/null || pip install --quiet 'moto[server]'
S3S=$(bash infra/s3s-fs.sh)
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_CA_BUNDLE
export AWS_ACCESS_KEY_ID=berthlocal AWS_SECRET_ACCESS_KEY=berthlocalsecret AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true

work=$(mktemp -d /tmp/berth-bench-lambda-start.XXXXXX)
pids=()
function_pid=
cleanup() {
  [ -n "$function_pid" ] && kill -TERM "$function_pid" 2>/dev/null
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
free_port() { bash tests/free-port.sh; }
wait_port() { bash tests/wait-port.sh "$@"; }

# --- the Lambda stack ----------------------------------------------------------------------------
S3_PORT=$(free_port) META_PORT=$(free_port) EMULATOR_PORT=$(free_port) LAMBDA_PORT=$(free_port) SERVE_PORT=$(free_port)
mkdir -p "$work/s3/berth"
"$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$work/s3" >"$work/s3.log" 2>&1 &
pids+=($!)
moto_server -H 127.0.0.1 -p "$META_PORT" >"$work/moto.log" 2>&1 &
pids+=($!)
(cd lambda && exec cargo lambda watch --only-lambda-apis --disable-cors -A 127.0.0.1 -P "$EMULATOR_PORT") >"$work/watch.log" 2>&1 &
pids+=($!)
wait_port "$S3_PORT" s3s-fs
wait_port "$META_PORT" moto
wait_port "$EMULATOR_PORT" "cargo lambda watch"
python3 tests/lambda/content_type_shim.py "$LAMBDA_PORT" "$EMULATOR_PORT" >"$work/shim.log" 2>&1 &
pids+=($!)
wait_port "$LAMBDA_PORT" shim
python3 -c "
import boto3
boto3.client('s3', endpoint_url='http://127.0.0.1:$META_PORT').create_bucket(Bucket='berth-meta')
boto3.client('secretsmanager', endpoint_url='http://127.0.0.1:$META_PORT', region_name='$AWS_REGION').create_secret(
    Name='berth/upload-key', SecretString='bench-secret-0123456789abcdef0123456789abcdef')"
LAMBDA=http://127.0.0.1:$LAMBDA_PORT

"$BERTH" serve --addr "127.0.0.1:$SERVE_PORT" --data-dir "$work/serve-data" >"$work/serve.log" 2>&1 &
pids+=($!)
wait_port "$SERVE_PORT" "berth serve"
SERVE=http://127.0.0.1:$SERVE_PORT

# --- cold starts -----------------------------------------------------------------------------------
median() { sort -g | awk '{v[NR]=$1} END {if (NR) printf "%.2f", (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
p90() { sort -g | awk '{v[NR]=$1} END {if (NR) {i=int(NR*0.9+0.999); printf "%.2f", v[i]}}'; }
first=() inproc=() sdk=() secrets=()
for i in $(seq 1 "$COLD"); do
  if [ -n "$function_pid" ]; then kill -TERM "$function_pid"; wait "$function_pid" 2>/dev/null || true; fi
  log=$work/function-$i.log
  launched=$(date +%s%N)
  env AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024 AWS_LAMBDA_FUNCTION_NAME=_ \
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$EMULATOR_PORT/.rt" BERTH_BUCKET=berth \
    BERTH_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" BERTH_META_BUCKET=berth-meta \
    BERTH_META_S3_ENDPOINT="http://127.0.0.1:$META_PORT" BERTH_UPLOAD_SECRET_ID=berth/upload-key \
    BERTH_SECRETS_ENDPOINT="http://127.0.0.1:$META_PORT" BERTH_REDIRECT_EXPIRY_SECS=300 RUST_LOG=info \
    "$FUNCTION" >"$log" 2>&1 &
  function_pid=$!
  ok=0
  for _ in $(seq 1 50); do
    curl -sf -o /dev/null --max-time 5 "$LAMBDA/v2/" && { ok=1; break; }
    sleep 0.01
  done
  [ "$ok" = 1 ] || { echo "the function did not answer" >&2; cat "$log" >&2; exit 1; }
  first+=("$(( ($(date +%s%N) - launched) / 1000 ))")
  line=$(grep -m1 'init_ms=' "$log")
  inproc+=("$(grep -o 'init_ms=[0-9.]*' <<<"$line" | cut -d= -f2)")
  sdk+=("$(grep -o 'sdk_ms=[0-9.]*' <<<"$line" | cut -d= -f2 || echo 0)")
  secrets+=("$(grep -o 'secrets_ms=[0-9.]*' <<<"$line" | cut -d= -f2 || echo 0)")
done
first_ms=$(printf '%s\n' "${first[@]}" | awk '{printf "%.1f\n", $1/1000}')

# --- warm requests ----------------------------------------------------------------------------------
repo=bench/start
head -c 65536 /dev/urandom >"$work/layer"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$work/config"
for url in "$LAMBDA" "$SERVE"; do
  layer=$("$BERTH" push --quiet "$work/layer" "$url/$repo")
  cfg=$("$BERTH" push --quiet "$work/config" "$url/$repo")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":65536}]}' \
    "$cfg" "$(stat -c %s "$work/config")" "$layer" >"$work/manifest"
  "$BERTH" push --quiet --manifest "$work/manifest" "$url/$repo:v1" >/dev/null
done
# Distinct small blobs for the pushes, made before any timing.
mkdir -p "$work/push"
for i in $(seq 1 $((REQUESTS * 2))); do head -c "$PUSH_BYTES" /dev/urandom >"$work/push/$i"; done
(cd "$work/push" && sha256sum -- *) >"$work/push.sums"

timed() { curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$@"; }
run_kind() { # run_kind URL KIND FIRST-BLOB -> seconds, one a line; a non-2xx answer stops the bench
  local url=$1 kind=$2 n=$3 i out
  for i in $(seq 1 "$REQUESTS"); do
    case "$kind" in
      manifest) out=$(timed -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$url/v2/$repo/manifests/v1") ;;
      head) out=$(timed -I "$url/v2/$repo/blobs/$layer") ;;
      push)
        local digest
        digest=$(awk -v f="$((n + i))" '$2==f {print $1}' "$work/push.sums")
        out=$(timed -X POST -H 'Content-Type: application/octet-stream' --data-binary "@$work/push/$((n + i))" \
          "$url/v2/$repo/blobs/uploads/?digest=sha256:$digest") ;;
    esac
    case "${out%% *}" in 2*) ;; *) echo "$kind on $url answered ${out%% *}" >&2; return 1 ;; esac
    echo "${out#* }"
  done
}
declare -A client
for kind in manifest head push; do
  run_kind "$LAMBDA" "$kind" 0 >"$work/lambda-$kind"
  run_kind "$SERVE" "$kind" "$REQUESTS" >"$work/serve-$kind"
  client[lambda-$kind]=$(awk '{print $1*1000}' "$work/lambda-$kind" | median)/$(awk '{print $1*1000}' "$work/lambda-$kind" | p90)
  client[serve-$kind]=$(awk '{print $1*1000}' "$work/serve-$kind" | median)/$(awk '{print $1*1000}' "$work/serve-$kind" | p90)
done
# The function's own time per kind (its `request` log lines), the warm runs only.
fn_ms() { grep -E "$1" "$log" | grep -o ' ms=[0-9.]*' | cut -d= -f2 | tail -n "$REQUESTS"; }
fn[0]=$(fn_ms 'method=GET uri=[^ ]*/manifests/v1' | median)/$(fn_ms 'method=GET uri=[^ ]*/manifests/v1' | p90)
fn[1]=$(fn_ms 'method=HEAD uri=[^ ]*/blobs/' | median)/$(fn_ms 'method=HEAD uri=[^ ]*/blobs/' | p90)
fn[2]=$(fn_ms 'method=POST uri=[^ ]*/blobs/uploads/\?digest=' | median)/$(fn_ms 'method=POST uri=[^ ]*/blobs/uploads/\?digest=' | p90)

bin_size=$(stat -c %s "$FUNCTION")
python3 - "$FUNCTION" "$work/bootstrap.zip" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    z.write(sys.argv[1], "bootstrap")
PY
zip_size=$(stat -c %s "$work/bootstrap.zip")
if [ -f "$ZIP" ] && [ "$ZIP" -nt "$FUNCTION" ]; then
  zip_line="| \`cargo lambda build\` zip ($(realpath --relative-to="$root" "$ZIP")) | $(stat -c %s "$ZIP") bytes |"
else
  zip_line="| \`cargo lambda build\` zip | not built (or older than the binary) |"
fi

cat <<MD
## Lambda start and per-request time (local emulation), $(date -u '+%Y-%m-%d %H:%M UTC'), HEAD $(git rev-parse --short HEAD)

Command: \`bash bench/lambda-start.sh\` (BENCH_COLD=$COLD, BENCH_REQUESTS=$REQUESTS, BENCH_PUSH_BYTES=$PUSH_BYTES),
function \`$(realpath --relative-to="$root" "$FUNCTION")\`. Function binary under \`cargo lambda watch
--only-lambda-apis\` behind tests/lambda/content_type_shim.py, blobs in s3s-fs, metadata and the
upload key's secret in moto; \`berth serve\` on local files; all on 127.0.0.1 of this 2-core machine
shared with other builds. Times are curl's time_total (fresh connection each), median / p90, in ms.

| measure | value |
|---|---|
| cold start: process start to first response, median (runs) | $(printf '%s\n' $first_ms | median) ms ($(echo $first_ms)) |
| init inside the process (\`init_ms\`), median (runs) | $(printf '%s\n' "${inproc[@]}" | median) ms ($(echo "${inproc[@]}")) |
| of which SDK config (\`sdk_ms\`) / Secrets Manager read (\`secrets_ms\`), medians | $(printf '%s\n' "${sdk[@]}" | median) / $(printf '%s\n' "${secrets[@]}" | median) ms |
| function binary | $bin_size bytes |
| zip of it (deflate -9, as deployed) | $zip_size bytes |
$zip_line

| warm request ($REQUESTS each) | Lambda, client | Lambda, in the function (\`ms=\`) | \`berth serve\`, client |
|---|---|---|---|
| manifest GET by tag | ${client[lambda-manifest]} | ${fn[0]} | ${client[serve-manifest]} |
| blob HEAD | ${client[lambda-head]} | ${fn[1]} | ${client[serve-head]} |
| monolithic push of $PUSH_BYTES bytes (POST ?digest=) | ${client[lambda-push]} | ${fn[2]} | ${client[serve-push]} |
MD
