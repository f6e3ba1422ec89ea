#!/usr/bin/env bash
# The web interface, end to end (docs/ui.md):
#   1. rebuilds web/dist from web/package-lock.json (npm ci) and fails if the committed copy
#      differs, or the assets exceed 150 KiB gzip (web/size.mjs prints the size);
#   2. starts `berth serve` (auth off, with the tag policies and quota below) on a free 127.0.0.1
#      port, pushes a two-platform index, a signature referrer, 60 small repositories and three
#      tags a second apart (push-time sort) with skopeo and curl, and drives Debian's chromium
#      with playwright-core through tests/ui/ui.test.mjs (open mode; screenshots into docs/ui/
#      when SHOTS=1);
#   3. the same with auth on (anonymous, a reader, a writer; a quota for the storage panel, a
#      webhook endpoint and a replication destination that are never reached, for the Webhooks
#      panel's failed deliveries and the Replication panel's failed last result).
#
#   bash tests/ui/run.sh
#   UI_TARGET=worker bash tests/ui/run.sh   # against the Worker under `wrangler dev` (run
#                                           # infra/edge-build.sh first; tests/edge/run.sh's `ui` step)
# UI_TARGET=worker starts `wrangler dev` instead of `berth serve` (auth on: the same config as
# AUTH_CONFIG), each behind tests/clients/plain_front.py, and stops it by its process group.
# Environment: BERTH_BIN (default <repo>/target/release/berth, as the other suites), SHOTS=1 (refresh docs/ui/*.png),
# KEEP_WORK=1 (keep the temporary directory). Installs chromium, skopeo and jq with apt-get and
# web/node_modules with npm ci only when missing. Everything started here is stopped by PID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
BERTH_BIN=${BERTH_BIN:-$root/target/release/berth}
UI_TARGET=${UI_TARGET:-serve}
case "$UI_TARGET" in serve | worker) ;; *) echo "UI_TARGET must be serve or worker" >&2; exit 2 ;; esac
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v skopeo >/dev/null || need+=(skopeo)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -x "$BERTH_BIN" ] || { echo "berth binary not found: $BERTH_BIN (cargo build, or set BERTH_BIN)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/berth-ui.XXXXXX)
export WORK
pids=()
groups=() # process groups (wrangler dev and its workerd)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for g in "${groups[@]}"; do
    kill -TERM -- "-$g" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$g" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$g" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-}" = 1 ] || [ "${ok:-0}" != 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# 1. The committed assets are what the lockfile builds.
cd "$root/web"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npx tsc --noEmit
npx vite build --logLevel warn --outDir "$WORK/dist" --emptyOutDir
node size.mjs "$WORK/dist"
diff -r "$root/web/dist" "$WORK/dist" \
  || { echo "web/dist is not what web/ builds: run 'npm run build' in web/ and commit web/dist" >&2; exit 1; }
echo "web/dist is current"
cd "$root"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# start NAME [--auth-config FILE]: the registry on a free port; sets REG.
start() {
  local name=$1; shift
  local port; port=$(free_port)
  REG=127.0.0.1:$port
  local tries=100
  if [ "$UI_TARGET" = worker ]; then
    start_worker "$name" "$port" "$@"
    tries=1200 # wrangler dev takes seconds to start workerd
  else
    "$BERTH_BIN" serve --addr "$REG" --data-dir "$WORK/data-$name" "$@" >"$WORK/server-$name.log" 2>&1 &
    pids+=($!)
  fi
  for _ in $(seq "$tries"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/" || true)
    [ "$code" = 200 ] || [ "$code" = 401 ] && return 0
    sleep 0.1
  done
  cat "$WORK/server-$name.log"; echo "the registry ($name, $UI_TARGET) did not come up" >&2; exit 1
}
# start_worker NAME PORT [--auth-config FILE | --policy-config FILE]: `wrangler dev` (its own session, so its process
# group holds workerd too) as tests/edge/run.sh starts it, behind tests/clients/plain_front.py on
# PORT (skopeo tries TLS first; workerd would make it wait 10 s). The auth config goes in as
# AUTH_CONFIG, inlined by `berth auth export --json` as tests/edge/launch-auth.sh does; a
# policy file as POLICY_CONFIG, through the same command (the Worker reads JSON only).
start_worker() {
  local name=$1 port=$2; shift 2
  local vars=() wport insp
  if [ "${1:-}" = --auth-config ]; then
    vars+=(--var "AUTH_CONFIG:$("$BERTH_BIN" auth export --json --config "$2")")
  elif [ "${1:-}" = --policy-config ]; then
    vars+=(--var "POLICY_CONFIG:$("$BERTH_BIN" auth export --json --config "$2")")
  fi
  wport=$(free_port) insp=$(free_port)
  # infra/edge/wrangler-dev.sh: the repository's wrangler.toml, on the bundle built before.
  setsid bash "$root/infra/edge/wrangler-dev.sh" --ip 127.0.0.1 --port "$wport" \
    --inspector-port "$insp" --persist-to "$WORK/state-$name" --show-interactive-dev-session=false \
    --var "UPLOAD_SECRET:ui-test-$RANDOM$RANDOM" "${vars[@]}" >"$WORK/server-$name.log" 2>&1 &
  groups+=($!)
  python3 "$root/tests/clients/plain_front.py" "$port" "$wport" >"$WORK/front-$name.log" 2>&1 &
  pids+=($!)
}
fixture=$(node "$here/fixture.mjs" "$WORK/layout")
INDEX=$(jq -r .index <<<"$fixture")
SIG=$(jq -r .sig <<<"$fixture")
INDEX_TOTAL=$(jq -r .indexTotal <<<"$fixture")
export INDEX_TOTAL
# push CREDS SRC_REF DEST: skopeo copy from the fixture layout.
push() {
  local creds=$1; shift
  skopeo copy --quiet --all --dest-tls-verify=false ${creds:+--dest-creds "$creds"} "oci:$WORK/layout:$1" "docker://$REG/$2"
}

# 2. Auth off, with policies the tags page shows (immutable demo/multi:v1, refused latest, a
# retention rule that keeps everything here) and a quota for the storage panel.
cat >"$WORK/policy.toml" <<'EOF'
[[policies.immutable_tags]]
repositories = ["demo/multi"]
tags = ["v1"]

[[policies.refused_tags]]
repositories = ["demo/**"]
tags = ["latest"]
message = "push a version tag"

[[policies.retention]]
repositories = ["demo/**"]
keep_last = 100

# ret/app: two tags a second apart, of which keep_last = 1 lets the older go (the preview).
[[policies.retention]]
repositories = ["ret/**"]
keep_last = 1

[[policies.quotas]]
name = "demo"
repositories = ["demo/**"]
limit = "1 GiB"
EOF
start open --policy-config "$WORK/policy.toml"
push "" v1 demo/multi:v1
push "" v1 demo/multi:old
push "" single demo/multi:single
push "" sig "demo/multi@$SIG"
seq -f '%03g' 0 59 | xargs -P 4 -I {} skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/layout:single" "docker://$REG/many/app-{}:v1"
# 55 tags: two pages of the tag list. One push, then the same manifest under more tags, one at
# a time (concurrent writes of one manifest are refused with 429 and a retry hint).
push "" single demo/many-tags:t00
ct="application/vnd.oci.image.manifest.v1+json"
curl -sf -H "Accept: $ct" "http://$REG/v2/demo/many-tags/manifests/t00" -o "$WORK/single.json"
for t in $(seq -f 't%02g' 1 54); do
  curl -sf -X PUT -H "Content-Type: $ct" --data-binary "@$WORK/single.json" "http://$REG/v2/demo/many-tags/manifests/$t" >/dev/null
done
# Three tags a second apart (push times are whole seconds), names not in push order.
push "" single demo/timed:b-first
curl -sf -H "Accept: $ct" "http://$REG/v2/demo/timed/manifests/b-first" -o "$WORK/timed.json"
for t in a-second c-third; do
  sleep 1.1
  curl -sf -X PUT -H "Content-Type: $ct" --data-binary "@$WORK/timed.json" "http://$REG/v2/demo/timed/manifests/$t" >/dev/null
done
push "" single ret/app:old
sleep 1.1
push "" single ret/app:new
shots=""
[ "${SHOTS:-}" = 1 ] && shots="$root/docs/ui"
node "$here/ui.test.mjs" open "$REG" "$INDEX" "$SIG" "$shots"

# 3. Auth on.
CONF=$WORK/auth.toml
ALICE_PW=alice-$RANDOM-$RANDOM BOB_PW=bob-$RANDOM-$RANDOM
export ALICE_PW BOB_PW
"$BERTH_BIN" key generate --kid k1 --config "$CONF" >/dev/null
echo "$ALICE_PW" | "$BERTH_BIN" user add alice --group devs --config "$CONF" 2>/dev/null
echo "$BOB_PW" | "$BERTH_BIN" user add bob --group readers --config "$CONF" 2>/dev/null
cat >>"$CONF" <<'EOF'

[catalog]
principals = ["group:devs"]

[[access]]
repositories = ["public/**"]
public = true

[[access]]
repositories = ["team/**", "public/**"]
principals = ["group:devs"]
actions = ["pull", "push", "delete"]

[[access]]
repositories = ["team/**"]
principals = ["group:readers"]
actions = ["pull"]

[[policies.quotas]]
name = "team"
repositories = ["team/**"]
limit = "1 GiB"

# A replication destination that is never there either: the copies of team/** pushes fail, and
# the Replication panel shows the rule's last result.
[[policies.replication]]
name = "dr"
repositories = ["team/**"]
destination = "http://127.0.0.1:9"
prefix = "copies"

# And a sync rule whose source is never there: its first run fails.
[[policies.sync]]
name = "hub"
source = "http://127.0.0.1:9"
repositories = ["library/alpine"]
prefix = "hub"
every = "1h"

# A receiver that is never there (port 9, discard, closed): team/** pushes fail at once and,
# with one attempt, show as failed deliveries in the Webhooks panel.
[webhooks]
max_attempts = 1
[[webhooks.endpoints]]
name = "ci"
url = "http://127.0.0.1:9/hook"
secret = "ui-test-secret-0123456789"
allow_private = true
repositories = ["team/**"]
events = ["push"]
EOF
start auth --auth-config "$CONF"
push "alice:$ALICE_PW" single public/app:v1
push "alice:$ALICE_PW" single team/secret:v1
push "alice:$ALICE_PW" single team/secret:old
node "$here/ui.test.mjs" auth "$REG" "" "" "$shots"
ok=1
echo "ui: all passed"
