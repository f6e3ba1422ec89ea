#!/usr/bin/env bash
# Observability with real parts (issue 15): Debian's Prometheus scrapes `berth serve
# --metrics-addr` while skopeo pushes and pulls images; the numbers Prometheus's HTTP API gives
# for the seeds' query (`avg(rate(docker_image_pulls_total[5m])) by (repository)`) and for the
# raw counters must match what was pushed and pulled. Then `promtool check rules` and
# `promtool test rules` on the shipped alert rules (observability/), and a JSON check of the
# Grafana dashboard.
#
#   bash tests/observability/run.sh
#
# Environment:
#   BERTH_BIN   berth binary (default: target/release/berth, else target/debug/berth)
#   KEEP_WORK=1 keep the temporary directory (server and Prometheus logs) even on success
#
# Installs the `prometheus` package with apt-get when promtool or prometheus is missing, with
# a policy-rc.d that forbids starting services (so the package's own service never runs).
# Everything started here listens on 127.0.0.1 on ports the kernel picked, and is stopped by
# PID on exit.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy

step() { printf '==> [%ds] %s\n' "$SECONDS" "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf '  ok: %s\n' "$*"; }

if [ -z "${BERTH_BIN:-}" ]; then
  BERTH_BIN=$root/target/release/berth
  [ -x "$BERTH_BIN" ] || BERTH_BIN=$root/target/debug/berth
fi
[ -x "$BERTH_BIN" ] || fail "no berth binary at $BERTH_BIN (cargo build first, or set BERTH_BIN)"

# --- Prometheus, from Debian -----------------------------------------------------------------
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  step "installing Debian's prometheus package"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # A policy-rc.d that says 101 ("action forbidden") keeps the package's postinst from starting
  # its service. An existing one is left as it is (and is not removed afterwards).
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || true
  $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  [ -z "$made_policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
fi
promtool --version 2>&1 | head -1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-observability.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] || [ -n "${KEEP_WORK:-}" ]; then
    echo "work directory kept: $WORK (berth.log, prometheus.log)"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# --- The shipped rules and dashboard -----------------------------------------------------------
step "promtool check rules / test rules on observability/alerts.yml"
promtool check rules observability/alerts.yml
promtool test rules observability/alerts.test.yml
python3 - observability/grafana-dashboard.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert exprs, "the dashboard has no queries"
assert any("docker_image_pulls_total" in e for e in exprs), "no pulls panel"
assert any("berth_gc_runs_total" in e for e in exprs), "no garbage collection panel"
assert any("berth_replication_copies_total" in e for e in exprs), "no replication panel"
print(f"  ok: dashboard {d['title']!r}: {len(d['panels'])} panels, {len(exprs)} queries")
PY

# --- berth serve and Prometheus ----------------------------------------------------------------
step "starting berth serve (--metrics-addr) and Prometheus on 127.0.0.1"
port=$(bash tests/free-port.sh)
mport=$(bash tests/free-port.sh)
pport=$(bash tests/free-port.sh)
# A quota on obs/** makes storage per namespace a metric (berth_namespace_storage_bytes).
cat >"$WORK/policy.toml" <<'TOML'
[[policies.quotas]]
name = "obs"
repositories = ["obs/**"]
limit = "1 GiB"
TOML
"$BERTH_BIN" serve --addr "127.0.0.1:$port" --data-dir "$WORK/data" --fsync false \
  --metrics-addr "127.0.0.1:$mport" --storage-capacity 1000000000000 \
  --policy-config "$WORK/policy.toml" >"$WORK/berth.log" 2>&1 &
pids+=($!)
bash tests/wait-port.sh "$mport" "berth serve's metrics listener"
cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [ "$root/observability/alerts.yml" ]
scrape_configs:
  - job_name: berth
    static_configs:
      - targets: [ "127.0.0.1:$mport" ]
YML
prometheus --config.file "$WORK/prometheus.yml" --storage.tsdb.path "$WORK/tsdb" \
  --web.listen-address "127.0.0.1:$pport" >"$WORK/prometheus.log" 2>&1 &
pids+=($!)
bash tests/wait-port.sh "$pport" "prometheus"

# query PROMQL: the instant query's result as lines "<repository or ->\t<value>", sorted.
query() {
  curl -fsS "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["status"] == "success", r
for s in sorted(r["data"]["result"], key=lambda s: s["metric"].get("repository", "-")):
    print(s["metric"].get("repository", "-") + "\t" + s["value"][1])
'
}
# until_equal PROMQL EXPECTED: waits (up to 30 s) until the query gives EXPECTED.
until_equal() {
  local got=""
  for _ in $(seq 1 60); do
    got=$(query "$1" 2>/dev/null || true)
    [ "$got" = "$2" ] && { ok "$1 -> $(echo "$got" | tr '\n\t' '; ')"; return 0; }
    sleep 0.5
  done
  fail "$1: expected [$2], got [$got]"
}
until_equal 'up{job="berth"}' "$(printf -- '-\t1')"

# --- Real clients push and pull ----------------------------------------------------------------
step "skopeo pushes and pulls"
reg="127.0.0.1:$port"
L="$WORK/layout"
echo "observability $$ $RANDOM" >"$WORK/hello.txt"
umoci init --layout "$L"
umoci new --image "$L:v1"
umoci insert --image "$L:v1" "$WORK/hello.txt" /hello.txt >/dev/null
sk() { timeout -k 5 120 skopeo "$@"; }
push() { sk copy --quiet --dest-tls-verify=false "oci:$L:v1" "docker://$reg/$1"; }
pull() { sk copy --quiet --src-tls-verify=false "docker://$reg/$1" "oci:$WORK/back-$RANDOM:x"; }
# obs/app: pushed under two tags, pulled 5 times; obs/tool: pushed once, pulled twice;
# obs/quiet: pushed, never pulled. One pull of each first, seen by Prometheus before the rest:
# a counter's first sample is where rate() starts counting.
push obs/app:v1; push obs/app:v2; push obs/tool:v1; push obs/quiet:v1
pull obs/app:v1; pull obs/tool:v1
until_equal 'sum by (repository) (docker_image_pulls_total)' "$(printf 'obs/app\t1\nobs/tool\t1')"
for i in 1 2; do pull obs/app:v1; done
pull obs/tool:v1
pull obs/app:v2; pull obs/app:v2
# What berth itself counted, before Prometheus is asked.
curl -fsS "http://127.0.0.1:$mport/metrics" | grep -E '^docker_image_(pulls|pushes)_total' | sed 's/^/  berth: /'

step "Prometheus's numbers against what was pushed and pulled"
until_equal 'sum by (repository) (docker_image_pulls_total)' "$(printf 'obs/app\t5\nobs/tool\t2')"
until_equal 'sum by (repository) (docker_image_pushes_total)' "$(printf 'obs/app\t2\nobs/quiet\t1\nobs/tool\t1')"
# The seeds' query, unchanged: one series per pulled repository (none for obs/quiet), and the
# repository pulled more often has the higher rate.
seed='avg(rate(docker_image_pulls_total[5m])) by (repository)'
sleep 3
got=$(query "$seed")
echo "$got" | sed 's/^/  seed: /'
[ "$(echo "$got" | cut -f1 | tr '\n' ' ')" = "obs/app obs/tool " ] || fail "$seed: repositories [$got]"
python3 - "$got" <<'PY' || fail "$seed: rates do not follow the pulls"
import sys
rates = dict(line.split("\t") for line in sys.argv[1].splitlines())
app, tool = float(rates["obs/app"]), float(rates["obs/tool"])
assert app > tool > 0, rates
PY
ok "$seed: obs/app > obs/tool > 0"
# The increase the seed's rate stands for, over the window: the pulls made after each series'
# first sample (4 of obs/app, 1 of obs/tool), plus Prometheus's extrapolation at the window's
# ends (at most about one scrape interval's worth on each side).
got=$(query 'increase(docker_image_pulls_total[5m])')
python3 - "$got" <<'PY' || fail "increase over 5m does not match the pulls: $got"
import sys
inc = {r: float(v) for r, v in (l.split("\t") for l in sys.argv[1].splitlines())}
assert 4 <= inc["obs/app"] <= 4 * 1.6 and 1 <= inc["obs/tool"] <= 1.6, inc
PY
ok "increase(docker_image_pulls_total[5m]): $(echo "$got" | tr '\n\t' '; ')"
until_equal 'sum(berth_http_requests_total{route="manifest_put",status="201"})' "$(printf -- '-\t4')"
until_equal 'berth_upload_sessions_open' "$(printf -- '-\t0')"
until_equal 'berth_storage_capacity_bytes' "$(printf -- '-\t1000000000000')"
# Storage per namespace: what the quota counted (GET /v2/_berth/quotas), as Prometheus sees it.
used=$(curl -fsS "http://$reg/v2/_berth/quotas" | python3 -c 'import json,sys; q=json.load(sys.stdin)["quotas"]; print(next(x["used"] for x in q if x["name"]=="obs"))')
[ "$used" -gt 0 ] || fail "the obs quota counted nothing after four pushes"
until_equal 'berth_namespace_storage_bytes{namespace="obs"}' "$(printf -- '-\t%s' "$used")"
until_equal 'berth_namespace_quota_bytes{namespace="obs"}' "$(printf -- '-\t1073741824')"
until_equal 'count(berth_http_request_duration_seconds_count{route="manifest_get",method="GET"}) ' "$(printf -- '-\t1')"
# The rules load in a real Prometheus and nothing fires on this healthy registry.
until_equal 'count(ALERTS{alertstate="firing"}) or vector(0)' "$(printf -- '-\t0')"
curl -fsS "http://127.0.0.1:$pport/api/v1/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
names = sorted(r["name"] for g in groups for r in g["rules"])
assert len(names) >= 3, names
print("  ok: rules loaded by prometheus:", ", ".join(names))
'
# The metrics are not on the registry's address.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$reg/metrics")
[ "$code" = 404 ] || fail "/metrics on the registry's address answered $code"
ok "/metrics is not served on the registry's address (404)"
# The request id: the caller's comes back, and every log line of that request (the audit
# line too) carries it.
hdr=$(curl -s -o /dev/null -D - -H 'X-Request-Id: obs-check-1' -X DELETE "http://$reg/v2/obs/quiet/manifests/v1" | tr -d '\r' | grep -i '^x-request-id:' || true)
[ "$hdr" = "x-request-id: obs-check-1" ] || fail "X-Request-Id not echoed: [$hdr]"
for _ in $(seq 1 20); do grep -q 'request{id=obs-check-1}: audit' "$WORK/berth.log" && break; sleep 0.1; done
grep 'request{id=obs-check-1}' "$WORK/berth.log" | sed 's/^/  log: /'
grep -q 'request{id=obs-check-1}: audit' "$WORK/berth.log" || fail "no audit line with the request id in berth.log"
grep -q 'request{id=obs-check-1}: berth::serve: request' "$WORK/berth.log" || fail "no request line with the request id"
ok "X-Request-Id echoed, and on the request's audit and request log lines"
step "passed"
