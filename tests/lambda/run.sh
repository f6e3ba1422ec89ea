#!/usr/bin/env bash
# Berth on Lambda, locally: the release function binary polls `cargo lambda watch`'s runtime API
# (`--only-lambda-apis`: the emulator, without a second build). Blobs go to s3s-fs, an S3
# implementation that checks SigV4 signatures and expiry of presigned URLs; metadata goes to
# moto's S3 (conditional writes work there too, and unlike s3s-fs, which keeps objects as files,
# it takes keys with path segments over 255 bytes, as S3 does). Clients talk to
# tests/lambda/content_type_shim.py in front of the emulator, which does two things AWS's front
# does and the emulator does not (see that file).
#
#   bash tests/lambda/run.sh              # everything
#   bash tests/lambda/run.sh suite edge   # a selection: suite edge clients push auth replica
#   bash tests/lambda/run.sh --serve      # start the stack, print BERTH_URL, wait (Ctrl-C stops)
#
# Tests: suite   the HTTP integration suite (berth-tests) through the emulator
#        edge    tests/lambda/edge_test.py: 413 over the 6 MB cap, 307 to S3, tampered and
#                expired presigned URLs refused by S3, the direct-upload extension's errors,
#                a 4 MiB manifest read back; the web interface's page (CSP) and script
#        clients skopeo/docker/oras via tests/clients/run.sh with small layers (pulls follow
#                the redirect; the S3 log must show the blob GETs); `berth push` of a podman
#                multi-platform index; `docker push` of a 200 MiB layer through `berth relay`
#                (direct parts to S3; the function's 6 MB cap stays enforced)
#        push    `berth push` of a 200 MiB blob straight to S3, a manifest on top, skopeo pull
#        auth    the auth tests (tests/tests/auth.rs, tests/clients/auth.sh) against a second
#                function with its auth config (Secrets Manager or env), started by tests/lambda/launch-auth.sh
#        contract the storage contract (berth_core::contract) on S3BlobStore and S3Meta, against
#                the same s3s-fs and moto (lambda s3::blobs::tests; seconds, nothing rebuilt)
#        gc      tests/lambda/gc_test.py: a function on its own buckets with BERTH_GC_GRACE=0,
#                BERTH_GC_SETTLE=0 and a retention rule (tests/gc-retention.toml); push,
#                delete, fire EventBridge's scheduled event through the emulator's Invoke API,
#                check the objects gone from s3s-fs's directory and pulls; then retention: tags
#                pushed, the schedule fired, the expired ones gone, audit lines in the log
#        replica tests/lambda/replica_test.py: a second region's function (own bucket, home
#                region's metadata) serves what the home one took, before and after replication
#        webhooks tests/lambda/webhooks_test.py: a function on its own buckets with a [webhooks]
#                endpoint (a local receiver) and BERTH_WEBHOOK_QUEUE_URL at a queue in a second
#                moto (pinned, in .tools/lambda-moto); a push leaves one wake-up message in the
#                queue, an SQS event holding it, fired through the Invoke API, delivers the
#                signed push and tag events (docs/webhooks.md)
#        replication tests/lambda/replication.sh: a function on its own buckets with the
#                replication rules of tests/replication/lib.sh to a local Distribution and a
#                token-auth `berth serve`, and BERTH_WEBHOOK_QUEUE_URL at a queue in the pinned
#                moto: pushes copied after the SQS wake-up (Invoke API), a destination that was
#                down copied by the scheduled event, with the scheduled full run; deletes
#        mirror  the pull-through cache (docs/mirror.md): MIRROR_TARGET=lambda tests/mirror/run.sh,
#                a function with mirror rules in BERTH_POLICY_CONFIG on its own buckets, in front
#                of a token-auth `berth serve` and Distribution (skopeo, docker, containerd pulls;
#                upstreams down; a moved tag after the TTL; broken upstreams)
#
# Ports (127.0.0.1): each defaults to a free port the kernel picks at run time
# (tests/free-port.sh; a fixed one collided with other services once): LAMBDA_PORT (what
# clients use), EMULATOR_PORT, S3_PORT (s3s-fs), META_PORT (moto), REPLICA_PORT and
# REPLICA_EMULATOR_PORT (the replica step's function), GC_PORT and GC_EMULATOR_PORT (the gc step's),
# HOOKS_PORT, HOOKS_EMULATOR_PORT, SQS_PORT and RECEIVER_PORT (the webhooks step's); the auth step's stacks (each launcher's
# PORT and PORT+1) and its OIDC issuer get free ones too.
# Everything started here is stopped by PID on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
free_port() { bash "$root/tests/free-port.sh" "$@"; }
LAMBDA_PORT=${LAMBDA_PORT:-$(free_port)}
EMULATOR_PORT=${EMULATOR_PORT:-$(free_port)}
S3_PORT=${S3_PORT:-$(free_port)}
META_PORT=${META_PORT:-$(free_port)}
REPLICA_PORT=${REPLICA_PORT:-$(free_port)}
REPLICA_EMULATOR_PORT=${REPLICA_EMULATOR_PORT:-$(free_port)}
GC_PORT=${GC_PORT:-$(free_port)}
GC_EMULATOR_PORT=${GC_EMULATOR_PORT:-$(free_port)}
HOOKS_PORT=${HOOKS_PORT:-$(free_port)}
HOOKS_EMULATOR_PORT=${HOOKS_EMULATOR_PORT:-$(free_port)}
SQS_PORT=${SQS_PORT:-$(free_port)}
RECEIVER_PORT=${RECEIVER_PORT:-$(free_port)}
TOOLS=$root/.tools
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
# The environment's CA bundle breaks the SDK on plain-HTTP local endpoints.
unset AWS_CA_BUNDLE

say() { printf '\n--- %s\n' "$*"; }

serve_only=0
tests=()
for a in "$@"; do
  case "$a" in
    --serve) serve_only=1 ;;
    suite | edge | clients | push | auth | replica | contract | gc | webhooks | replication | mirror) tests+=("$a") ;;
    *) echo "unknown argument $a" >&2; exit 2 ;;
  esac
done
[ ${#tests[@]} -gt 0 ] || tests=(suite edge clients push auth replica contract gc webhooks replication mirror)

# --- install (idempotent) --------------------------------------------------------------------
command -v cargo-lambda >/dev/null || pip install --quiet cargo-lambda
command -v moto_server >/dev/null || pip install --quiet 'moto[server]'
python3 -c 'import boto3' 2>/dev/null || pip install --quiet boto3
S3S=$(bash infra/s3s-fs.sh)
# The webhooks step's SQS: moto at a pinned version in its own virtualenv under .tools/ (as
# terraform/tests/run.sh keeps its tools), created once per machine and reused while the pin
# is unchanged; the moto on PATH above is whatever version pip had.
MOTO_PIN="moto[server]==5.2.1"
MOTO_VENV=$TOOLS/lambda-moto
if [[ " ${tests[*]} " == *" webhooks "* || " ${tests[*]} " == *" replication "* ]] && [ "$(cat "$MOTO_VENV/.berth-pin" 2>/dev/null)" != "$MOTO_PIN" ]; then
  rm -rf "$MOTO_VENV"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_PIN"
  echo "$MOTO_PIN" >"$MOTO_VENV/.berth-pin"
fi

# --- build (release; the same command, so the same artifacts, as infra/test.sh) ---------------
cargo build --release --workspace --all-targets --locked
FUNCTION=$root/target/release/berth-lambda
BERTH=$root/target/release/berth

WORK=$(mktemp -d /tmp/berth-lambda.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    # CI keeps only what was printed: the ends of the logs say what the stack did last.
    for log in function watch shim moto hooks-function sqs; do
      [ -s "$WORK/$log.log" ] && { echo "--- last lines of $log.log" >&2; tail -n 25 "$WORK/$log.log" | cut -c1-400 >&2; }
    done
    echo "logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

wait_port() { bash "$root/tests/wait-port.sh" "$@"; }

# --- S3 -----------------------------------------------------------------------------------------
export AWS_ACCESS_KEY_ID=berthlocal AWS_SECRET_ACCESS_KEY=berthlocalsecret AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
mkdir -p "$WORK/s3/berth"
RUST_LOG=s3s=debug,s3s_fs=debug "$S3S" --host 127.0.0.1 --port "$S3_PORT" \
  --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$WORK/s3" >"$WORK/s3.log" 2>&1 &
pids+=($!)
wait_port "$S3_PORT" s3s-fs
moto_server -H 127.0.0.1 -p "$META_PORT" >"$WORK/moto.log" 2>&1 &
pids+=($!)
wait_port "$META_PORT" moto
python3 -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$META_PORT').create_bucket(Bucket='berth-meta')"
# The upload key comes from Secrets Manager (moto's), as in a deployment (terraform/): the
# function gets the secret's name, never the key.
python3 -c "
import boto3
sm = boto3.client('secretsmanager', endpoint_url='http://127.0.0.1:$META_PORT', region_name='$AWS_REGION')
sm.create_secret(Name='berth/upload-key', SecretString='local-test-secret-0123456789abcdef0123456789')
sm.create_secret(Name='berth/short-key', SecretString='too-short')"

# --- the Lambda emulator and the function ------------------------------------------------------
# start_front LOG-PREFIX PORT EMULATOR-PORT [WATCH-ARG...]: the emulator, and the shim clients
# reach it through.
start_front() {
  (cd lambda && exec cargo lambda watch --only-lambda-apis --disable-cors -A 127.0.0.1 -P "$3" "${@:4}") >"$WORK/${1}watch.log" 2>&1 &
  pids+=($!)
  wait_port "$3" "cargo lambda watch on $3"
  python3 tests/lambda/content_type_shim.py "$2" "$3" >"$WORK/${1}shim.log" 2>&1 &
  pids+=($!)
  wait_port "$2" "the shim on $2"
}
# start_function LOG-PREFIX EMULATOR-PORT ENV=VALUE...: the function binary polling that
# emulator, on the local S3 stand-ins, metadata in berth-meta, the upload key from Secrets Manager.
start_function() {
  local prefix=$1 emulator=$2; shift 2
  env AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024 AWS_LAMBDA_FUNCTION_NAME=_ \
    AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$emulator/.rt" BERTH_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" \
    BERTH_META_BUCKET=berth-meta BERTH_META_S3_ENDPOINT="http://127.0.0.1:$META_PORT" \
    BERTH_UPLOAD_SECRET_ID=berth/upload-key BERTH_SECRETS_ENDPOINT="http://127.0.0.1:$META_PORT" RUST_LOG=info \
    "$@" "$FUNCTION" >"$WORK/${prefix}function.log" 2>&1 &
  pids+=($!)
}
start_front "" "$LAMBDA_PORT" "$EMULATOR_PORT"
export BERTH_REDIRECT_EXPIRY_SECS=${BERTH_REDIRECT_EXPIRY_SECS:-5}
export BERTH_URL="http://127.0.0.1:$LAMBDA_PORT"
launched=$(date +%s%N)
# With the tag policies tests/tests/policies.rs expects (only its `*/prod-*` and `*/quota-*`
# repositories are affected), so that file runs against the function too (BERTH_POLICY_URL).
start_function "" "$EMULATOR_PORT" BERTH_BUCKET=berth \
  BERTH_POLICY_CONFIG="$(grep -v '^#' tests/tests/policies/policy.toml)"
# Cold start as a client sees it: process start to the first response through the emulator.
for _ in $(seq 1 1000); do
  curl -sf -o /dev/null "$BERTH_URL/v2/" && break
  sleep 0.01
done
INIT_MS=$(( ($(date +%s%N) - launched) / 1000000 ))
echo "function: process start to first response ${INIT_MS} ms ($(grep -o 'init_ms=[0-9.]*' "$WORK/function.log" | head -1) inside the process)"
curl -sf -o /dev/null "$BERTH_URL/v2/" || { echo "the function does not answer" >&2; cat "$WORK/function.log" >&2; exit 1; }
export S3_LOG=$WORK/s3.log FUNCTION_LOG=$WORK/function.log S3_ENDPOINT="http://127.0.0.1:$S3_PORT" BERTH_BIN=$BERTH
# For tests/lambda/launch-auth.sh.
export LAMBDA_S3_ENDPOINT=$S3_ENDPOINT LAMBDA_META_ENDPOINT="http://127.0.0.1:$META_PORT"

if [ "$serve_only" = 1 ]; then
  echo "BERTH_URL=$BERTH_URL  (S3 at $S3_ENDPOINT, logs in $WORK); Ctrl-C stops"
  echo "INIT_MS=$INIT_MS"
  wait "${pids[0]}"
  exit 0
fi

# The largest body the function takes (its 413 says so too).
MAX_BODY=$(curl -s -X POST -D - -o /dev/null "$BERTH_URL/v2/lambda-probe/blobs/uploads/" | tr -d '\r' |
  awk -F': ' 'tolower($1)=="oci-chunk-max-length"{print $2}')
[ -n "$MAX_BODY" ] || { echo "no OCI-Chunk-Max-Length on the upload POST" >&2; exit 1; }
export BERTH_MAX_BODY=$MAX_BODY

failed=()
for t in "${tests[@]}"; do
  say "lambda: $t"
  case "$t" in
    # --workspace as in infra/test.sh (same feature set: nothing rebuilt); only the HTTP suite runs.
    suite)
      suite_tests=()
      # auth.rs starts its own registry with a config: the auth step runs it against the function.
      for f in tests/tests/*.rs; do [ "$f" = tests/tests/auth.rs ] || suite_tests+=(--test "$(basename "$f" .rs)"); done
      # Skipped here, each for a deviation of the local stand-ins from AWS (they pass against
      # berth serve; the protocol code is the same):
      skips=(
        # s3s-fs answers 500 to a Range ending past the object (S3 clamps it: 206) ...
        --skip range_past_the_end_is_clamped
        # ... and 400 to a multi-range request (S3 ignores it and sends the whole object).
        --skip ununderstood_range_is_ignored
        # cargo lambda watch resolves `..` in the path before building the event.
        --skip invalid_names_are_name_invalid_on_every_endpoint
        --skip forged_upload_ids_are_unknown
        # cargo lambda watch answers 500 itself to broken framing (bad chunk sizes, a body
        # shorter than its Content-Length), before any invocation.
        --skip odd_requests_never_yield_5xx
        --skip monolithic_with_short_body_is_size_invalid
        # cargo lambda watch loses about 1 in 10 responses of 4 MiB under load (its runtime API
        # answers the function's POST before reading the body): edge_test.py tests that size
        # with a retry that first proves the function answered.
        --skip manifest_of_exactly_4_mib_is_accepted
      )
      BERTH_POLICY_URL=$BERTH_URL cargo test --release --locked --workspace --no-fail-fast "${suite_tests[@]}" \
        -- "${skips[@]}" || failed+=(suite) ;;
    edge)
      python3 tests/lambda/edge_test.py || failed+=(edge)
      # The web interface (docs/ui.md) comes from the function too: the page with its CSP, and
      # its script as JavaScript.
      ( set -e
        h=$(curl -sf -D - -o "$WORK/ui.html" "$BERTH_URL/ui/" | tr -d '\r')
        grep -qi "^content-security-policy: .*script-src 'self'" <<<"$h"
        grep -qi '^content-type: text/html' <<<"$h"
        grep -q '<script type="module"[^>]*src="/ui/assets/app.js"' "$WORK/ui.html"
        h=$(curl -sf -D - -o /dev/null "$BERTH_URL/ui/assets/app.js" | tr -d '\r')
        grep -qi '^content-type: text/javascript' <<<"$h"
        echo "ok: /ui/ and its script served by the function"
      ) || failed+=(edge-ui) ;;
    clients)
      # Blobs are pointers to their upload's object under data/; manifests sit under blobs/.
      presigned() { grep -Ec 'method: GET, uri: /berth/(blobs|data)/[^ ]*X-Amz-Algorithm=' "$S3_LOG" || true; }
      before=$(presigned)
      LAYER_MIB=2 bash tests/clients/run.sh skopeo docker oras push-image relay || failed+=(clients)
      after=$(presigned)
      echo "presigned blob GETs served by S3 during the client tests: $((after - before))"
      [ "$after" -gt "$before" ] || { echo "no client followed a redirect to S3" >&2; failed+=(clients-redirect); } ;;
    push) bash tests/lambda/push_test.sh || failed+=(push) ;;
    contract)
      # --workspace --bins: the test binaries the release build above made; the filter runs one test.
      BERTH_CONTRACT_S3=1 BERTH_BUCKET=berth BERTH_META_BUCKET=berth-meta BERTH_S3_ENDPOINT="$S3_ENDPOINT" \
        BERTH_META_S3_ENDPOINT="http://127.0.0.1:$META_PORT" BERTH_UPLOAD_SECRET=contract-test-secret-0123456789abcdef \
        cargo test --release --locked --workspace --bins s3_stores_keep_the_storage_contract || failed+=(contract) ;;
    replica)
      # A second region's function: its own (empty) bucket, metadata and reads of content not yet
      # replicated from the home region's, as terraform/modules/aws-region configures it.
      mkdir -p "$WORK/s3/berth-replica"
      start_front replica- "$REPLICA_PORT" "$REPLICA_EMULATOR_PORT"
      start_function replica- "$REPLICA_EMULATOR_PORT" BERTH_BUCKET=berth-replica BERTH_HOME_BUCKET=berth
      REPLICA_URL="http://127.0.0.1:$REPLICA_PORT" python3 tests/lambda/replica_test.py || failed+=(replica) ;;
    gc)
      # Its own buckets (blobs and metadata), so the counts are exactly what the step pushed and
      # GC's grace of 0 cannot touch what other steps left; grace and settle 0: one scheduled
      # invocation runs the whole pipeline (docs/gc.md).
      mkdir -p "$WORK/s3/berth-gc"
      python3 -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$META_PORT').create_bucket(Bucket='berth-gc-meta')"
      start_front gc- "$GC_PORT" "$GC_EMULATOR_PORT"
      # The emulator sends the invocation deadline as a duration (600000), not as epoch
      # milliseconds as AWS does; GC stops 60 s before the deadline, so it would do nothing.
      # The function reaches the runtime API through a shim that sends now + that duration.
      GC_RUNTIME_PORT=$(free_port)
      python3 tests/lambda/deadline_shim.py "$GC_RUNTIME_PORT" "$GC_EMULATOR_PORT" >"$WORK/gc-deadline.log" 2>&1 &
      pids+=($!)
      wait_port "$GC_RUNTIME_PORT" "the deadline shim"
      # With a retention rule on gc/ret (gc_test.py's second part; its first repository is outside it).
      start_function gc- "$GC_RUNTIME_PORT" BERTH_BUCKET=berth-gc BERTH_META_BUCKET=berth-gc-meta \
        BERTH_GC_GRACE=0 BERTH_GC_SETTLE=0 BERTH_POLICY_CONFIG="$(cat tests/gc-retention.toml)"
      # The emulator's Invoke API (what `cargo lambda invoke` and the AWS SDK call); `_` is the
      # function polling its runtime API without a name, as start_function's does.
      BERTH_URL="http://127.0.0.1:$GC_PORT" S3_DIR="$WORK/s3/berth-gc" GC_FUNCTION_LOG="$WORK/gc-function.log" \
        GC_INVOKE_URL="http://127.0.0.1:$GC_EMULATOR_PORT/2015-03-31/functions/_/invocations" \
        python3 tests/lambda/gc_test.py || failed+=(gc) ;;
    webhooks)
      # Its own buckets (the outbox is in the metadata bucket) and its own moto for SQS.
      mkdir -p "$WORK/s3/berth-hooks"
      python3 -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$META_PORT').create_bucket(Bucket='berth-hooks-meta')"
      # Through the venv's python (see terraform/tests/run.sh: the script's shebang may name a
      # directory that is gone).
      "$MOTO_VENV/bin/python" "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$SQS_PORT" >"$WORK/sqs.log" 2>&1 &
      pids+=($!)
      wait_port "$SQS_PORT" "moto (SQS)"
      QUEUE_URL=$(python3 -c "import boto3; print(boto3.client('sqs', endpoint_url='http://127.0.0.1:$SQS_PORT', region_name='$AWS_REGION').create_queue(QueueName='berth-webhooks')['QueueUrl'])")
      HOOK_SECRET=lambda-webhook-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
      start_front hooks- "$HOOKS_PORT" "$HOOKS_EMULATOR_PORT"
      start_function hooks- "$HOOKS_EMULATOR_PORT" BERTH_BUCKET=berth-hooks BERTH_META_BUCKET=berth-hooks-meta \
        BERTH_WEBHOOK_QUEUE_URL="$QUEUE_URL" BERTH_SQS_ENDPOINT="http://127.0.0.1:$SQS_PORT" \
        BERTH_POLICY_CONFIG="$(printf '[[webhooks.endpoints]]\nname = "lambda"\nurl = "http://127.0.0.1:%s/hook"\nsecret = "%s"\nallow_private = true\nevents = ["push", "tag"]\n' "$RECEIVER_PORT" "$HOOK_SECRET")"
      BERTH_URL="http://127.0.0.1:$HOOKS_PORT" SQS_ENDPOINT="http://127.0.0.1:$SQS_PORT" QUEUE_URL="$QUEUE_URL" \
        RECEIVER_PORT="$RECEIVER_PORT" WEBHOOK_SECRET="$HOOK_SECRET" \
        INVOKE_URL="http://127.0.0.1:$HOOKS_EMULATOR_PORT/2015-03-31/functions/_/invocations" \
        timeout 300 python3 tests/lambda/webhooks_test.py || failed+=(webhooks) ;;
    replication)
      # Its own buckets (the outbox is in the metadata bucket), its own moto for SQS; the
      # script starts the destinations, then its function with rules naming them.
      mkdir -p "$WORK/s3/berth-repl"
      python3 -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$META_PORT').create_bucket(Bucket='berth-repl-meta')"
      REPL_SQS_PORT=$(free_port)
      "$MOTO_VENV/bin/python" "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$REPL_SQS_PORT" >"$WORK/repl-sqs.log" 2>&1 &
      pids+=($!)
      wait_port "$REPL_SQS_PORT" "moto (SQS, replication)"
      REPL_QUEUE_URL=$(python3 -c "import boto3; print(boto3.client('sqs', endpoint_url='http://127.0.0.1:$REPL_SQS_PORT', region_name='$AWS_REGION').create_queue(QueueName='berth-webhooks')['QueueUrl'])")
      FUNCTION=$FUNCTION BUCKET=berth-repl META_BUCKET=berth-repl-meta META_ENDPOINT="http://127.0.0.1:$META_PORT" \
        SQS_ENDPOINT="http://127.0.0.1:$REPL_SQS_PORT" QUEUE_URL="$REPL_QUEUE_URL" \
        timeout 600 bash tests/lambda/replication.sh || failed+=(replication) ;;
    mirror)
      mkdir -p "$WORK/s3/berth-mirror"
      python3 -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$META_PORT').create_bucket(Bucket='berth-mirror-meta')"
      LAMBDA_BUCKET=berth-mirror LAMBDA_META_BUCKET=berth-mirror-meta MIRROR_TARGET=lambda \
        bash tests/mirror/run.sh || failed+=(mirror) ;;
    auth)
      # A bad auth config stops the function at init with the reason: it never serves with
      # half a policy.
      bad_config() { # bad_config EXPECTED-MESSAGE ENV=VALUE...
        local want=$1 out; shift
        if out=$(env BERTH_BUCKET=berth BERTH_UPLOAD_SECRET=local-test-secret-0123456789abcdef0123456789 \
            BERTH_S3_ENDPOINT="$LAMBDA_S3_ENDPOINT" BERTH_SECRETS_ENDPOINT="$LAMBDA_META_ENDPOINT" "$@" \
            timeout 30 "$FUNCTION" 2>&1); then
          echo "the function started with a bad auth config ($*)" >&2; return 1
        fi
        grep -qF -- "$want" <<<"$out" || { echo "no [$want] in: $out" >&2; return 1; }
        echo "  ok: refused at init: $want"
      }
      bad_config "auth config: TOML parse error" BERTH_AUTH_CONFIG_TOML='[token' || failed+=(auth-config)
      bad_config "names private_key_file, which this runtime cannot read" \
        BERTH_AUTH_CONFIG_TOML=$'[[token.keys]]\nkid = "k"\nprivate_key_file = "keys/k.key"' || failed+=(auth-config)
      bad_config "BERTH_AUTH_CONFIG_SECRET no-such-secret" BERTH_AUTH_CONFIG_SECRET=no-such-secret || failed+=(auth-config)
      # The same for the upload key's secret (BERTH_UPLOAD_SECRET is set by bad_config itself).
      bad_config "set BERTH_UPLOAD_SECRET or BERTH_UPLOAD_SECRET_ID, not both" \
        BERTH_UPLOAD_SECRET_ID=berth/upload-key || failed+=(upload-key)
      bad_config "BERTH_UPLOAD_SECRET_ID no-such-secret" BERTH_UPLOAD_SECRET= \
        BERTH_UPLOAD_SECRET_ID=no-such-secret || failed+=(upload-key)
      bad_config "BERTH_UPLOAD_SECRET_ID: the upload key must be at least 32 bytes long, got 9" BERTH_UPLOAD_SECRET= \
        BERTH_UPLOAD_SECRET_ID=berth/short-key || failed+=(upload-key)
      # The config from Secrets Manager here, from the plain variable for the clients.
      LAMBDA_AUTH_FROM=secret BERTH_AUTH_LAUNCH=$root/tests/lambda/launch-auth.sh BERTH_AUTH_PORT=$(free_port 2) \
        cargo test --release --locked --workspace --test auth || failed+=(auth)
      # Layers under the 6 MB request cap, as in the clients step (skopeo pushes each in one PATCH).
      LAMBDA_AUTH_FROM=env LAYER_MIB=2 BERTH_AUTH_LAUNCH=$root/tests/lambda/launch-auth.sh BERTH_PORT=$(free_port 2) ISSUER_PORT=$(free_port) \
        bash tests/clients/auth.sh || failed+=(auth-clients) ;;
  esac
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "lambda tests FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "lambda tests passed: ${tests[*]}"
