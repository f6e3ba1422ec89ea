#!/usr/bin/env bash
# Replication on the Lambda function (docs/replication.md), run by tests/lambda/run.sh (step
# `replication`, which exports the stand-ins below): the release function binary under its own
# `cargo lambda watch`, on its own buckets, with BERTH_WEBHOOK_QUEUE_URL at a queue in moto and
# the rules of tests/replication/lib.sh (BERTH_POLICY_CONFIG) to two destinations run here on
# 127.0.0.1: Debian's docker-registry (htpasswd) and a second `berth serve` (token auth).
#   1. skopeo pushes an image and a two-platform index, curl a referrer; nothing is copied
#      before the wake-up (nothing consumes the queue here); the SQS event holding the queue's
#      messages, invoked through the emulator's Invoke API as the event source mapping would,
#      copies every manifest to both destinations with its digest.
#   2. Distribution down: a push is copied to the other destination on its wake-up, and to
#      Distribution (back, past the backoff) only by EventBridge's scheduled event, which also
#      runs the scheduled full run of the on_push = false rule (BERTH_REPLICATION_SCHEDULE) and a
#      sync rule (pull mode: app/one from Distribution into pulled/, checked with skopeo).
#   3. A delete replicates to the rule with deletes = true only.
#
# Environment (from run.sh): FUNCTION, S3_ENDPOINT, META_ENDPOINT, SQS_ENDPOINT, QUEUE_URL,
# BUCKET, META_BUCKET, BERTH_BIN. Prints ok:/FAIL: per check; stops what it started by PID.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
WAIT_SECS=${WAIT_SECS:-30}
WORK=$(mktemp -d /tmp/berth-lambda-replication.XXXXXX)
# shellcheck source=tests/replication/lib.sh
. "$root/tests/replication/lib.sh"
trap cleanup_replication EXIT

make_images
setup_d
setup_t
replication_rules >"$WORK/policies.toml"
# Pull mode: the scheduled event also syncs app/one from Distribution (which the wake-up fills
# by replication) into pulled/ (which no replication rule covers).
sync_rule '["app/one"]' pulled 1h >>"$WORK/policies.toml"

# The function: emulator, the content-type shim clients use, the deadline shim (epoch deadlines,
# as AWS sends: see deadline_shim.py), a TLS-refusing front for skopeo (plain_front.py).
E_PORT=$(free_port) L_PORT=$(free_port) R_PORT=$(free_port) P_PORT=$(free_port)
(cd lambda && exec cargo lambda watch --only-lambda-apis --disable-cors -A 127.0.0.1 -P "$E_PORT") >"$WORK/watch.log" 2>&1 &
PIDS+=($!)
bash tests/wait-port.sh "$E_PORT" "cargo lambda watch" >/dev/null || exit 1
python3 tests/lambda/content_type_shim.py "$L_PORT" "$E_PORT" >"$WORK/shim.log" 2>&1 &
PIDS+=($!)
python3 tests/lambda/deadline_shim.py "$R_PORT" "$E_PORT" >"$WORK/deadline.log" 2>&1 &
PIDS+=($!)
python3 tests/clients/plain_front.py "$P_PORT" "$L_PORT" >"$WORK/front.log" 2>&1 &
PIDS+=($!)
for p in "$L_PORT" "$R_PORT" "$P_PORT"; do bash tests/wait-port.sh "$p" "a shim on $p" >/dev/null || exit 1; done
env AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=1024 AWS_LAMBDA_FUNCTION_NAME=_ \
  AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$R_PORT/.rt" BERTH_S3_ENDPOINT="$S3_ENDPOINT" \
  BERTH_BUCKET="$BUCKET" BERTH_META_BUCKET="$META_BUCKET" BERTH_META_S3_ENDPOINT="$META_ENDPOINT" \
  BERTH_UPLOAD_SECRET=lambda-replication-secret-0123456789abcdef RUST_LOG=info \
  BERTH_WEBHOOK_QUEUE_URL="$QUEUE_URL" BERTH_SQS_ENDPOINT="$SQS_ENDPOINT" \
  BERTH_REPLICATION_SCHEDULE=1h BERTH_POLICY_CONFIG="$(cat "$WORK/policies.toml")" \
  "$FUNCTION" >"$WORK/function.log" 2>&1 &
PIDS+=($!)
L=127.0.0.1:$L_PORT P=127.0.0.1:$P_PORT
wait_http "http://$L/v2/" 200 "the function" "${PIDS[-1]}" || { tail -20 "$WORK/function.log"; exit 1; }
say "function $L (front $P), destinations $D (distribution, htpasswd) and $T (berth, token auth); work $WORK"

# invoke wake|scheduled: the event an SQS event source mapping (holding every message in the
# queue now) or EventBridge's schedule sends, through the emulator's Invoke API; prints
# "<messages> <answer>".
invoke() {
  INVOKE_URL="http://127.0.0.1:$E_PORT/2015-03-31/functions/_/invocations" timeout 300 python3 - "$1" <<'PY'
import json, os, sys, time, urllib.request
import boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["SQS_ENDPOINT"], region_name=os.environ.get("AWS_REGION", "us-east-1"))
msgs = []
if sys.argv[1] == "wake":
    while True:
        got = sqs.receive_message(QueueUrl=os.environ["QUEUE_URL"], MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not got:
            break
        msgs += got
    event = {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
        "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:berth-webhooks", "awsRegion": "us-east-1",
    } for m in msgs]}
else:
    event = {"version": "0", "id": "r", "detail-type": "Scheduled Event", "source": "aws.events", "account": "1",
             "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [], "detail": {}}
req = urllib.request.Request(os.environ["INVOKE_URL"], data=json.dumps(event).encode(), method="POST",
                             headers={"content-type": "application/json"})
with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=280) as r:
    answer = json.loads(r.read())
print(len(msgs), json.dumps(answer, separators=(",", ":")))
PY
}

say "--- on push, through the SQS wake-up: an image, an index (--all) and a referrer of it"
check "skopeo push app/one:v1 to the function" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img1:v1" "docker://$P/app/one:v1"
check "skopeo push the index app/multi:v1 (--all)" "${SK[@]}" copy -q --all --dest-tls-verify=false "oci:$WORK/multi:v1" "docker://$P/app/multi:v1"
push_referrer "http://$L" app/multi
expect_eq "Distribution: nothing before the wake-up" "" "$(raw_digest "$BOB" "$D/app/one:v1")"
started=$(date +%s.%N)
read -r n answer < <(invoke wake)
took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
if [ "${n:-0}" -ge 1 ]; then ok "$n wake-up messages in the queue"; else bad "no wake-up message in the queue"; fi
expect_eq "the SQS batch's answer" '{"batchItemFailures":[]}' "$answer"
say "  (the wake-up invocation that copied them took $took s)"
expect_pushed_copies
expect_eq "the rule on_push = false copied nothing" "" "$(raw_digest "$BOB" "$D/manual/app/one:v1")"

say "--- Distribution down during a push: the scheduled event copies after it is back"
stop_pid "$D_PID"
check "skopeo push app/two:v1 with Distribution down" "${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/img2:v1" "docker://$P/app/two:v1"
read -r n answer < <(invoke wake)
expect_eq "the SQS batch's answer" '{"batchItemFailures":[]}' "$answer"
expect_at "Berth (token) got rep/app/two:v1 on the wake-up" "$ALICE" "$T/rep/app/two:v1" "$D2"
grep -q 'replication copied=[0-9]* retrying=1' "$WORK/function.log" && ok "the copy to Distribution failed and waits for a retry" \
  || bad "no replication report with a retrying entry in the function's log"
start_d
sleep 6 # past the first backoff (5 s)
expect_eq "Distribution: no app/two:v1 before the schedule" "" "$(raw_digest "$BOB" "$D/app/two:v1")"
read -r n answer < <(invoke scheduled)
grep -q '"finished"' <<<"$answer" && ok "the scheduled event answered GC's report" || bad "the scheduled event answered $answer"
expect_eq "Distribution: app/two:v1 after the scheduled event" "$D2" "$(raw_digest "$BOB" "$D/app/two:v1")"
expect_eq "Distribution: manual/app/multi:v1 by the scheduled full run" "$IDX" "$(raw_digest "$BOB" "$D/manual/app/multi:v1")"
expect_eq "Distribution: manual/app/two:v1 by the scheduled full run" "$D2" "$(raw_digest "$BOB" "$D/manual/app/two:v1")"
grep -q 'scheduled full replication run enqueued rule=by-hand entries=3' "$WORK/function.log" && ok "one full run of 3 tags enqueued" \
  || bad "no full run of 3 entries in the function's log"
expect_eq "pull mode: pulled/app/one:v1 synced from Distribution by the scheduled event" "$D1" "$(raw_digest "" "$P/pulled/app/one:v1")"
grep -q 'sync rules run ran=1 failed=0' "$WORK/function.log" && ok "pull mode: the sync rule ran once" \
  || bad "no sync run in the function's log"

say "--- a delete replicates where the rule says so"
wake_quietly() { invoke wake >/dev/null; }
expect_delete_replicated "http://$L" wake_quietly
if grep -q -e "$ALICE_PW" -e "$BOB_PW" "$WORK/function.log"; then bad "a password was logged"; else ok "no password in the function's log"; fi

say "lambda replication: $passed passed, $failed failed"
[ "$failed" = 0 ]
