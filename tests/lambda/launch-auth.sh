#!/usr/bin/env bash
# Starts a second Lambda stack with token auth on, for the auth tests (tests/tests/auth.rs and
# tests/clients/auth.sh run it through BERTH_AUTH_LAUNCH):
#
#   tests/lambda/launch-auth.sh CONFIG_FILE PORT
#
# CONFIG_FILE is a `berth serve --auth-config` file; `berth auth export` inlines its key files
# into the one TOML text the function reads. LAMBDA_AUTH_FROM=secret (the default) stores it in
# Secrets Manager (moto's) and names the secret in BERTH_AUTH_CONFIG_SECRET, as a deployment
# does; LAMBDA_AUTH_FROM=env passes the text itself in BERTH_AUTH_CONFIG_TOML;
# LAMBDA_AUTH_FROM=policy takes CONFIG_FILE as a policy file (only `[policies]`, no auth) and
# passes it in BERTH_POLICY_CONFIG (tests/mirror/run.sh's mirror rules). LAMBDA_BUCKET and
# LAMBDA_META_BUCKET (default berth, berth-meta) name existing buckets. Then:
# `cargo lambda watch` on PORT+1, the shim (AWS's front) on PORT, and the release function,
# on the S3 stand-ins tests/lambda/run.sh started (it exports where they are). Runs until its
# process group is stopped; exits when any of its parts does.
set -euo pipefail
config=$1 port=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
: "${LAMBDA_S3_ENDPOINT:?run this from tests/lambda/run.sh (the S3 stand-ins)}" "${LAMBDA_META_ENDPOINT:?}"
BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}
emulator=$((port + 1))

# The policy file is no auth config: only the auth modes export one (a failure stops here).
[ "${LAMBDA_AUTH_FROM:-secret}" = policy ] || auth_config=$("$BERTH_BIN" auth export --config "$config")
case "${LAMBDA_AUTH_FROM:-secret}" in
  secret)
    secret=berth-auth-$$-$RANDOM
    AUTH_CONFIG_TEXT=$auth_config python3 -c '
import os, sys, boto3
boto3.client("secretsmanager", endpoint_url=os.environ["LAMBDA_META_ENDPOINT"],
             region_name=os.environ.get("AWS_REGION", "us-east-1")).create_secret(
    Name=sys.argv[1], SecretString=os.environ["AUTH_CONFIG_TEXT"])' "$secret"
    auth_env=(BERTH_AUTH_CONFIG_SECRET="$secret" BERTH_SECRETS_ENDPOINT="$LAMBDA_META_ENDPOINT")
    echo "launch-auth: auth config in secret $secret" ;;
  env) auth_env=(BERTH_AUTH_CONFIG_TOML="$auth_config") ;;
  policy) auth_env=(BERTH_POLICY_CONFIG="$(cat "$config")") ;;
  *) echo "LAMBDA_AUTH_FROM must be secret, env or policy" >&2; exit 2 ;;
esac

(cd "$root/lambda" && exec cargo lambda watch --only-lambda-apis --disable-cors -A 127.0.0.1 -P "$emulator") &
bash "$root/tests/wait-port.sh" "$emulator" "cargo lambda watch"
python3 "$root/tests/lambda/content_type_shim.py" "$port" "$emulator" &
AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024 AWS_LAMBDA_FUNCTION_NAME=_ \
  AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$emulator/.rt" \
  BERTH_BUCKET="${LAMBDA_BUCKET:-berth}" BERTH_S3_ENDPOINT="$LAMBDA_S3_ENDPOINT" \
  BERTH_META_BUCKET="${LAMBDA_META_BUCKET:-berth-meta}" BERTH_META_S3_ENDPOINT="$LAMBDA_META_ENDPOINT" \
  BERTH_UPLOAD_SECRET="auth-test-secret-$RANDOM$RANDOM-0123456789abcdef0123" RUST_LOG=info \
  env "${auth_env[@]}" "$root/target/release/berth-lambda" &
wait -n
