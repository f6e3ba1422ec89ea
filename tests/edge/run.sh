#!/usr/bin/env bash
# Berth as a Cloudflare Worker in the real workerd runtime (`wrangler dev`, local R2 and KV):
#
#   1. builds the bundle offline (infra/edge-build.sh; prints its gzip size);
#   2. starts two `wrangler dev` instances of the request Worker (edge/build-serve, the half of a
#      split deployment that answers requests) on 127.0.0.1: A with a body limit high enough for a
#      300 MiB layer, B with a 1 MiB limit and (fake) S3 credentials, to prove the 413 and the
#      307 to a presigned URL (wrangler dev does not enforce body limits itself);
#   3. runs against A: the core's HTTP integration suite, the real clients (skopeo both ways,
#      docker push/pull of a multi-layer image through its own dockerd) and tests/edge/edge_test.py
#      (64 MiB in 5 MiB chunks, a 300 MiB docker-style streamed PATCH, concurrent pushes of one
#      tag, a client killed mid-body), and against B the limit and redirect tests;
#   4. relay: a fourth instance with a 16 MiB body limit takes `berth push` of a multi-platform
#      index podman made and `docker push` of a 200 MiB layer through `berth relay`
#      (tests/clients/run.sh push-image relay);
#   5. auth: tests/tests/auth.rs and tests/clients/auth.sh against Workers with the tests' own
#      AUTH_CONFIG (tests/edge/launch-auth.sh), and bad AUTH_CONFIGs (TOML, broken JSON)
#      answered with 500;
#   6. contract: the core's storage contract (berth_core::contract) on the R2 stores inside
#      workerd: builds the contract bundle (EDGE_BUNDLE=contract infra/edge-build.sh), starts
#      it (tests/edge/wrangler-contract.toml) and calls its POST /__berth/contract, which
#      answers 200 `ok` or 500 with what failed; checks the production bundle lacks the route.
#   7. gc: garbage collection fired by the Cron Trigger (tests/edge/gc.sh, its own instance).
#   7b. webhooks: outbox entries delivered at once through the local webhook queue (no Cron
#      Trigger) to a local receiver, signed, and retried by the Cron Trigger after a failure
#      (tests/edge/webhooks.sh, its own instance).
#   7c. replication: copies to a local Distribution and a token-auth `berth serve` through the
#      queue (no Cron Trigger), a destination that was down copied by two concurrent Cron
#      Triggers with the scheduled full run, deletes, a 96 MiB layer streamed from R2
#      (tests/edge/replication.sh, its own instance; needs target/release/berth).
#   8. ui: the web interface's browser tests (tests/ui/run.sh with UI_TARGET=worker: its own
#      Workers, auth off then on with AUTH_CONFIG; needs target/release/berth, as `push` does).
#   8b. split: the two halves of a split deployment, each alone (tests/edge/split.sh): the
#      request Worker carries and runs no background code, the background Worker runs GC.
#   9. mirror: the pull-through cache (docs/mirror.md): MIRROR_TARGET=worker tests/mirror/run.sh,
#      its own Worker with mirror rules in POLICY_CONFIG in front of a token-auth `berth serve`
#      and Distribution (needs target/release/berth too).
# Every instance is stopped by PID (its process group) on exit.
#
#   bash tests/edge/run.sh                # everything
#   EDGE_STEPS="suite edge" bash tests/edge/run.sh   # a selection of: suite clients edge push relay auth contract gc webhooks replication ui split mirror
# Ports: every server gets a free port the kernel picks at run time (tests/free-port.sh; a fixed
# one collided with other services once): A, B, the contract instance and their inspectors, the clients' front, s3s-fs
# for B's presigned URLs, the auth step's Workers (each launcher's PORT..PORT+3) and its issuer.
# When a step fails, the work directory (every server's log) is kept and its path printed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_CA_BUNDLE
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false

free_port() { bash "$root/tests/free-port.sh" "$@" || { echo "edge: no free port" >&2; exit 1; }; }
port_a=$(free_port) inspector_a=$(free_port) port_b=$(free_port) inspector_b=$(free_port)
port_c=$(free_port) inspector_c=$(free_port)
port_r=$(free_port) inspector_r=$(free_port)
steps=${EDGE_STEPS:-suite clients edge push relay auth contract gc webhooks replication ui split mirror}
work=$(mktemp -d /tmp/berth-edge.XXXXXX)
pids=()
failed=()

say() { printf '\n==> edge: %s\n' "$*"; }

pids_plain=()
stop_all() {
  local status=$? pid i # $?: the script's exit status, read first
  for pid in "${pids_plain[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    # wrangler was started in its own session: its group holds the workerd processes too.
    kill -TERM -- "-$pid" 2>/dev/null || continue
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null
  done
  # A failed run keeps its logs: they are what one reads next.
  if [ -n "${KEEP_WORK:-}" ] || [ "$status" != 0 ]; then echo "edge: kept the logs in $work (exit $status)"; else rm -rf "$work"; fi
}
trap stop_all EXIT

# start NAME PORT INSPECTOR_PORT [--var NAME:VALUE ...]
start() {
  local name=$1 p=$2 insp=$3 i; shift 3
  setsid bash "$root/infra/edge/wrangler-dev.sh" --ip 127.0.0.1 --port "$p" \
    --inspector-port "$insp" --persist-to "$work/$name-state" --show-interactive-dev-session=false \
    --var "UPLOAD_SECRET:edge-test-$RANDOM$RANDOM" "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for i in $(seq 1 120); do
    curl -sf -o /dev/null "http://127.0.0.1:$p/v2/" && { echo "edge: $name up on $p"; return 0; }
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 1
  done
  echo "edge: wrangler dev ($name) did not start; its log:"; tail -50 "$work/$name.log"
  exit 1
}

say "build the Worker bundle offline"
bash infra/edge-build.sh || exit 1

say "unit tests of the Worker crate's runtime-free parts (SigV4 against botocore), on the host"
cargo test --release --locked --manifest-path edge/Cargo.toml --lib || failed+=("edge-unit")

if [[ " $steps " == *" contract "* ]]; then
  say "storage contract on R2 (R2Blobs, R2Meta) in workerd: POST /__berth/contract"
  if EDGE_BUNDLE=contract bash infra/edge-build.sh; then
    # The route's path is in the wasm only where the feature compiled it in.
    grep -q __berth/contract edge/build-contract/index_bg.wasm \
      && ! grep -q __berth/contract target/edge-dist/*.wasm \
      || { echo "contract: the route is missing from the contract bundle or present in the production one"; failed+=("contract"); }
    start contract "$port_c" "$inspector_c" --config tests/edge/wrangler-contract.toml
    code=$(curl -s -o "$work/contract.body" -w '%{http_code}' --max-time 300 -X POST \
      "http://127.0.0.1:$port_c/__berth/contract")
    if [ "$code" = 200 ] && [ "$(cat "$work/contract.body")" = ok ]; then
      echo "  ok: blob_store_contract and meta_store_contract pass on R2 under wrangler dev"
    else
      echo "contract: POST /__berth/contract answered $code:"; cat "$work/contract.body"; echo
      failed+=("contract")
    fi
  else
    failed+=("contract-build")
  fi
fi

# A and B serve the steps below but contract and auth (they start their own Workers).
if [[ " $steps " == *" suite "* || " $steps " == *" clients "* || " $steps " == *" edge "* \
      || " $steps " == *" push "* ]]; then
  say "start wrangler dev"
  # A runs with the tag policies tests/tests/policies.rs expects (only its `*/prod-*` and
  # `*/quota-*` repositories are affected), so that file runs against the Worker too.
  # ANALYTICS_ECHO: the data points A writes are printed too (edge_test.py's analytics test).
  start a "$port_a" "$inspector_a" --bundle edge/build-serve --var MAX_REQUEST_BODY:400000000 --var ANALYTICS_ECHO:1 \
    --var "POLICY_CONFIG:$("$root/target/release/berth" auth export --json --config tests/tests/policies/policy.toml)"
  # B's presigned URLs point at s3s-fs, which checks signatures and expiry as R2's S3 API does
  # (R2 itself holds the object on Cloudflare; here the test copies it into s3s-fs's directory).
  s3_port=$(free_port)
  mkdir -p "$work/s3/berth-blobs"
  # Built (first run on a machine: a few minutes) before it starts, not in the background job.
  s3s_fs=$(bash infra/s3s-fs.sh) || { echo "edge: s3s-fs did not build"; exit 1; }
  "$s3s_fs" --host 127.0.0.1 --port "$s3_port" --access-key AKIDEXAMPLE \
    --secret-key edge-test-secret "$work/s3" >"$work/s3.log" 2>&1 &
  pids_plain+=($!)
  bash tests/wait-port.sh "$s3_port" s3s-fs || { cat "$work/s3.log"; exit 1; }
  start b "$port_b" "$inspector_b" --bundle edge/build-serve --var MAX_REQUEST_BODY:1048576 \
    --var S3_ACCESS_KEY_ID:AKIDEXAMPLE --var S3_SECRET_ACCESS_KEY:edge-test-secret \
    --var "S3_ENDPOINT:http://127.0.0.1:$s3_port" --var S3_BUCKET:berth-blobs --var PRESIGN_SECS:3
fi
url_a="http://127.0.0.1:$port_a" url_b="http://127.0.0.1:$port_b"

# First, on fresh instances. wrangler dev's proxy sometimes loses the PUT after the 300 MiB
# streamed PATCH on a stale keep-alive connection (503 "worker restarted"; see edge/README.md):
# edge_test.py proves the Worker never saw it, then sends it again.
if [[ " $steps " == *" edge "* ]]; then
  say "edge tests: chunked and streamed uploads, concurrent tags, killed upload, limit, redirect"
  python3 tests/edge/edge_test.py --url "$url_a" --limited-url "$url_b" --limit 1048576 \
    --s3-root "$work/s3" --presign-secs 3 --a-log "$work/a.log" || failed+=("edge")
fi

if [[ " $steps " == *" suite "* ]]; then
  say "HTTP integration suite against the Worker"
  # What the runtime answers before the Worker sees a request, none of it Berth's to change:
  # workerd rejects unknown methods (FOO) and unparsable requests with 501, resolves `..` in
  # URLs (so /v2/a/../b is /v2/b), and wrangler dev's proxy reports a body cut short by the
  # client as "worker restarted" (503) and keeps connections open 5 s after
  # `Connection: close`, longer than the raw HEAD test waits.
  skips=(methods_not_allowed_are_405_unsupported invalid_names_are_name_invalid_on_every_endpoint
         forged_upload_ids_are_unknown odd_requests_never_yield_5xx head_responses_have_no_body
         monolithic_with_short_body_is_size_invalid)
  args=(); for s in "${skips[@]}"; do args+=(--skip "$s"); done
  # auth.rs starts its own registry with its config: the auth step runs it against the Worker.
  # body_limit.rs: A's 400 MB cap is too large to send here; edge_test.py tests the cap on B.
  suite_tests=()
  for f in tests/tests/*.rs; do
    case "$f" in tests/tests/auth.rs | tests/tests/body_limit.rs) ;; *) suite_tests+=(--test "$(basename "$f" .rs)") ;; esac
  done
  BERTH_URL=$url_a BERTH_POLICY_URL=$url_a cargo test --release --locked -p berth-tests --no-fail-fast \
    "${suite_tests[@]}" -- "${args[@]}" || failed+=("suite")
fi

if [[ " $steps " == *" clients "* ]]; then
  say "real clients against the Worker (skopeo both ways, docker push/pull)"
  # Through a front that refuses TLS at once: the clients try https first and would otherwise
  # wait 10 s per command for workerd to time out (tests/clients/plain_front.py).
  front=$(free_port)
  python3 tests/clients/plain_front.py "$front" "$port_a" >"$work/front.log" 2>&1 &
  front_pid=$!
  BERTH_URL=http://127.0.0.1:$front bash tests/clients/run.sh skopeo docker || failed+=("clients")
  kill "$front_pid" 2>/dev/null
fi

if [[ " $steps " == *" push "* ]]; then
  say "berth push through the standard protocol (chunks raised to OCI-Chunk-Min-Length)"
  ( set -e
    f=$work/push.bin repo=edge-push-$RANDOM/layer
    head -c $((20 * 1024 * 1024 + 4321)) /dev/urandom >"$f"
    want=sha256:$(sha256sum "$f" | cut -d' ' -f1)
    # --chunk-mib 5 asks for less than the Worker's 8 MiB part size: push must send more.
    got=$("$root/target/release/berth" push --quiet --chunk-mib 5 --state-dir "$work/push-state" \
      "$f" "$url_a/$repo")
    [ "$got" = "$want" ] || { echo "berth push printed [$got], want [$want]"; exit 1; }
    back=sha256:$(curl -sf "$url_a/v2/$repo/blobs/$want" | sha256sum | cut -d' ' -f1)
    [ "$back" = "$want" ] || { echo "pulled blob has digest $back, want $want"; exit 1; }
    echo "  ok: berth push of 20 MiB into the Worker, digest checked on pull"
  ) || failed+=("push")
fi

if [[ " $steps " == *" relay "* ]]; then
  say "whole images into a Worker with a 16 MiB body limit: berth push of a podman index, docker push of a 200 MiB layer through berth relay"
  # R: a plan's body limit, scaled down (most plans: 100 MB) so that docker alone could not push
  # the layer; tests/clients/run.sh's push-image and relay tests, through the TLS-refusing front.
  start r "$port_r" "$inspector_r" --bundle edge/build-serve --var MAX_REQUEST_BODY:16777216
  front=$(free_port)
  python3 tests/clients/plain_front.py "$front" "$port_r" >"$work/front-r.log" 2>&1 &
  front_pid=$!
  BERTH_URL=http://127.0.0.1:$front bash tests/clients/run.sh push-image relay || failed+=("relay")
  kill "$front_pid" 2>/dev/null
fi

if [[ " $steps " == *" auth "* ]]; then
  say "token auth against the Worker: tests/tests/auth.rs and tests/clients/auth.sh"
  # A third wrangler dev with the tests' own config (AUTH_CONFIG), started and stopped by each
  # through tests/edge/launch-auth.sh.
  BERTH_AUTH_LAUNCH=$root/tests/edge/launch-auth.sh BERTH_AUTH_PORT=$(free_port 4) \
    cargo test --release --locked -p berth-tests --test auth || failed+=("auth")
  BERTH_AUTH_LAUNCH=$root/tests/edge/launch-auth.sh BERTH_PORT=$(free_port 4) ISSUER_PORT=$(free_port) \
    bash tests/clients/auth.sh || failed+=("auth-clients")
  # A config that does not compile: every request gets 500 with an OCI error saying what to fix,
  # never a registry serving without the policy it was given. TOML (what `berth auth export`
  # without --json prints) is one: the Worker reads JSON only.
  bad_config() { # bad_config NAME CONFIG EXPECTED-TEXT
    local p wpid code _
    p=$(free_port 2)
    setsid bash "$root/infra/edge/wrangler-dev.sh" --bundle edge/build-serve --ip 127.0.0.1 --port "$p" \
      --inspector-port $((p + 1)) --persist-to "$work/bad-$1-state" --show-interactive-dev-session=false \
      --var UPLOAD_SECRET:edge-test --var "AUTH_CONFIG:$2" >"$work/bad-$1.log" 2>&1 &
    wpid=$!
    for _ in $(seq 1 120); do
      code=$(curl -s -o "$work/bad-$1.body" -w '%{http_code}' "http://127.0.0.1:$p/v2/" || true)
      [ "$code" != 000 ] && break
      sleep 1
    done
    kill -TERM -- "-$wpid" 2>/dev/null; sleep 1; kill -KILL -- "-$wpid" 2>/dev/null
    if [ "$code" = 500 ] && grep -qF "$3" "$work/bad-$1.body" && grep -q '"code":"UNKNOWN"' "$work/bad-$1.body"; then
      echo "  ok: AUTH_CONFIG $1 gets 500 saying what to fix"
    else
      echo "FAIL: AUTH_CONFIG $1: got $code $(cat "$work/bad-$1.body")"; return 1
    fi
  }
  bad_config toml '[token' 'AUTH_CONFIG: auth config: not JSON; the Worker reads its configs as JSON, as `berth auth export --json --config FILE` prints them' \
    || failed+=("auth-config")
  bad_config json '{"token": ' 'AUTH_CONFIG: auth config: EOF while parsing' || failed+=("auth-config")
fi

if [[ " $steps " == *" gc "* ]]; then
  say "garbage collection: the Cron Trigger under wrangler dev --test-scheduled (tests/edge/gc.sh)"
  bash tests/edge/gc.sh || failed+=("gc")
fi

if [[ " $steps " == *" webhooks "* ]]; then
  say "webhooks: delivered through the queue, retried by the Cron Trigger, under wrangler dev (tests/edge/webhooks.sh)"
  bash tests/edge/webhooks.sh || failed+=("webhooks")
fi

if [[ " $steps " == *" replication "* ]]; then
  say "replication: through the queue, retried and scheduled by the Cron Trigger, under wrangler dev (tests/edge/replication.sh)"
  BERTH_BIN=$root/target/release/berth timeout 900 bash tests/edge/replication.sh || failed+=("replication")
fi

if [[ " $steps " == *" ui "* ]]; then
  say "web interface in chromium against the Worker, auth off and on (tests/ui/run.sh)"
  UI_TARGET=worker bash tests/ui/run.sh || failed+=("ui")
fi

if [[ " $steps " == *" split "* ]]; then
  say "the request Worker and the background Worker of a split deployment (tests/edge/split.sh)"
  bash tests/edge/split.sh || failed+=("split")
fi

if [[ " $steps " == *" mirror "* ]]; then
  say "the pull-through cache (MIRROR_TARGET=worker tests/mirror/run.sh)"
  BERTH_BIN=$root/target/release/berth MIRROR_TARGET=worker bash tests/mirror/run.sh || failed+=("mirror")
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "edge: FAILED: ${failed[*]} (logs: $work)"
  exit 1
fi
echo "edge: all passed"
