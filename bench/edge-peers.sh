#!/usr/bin/env bash
# Berth's Worker next to its closest peer, cloudflare/serverless-registry, and a hello-world
# Worker (the ceiling), all three under the same pinned `wrangler dev` (.tools, real workerd, local
# R2) on 127.0.0.1, measured alternately; prints a Markdown table with targets, then the raw runs.
#
#   bash bench/edge-peers.sh
#   BENCH_ROUNDS=5 BENCH_DURATION=10s bash bench/edge-peers.sh
#
# Env: PEER_SRC (default /work/shared/peers-src/serverless-registry; its parent holds
# serverless-registry.wrangler.toml and serverless-registry.bench-package.json, see its README),
# BENCH_ROUNDS (3: every figure is the median of these), BENCH_DURATION (oha -z, 5s),
# BLOB_MIB (200: the pushed and pulled blob), UPLOAD_MIB and MANIFEST_GETS (bench/edge_cpu.mjs).
#
# - manifest GET by tag (hello: GET /) and blob HEAD, requests/s: oha at 16 and 32 connections;
# - CPU per manifest GET and per MiB of a docker-style upload (POST, one streamed PATCH, PUT
#   ?digest=): bench/edge_cpu.mjs through each Worker's inspector (isolate CPU profiler); the
#   hello Worker's CPU per GET / is the instrument's floor (what answering any GET costs here);
# - push of a BLOB_MIB blob the same docker way (curl, chunked PATCH), MB/s (10^6 bytes), and the
#   growth of the summed VmRSS of the workerd processes in that wrangler's process group (peak
#   while pushing, and after, each minus before); then the first pull (right after the push) and a
#   second pull of it, MB/s (Berth keeps a blob cache in the Workers Cache API);
# - bundle gzip -9 bytes: Berth's request Worker (edge/build-serve, which is what this runs: the
#   Worker that answers requests in a split deployment) from infra/edge-build.sh, the peer's from `wrangler deploy
#   --dry-run --outdir` in its copy.
# The peer needs its runtime deps (npm install from the npm registry once; cached under
# ~/.cache/berth/peer-node_modules/<sha256 of package.json>, so later runs are offline).
# Every wrangler is stopped by its process group on exit; the work dir is removed. Any server that
# does not start, or any answer with an unexpected status, stops the script with an error.
# Local figures on a shared VM (loopback, local R2), not Cloudflare's edge.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
unset AUTH_USER AUTH_PASSWORD AUTH_HEADER
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
wrangler="$root/.tools/node/node_modules/.bin/wrangler"
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
PEER_SRC=${PEER_SRC:-/work/shared/peers-src/serverless-registry}
rounds=${BENCH_ROUNDS:-3} duration=${BENCH_DURATION:-5s} blob_mib=${BLOB_MIB:-200}
export UPLOAD_MIB=${UPLOAD_MIB:-64} MANIFEST_GETS=${MANIFEST_GETS:-500}
peer_auth="Basic $(printf 'hello:world' | base64)"
repo=bench/edge
die() { echo "edge-peers: $*" >&2; exit 1; }
log() { echo "edge-peers: $*" >&2; }

work=$(mktemp -d /tmp/berth-edge-peers.XXXXXX)
pids=() sampler=""
cleanup() {
  [ -z "$sampler" ] || kill "$sampler" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  sleep 2
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
raw="$work/raw.jsonl"
: >"$raw"
record() { printf '{"server":"%s","measure":"%s","round":%s,"value":%s}\n' "$1" "$2" "$3" "$4" >>"$raw"; }

[ -x "$wrangler" ] || die "no $wrangler (run bash infra/edge-build.sh)"
[ -x "$OHA" ] || die "oha not found"
[ -f "$PEER_SRC/index.ts" ] || die "PEER_SRC=$PEER_SRC does not hold serverless-registry"

# --- Berth's bundle (as bench/edge.sh builds it) --------------------------------------------------
log "building Berth's Worker (infra/edge-build.sh)"
berth_bundle=$(bash infra/edge-build.sh 2>"$work/edge-build.log" | grep '^edge serve bundle') \
  || { cat "$work/edge-build.log" >&2; die "infra/edge-build.sh failed"; }
berth_gz=$(sed -n 's/.*gzip \([0-9]*\) bytes.*/\1/p' <<<"$berth_bundle")
[ -n "$berth_gz" ] || die "no gzip size in: $berth_bundle"

# --- the peer: a writable copy, its bench wrangler.toml and package.json, cached node_modules -----
peer_parent=$(dirname "$PEER_SRC")
peer_toml=${PEER_TOML:-$peer_parent/serverless-registry.wrangler.toml}
peer_pkg=${PEER_PACKAGE_JSON:-$peer_parent/serverless-registry.bench-package.json}
if git -C "$PEER_SRC" rev-parse --short HEAD >/dev/null 2>&1; then
  peer_commit=$(git -C "$PEER_SRC" rev-parse --short HEAD)
else
  peer_commit=$(grep -o 'at commit [0-9a-f]\{7,40\}' "$peer_parent/README.md" 2>/dev/null | head -1 | awk '{print $3}')
fi
peer_commit=${peer_commit:-unknown}
peer="$work/peer"
cp -a "$PEER_SRC" "$peer"
cp "$peer_toml" "$peer/wrangler.toml"
cp "$peer_pkg" "$peer/package.json"
rm -f "$peer/wrangler.example.toml" "$peer/wrangler.example.jsonc"
key=$(sha256sum "$peer/package.json" | cut -c1-16)
cache="$HOME/.cache/berth/peer-node_modules/$key"
if [ ! -d "$cache/node_modules" ]; then
  log "npm install of the peer's runtime deps (once; cached in $cache)"
  mkdir -p "$work/npm"
  cp "$peer/package.json" "$work/npm/"
  (cd "$work/npm" && npm install --omit=dev --no-audit --no-fund --loglevel=error >&2) || die "npm install failed"
  mkdir -p "$(dirname "$cache")"
  rm -rf "$cache.tmp" && mkdir "$cache.tmp" && mv "$work/npm/node_modules" "$cache.tmp/" && mv "$cache.tmp" "$cache"
fi
cp -a "$cache/node_modules" "$peer/"
(cd "$peer" && "$wrangler" deploy --dry-run --env dev --outdir "$work/peer-dist" >"$work/peer-dist.log" 2>&1) \
  || { cat "$work/peer-dist.log" >&2; die "peer bundle (wrangler deploy --dry-run) failed"; }
peer_gz=$(cat "$work"/peer-dist/*.js | gzip -9 | wc -c)

cp -a bench/hello "$work/hello"

# --- three wrangler dev, each on a free port pair (HTTP, inspector) -------------------------------
# Everything from here is loopback (npm above may have needed a proxy).
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_CA_BUNDLE
declare -A port inspector pid url
start() { # name dir wrangler-args...
  local name=$1 dir=$2; shift 2
  local p; p=$(bash tests/free-port.sh 2)
  # Berth: the request Worker of a split deployment (edge/build-serve), with wrangler.toml's
  # bindings (infra/edge/wrangler-dev.sh); the others: their own directory's config.
  local dev=("$wrangler" dev)
  [ "$name" != berth ] || dev=(bash "$root/infra/edge/wrangler-dev.sh" --bundle "$root/edge/build-serve")
  port[$name]=$p inspector[$name]=$((p + 1)) url[$name]="http://127.0.0.1:$p"
  (cd "$dir" && exec setsid "${dev[@]}" --ip 127.0.0.1 --port "$p" --inspector-port "$((p + 1))" \
    --persist-to "$work/state-$name" --show-interactive-dev-session=false --log-level warn "$@" \
    >"$work/wrangler-$name.log" 2>&1) &
  pid[$name]=$!
  pids+=("$!")
}
# Waits for the server to answer PATH with the status; fails if wrangler exits or 180 s pass.
ready() { # name path status [curl args]
  local name=$1 path=$2 want=$3 code=""; shift 3
  for _ in $(seq 1 180); do
    kill -0 "${pid[$name]}" 2>/dev/null || { cat "$work/wrangler-$name.log" >&2; die "$name: wrangler dev exited"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "$@" "${url[$name]}$path" || true)
    [ "$code" = "$want" ] && return 0
    sleep 1
  done
  tail -20 "$work/wrangler-$name.log" >&2
  die "$name: $path answered ${code:-nothing}, not $want, after 180 s"
}
log "starting three wrangler dev"
start berth "$root" --var "UPLOAD_SECRET:bench-$RANDOM$RANDOM" --var MAX_REQUEST_BODY:400000000
start peer "$peer" --env dev
start hello "$work/hello"
ready berth /v2/ 200
ready peer /v2/ 401
ready peer /v2/ 200 -H "Authorization: $peer_auth"
ready hello / 200
[ "$(curl -sf "${url[hello]}/")" = ok ] || die "hello: GET / does not answer ok"

# --- a small image (config, one 4 KiB layer, manifest as tag v1) in both registries ---------------
seed() { # name auth-header-value
  python3 - "${url[$1]}" "$repo" "$2" <<'PY'
import hashlib, json, sys, urllib.request
url, repo, auth = sys.argv[1:]
h = {"Authorization": auth} if auth else {}
def call(method, path, data=None, headers={}, want=(201,)):
    r = urllib.request.urlopen(urllib.request.Request(url + path, data=data, method=method, headers={**h, **headers}))
    if r.status not in want:
        sys.exit(f"{method} {path}: {r.status}")
    return r
def push(data):
    # Docker's two-step monolithic upload (the peer has no single-POST upload).
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = call("POST", f"/v2/{repo}/blobs/uploads/", want=(202,)).headers["Location"]
    loc = loc if loc.startswith("/") else "/" + loc.split("/", 3)[3]
    call("PUT", f"{loc}{'&' if '?' in loc else '?'}digest={d}", data, {"Content-Type": "application/octet-stream"})
    return d, len(data)
cfg, layer = push(b'{"architecture":"amd64","os":"linux"}'), push(b"x" * 4096)
m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg[0], "size": cfg[1]},
     "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer[0], "size": layer[1]}]}
call("PUT", f"/v2/{repo}/manifests/v1", json.dumps(m).encode(), {"Content-Type": m["mediaType"]})
print(layer[0])
PY
}
layer=$(seed berth "") || die "berth: seeding failed"
[ "$(seed peer "$peer_auth")" = "$layer" ] || die "peer: seeding failed"
accept="Accept: application/vnd.oci.image.manifest.v1+json"
declare -A auth=([berth]="X-Bench: 1" [peer]="Authorization: $peer_auth" [hello]="X-Bench: 1")
for s in berth peer; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "${auth[$s]}" -H "$accept" "${url[$s]}/v2/$repo/manifests/v1" || true)
  [ "$code" = 200 ] || die "$s: GET of the manifest answered $code"
  code=$(curl -s -I -o /dev/null -w '%{http_code}' -H "${auth[$s]}" "${url[$s]}/v2/$repo/blobs/$layer" || true)
  [ "$code" = 200 ] || die "$s: HEAD of the layer answered $code"
done

# --- requests/s -----------------------------------------------------------------------------------
oha_rps() { # name measure round conns method path
  local out="$work/oha.json"
  "$OHA" -z "$duration" -c "$4" --no-tui --output-format json -m "$5" -H "${auth[$1]}" -H "$accept" \
    "${url[$1]}$6" >"$out" || die "$1: oha failed"
  python3 - "$out" "$1 $2" <<'PY' || exit 1
import json, sys
o = json.load(open(sys.argv[1]))
codes = o.get("statusCodeDistribution", {})
if set(codes) != {"200"} or o["summary"].get("successRate", 1) < 1:
    sys.exit(f"edge-peers: {sys.argv[2]}: status codes {codes}, success rate {o['summary'].get('successRate')}")
print(round(o["summary"]["requestsPerSec"], 1))
PY
}
# --- push and pulls of a BLOB_MIB blob ------------------------------------------------------------
rss_kb() { # sum of VmRSS of the workerd processes in the process group
  local s=0 v
  for p in $(pgrep -g "$1" -x workerd); do
    v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
head -c $((blob_mib << 20)) /dev/urandom >"$work/blob.base"
push_pull() { # name round
  local s=$1 r=$2 file="$work/blob" digest loc code t0 t1 before after peak
  # A new blob every time (first 16 bytes differ), so the first pull is never served from a cache.
  { head -c 16 /dev/urandom; tail -c +17 "$work/blob.base"; } >"$file"
  digest="sha256:$(sha256sum "$file" | cut -d' ' -f1)"
  before=$(rss_kb "${pid[$s]}")
  [ "$before" -gt 0 ] || die "$s: no workerd process found in process group ${pid[$s]}"
  ( peak=0; while :; do v=$(rss_kb "${pid[$s]}"); [ "$v" -gt "$peak" ] && peak=$v && echo "$peak" >"$work/peak"; sleep 0.2; done ) &
  sampler=$!
  t0=$(date +%s.%N)
  loc=$(curl -s -D - -o /dev/null -X POST -H "${auth[$s]}" "${url[$s]}/v2/$repo/blobs/uploads/" | tr -d '\r' \
    | awk 'tolower($1) == "location:" {print $2}')
  [ -n "$loc" ] || die "$s: POST upload gave no Location"
  loc=${loc#"${url[$s]}"}
  # A docker-style PATCH: the whole blob streamed, chunked, without Content-Length.
  code=$(curl -s -D "$work/patch.h" -o "$work/patch.body" -w '%{http_code}' -X PATCH -H "${auth[$s]}" \
    -H "Content-Type: application/octet-stream" -T - "${url[$s]}$loc" <"$file")
  [ "$code" = 202 ] || die "$s: PATCH answered $code: $(head -c 300 "$work/patch.body")"
  loc=$(tr -d '\r' <"$work/patch.h" | awk 'tolower($1) == "location:" {print $2}')
  loc=${loc#"${url[$s]}"}
  case $loc in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
  code=$(curl -s -o "$work/put.body" -w '%{http_code}' -X PUT -H "${auth[$s]}" "${url[$s]}$loc")
  [ "$code" = 201 ] || die "$s: PUT answered $code: $(head -c 300 "$work/put.body")"
  t1=$(date +%s.%N)
  after=$(rss_kb "${pid[$s]}")
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  sampler=""
  peak=$(cat "$work/peak" 2>/dev/null || echo "$after"); rm -f "$work/peak"
  [ "$peak" -lt "$after" ] && peak=$after
  local bytes=$((blob_mib << 20))
  record "$s" push_mbps "$r" "$(python3 -c "print(round($bytes / 1e6 / ($t1 - $t0), 1))")"
  record "$s" push_rss_peak_mib "$r" "$(( (peak - before) / 1024 ))"
  record "$s" push_rss_after_mib "$r" "$(( (after - before) / 1024 ))"
  for which in first second; do
    read -r code size speed < <(curl -s -o /dev/null -w '%{http_code} %{size_download} %{speed_download}\n' \
      -H "${auth[$s]}" "${url[$s]}/v2/$repo/blobs/$digest")
    [ "$code" = 200 ] && [ "$size" = "$bytes" ] || die "$s: $which pull answered $code with $size bytes, not $bytes"
    record "$s" "pull_${which}_mbps" "$r" "$(python3 -c "print(round($speed / 1e6, 1))")"
  done
}

cpu() { # name round
  local out
  if [ "$1" = hello ]; then
    # The instrument's floor: a Worker that reads nothing and answers GET / with "ok".
    out=$(GET_PATH=/ UPLOAD_MIB=0 WS_MODULE="$root/.tools/node/node_modules/ws" node bench/edge_cpu.mjs \
      "${inspector[hello]}" "${url[hello]}" "$repo" v1) || die "hello: edge_cpu.mjs failed"
    for k in cpu_ms_per_manifest_get program_ms_per_manifest_get; do record hello "$k" "$2" "$(jq -r ".$k" <<<"$out")"; done
    return
  fi
  if [ "$1" = peer ]; then
    export AUTH_HEADER="$peer_auth"
  else
    unset AUTH_HEADER
  fi
  out=$(WS_MODULE="$root/.tools/node/node_modules/ws" node bench/edge_cpu.mjs "${inspector[$1]}" "${url[$1]}" "$repo" v1) \
    || die "$1: edge_cpu.mjs failed"
  unset AUTH_HEADER
  for k in cpu_ms_per_manifest_get program_ms_per_manifest_get cpu_ms_per_upload_mib program_ms_per_upload_mib; do
    record "$1" "$k" "$2" "$(jq -r ".$k" <<<"$out")"
  done
}

for r in $(seq 1 "$rounds"); do
  # Alternate who goes first, so drift on the shared machine does not favour one server.
  if [ $((r % 2)) = 1 ]; then order="berth peer hello"; else order="hello peer berth"; fi
  log "round $r/$rounds ($order)"
  for c in 16 32; do
    for s in $order; do
      if [ "$s" = hello ]; then path=/; else path="/v2/$repo/manifests/v1"; fi
      v=$(oha_rps "$s" manifest-GET "$r" "$c" GET "$path") || exit 1
      record "$s" "get_rps_c$c" "$r" "$v"
      [ "$s" = hello ] && continue
      v=$(oha_rps "$s" blob-HEAD "$r" "$c" HEAD "/v2/$repo/blobs/$layer") || exit 1
      record "$s" "head_rps_c$c" "$r" "$v"
    done
  done
  for s in $order; do cpu "$s" "$r"; done
  for s in $order; do [ "$s" = hello ] || push_pull "$s" "$r"; done
done
record berth bundle_gzip 0 "$berth_gz"
record peer bundle_gzip 0 "$peer_gz"

python3 - "$raw" "$(date -u +%Y-%m-%dT%H:%MZ)" "$(git rev-parse --short HEAD)" "$peer_commit" \
  "$("$wrangler" --version 2>/dev/null | tail -1)" "$rounds" "$duration" "$blob_mib" "$UPLOAD_MIB" "$MANIFEST_GETS" <<'PY'
import json, statistics, sys
path, date, commit, peer_commit, wrangler, rounds, duration, blob_mib, upload_mib, gets = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
def med(server, measure):
    v = [r["value"] for r in rows if r["server"] == server and r["measure"] == measure]
    return statistics.median(v) if v else None
def fmt(x, d=0):
    return "–" if x is None else f"{x:,.{d}f}"
def ratio(a, b):
    return "–" if a is None or not b else f"{a / b:.2f}x"
def at_least(actual, target, what):
    if actual >= target: return f"{what}: met"
    return f"{what}: missed by {(target - actual) / target * 100:.0f}%"
def at_most(actual, target, what):
    if actual <= target: return f"{what}: met"
    return f"{what}: missed by {(actual - target) / target * 100:.0f}%"
print(f"Berth {commit} vs cloudflare/serverless-registry {peer_commit} vs a hello Worker; wrangler {wrangler} "
      f"(wrangler dev, local R2) on 127.0.0.1, {date}; medians of {rounds} rounds")
print()
print("| measure | Berth Worker | serverless-registry | hello Worker | Berth / peer | Berth / hello | target |")
print("|---|---:|---:|---:|---:|---:|---|")
for c in (16, 32):
    b, p, h = med("berth", f"get_rps_c{c}"), med("peer", f"get_rps_c{c}"), med("hello", f"get_rps_c{c}")
    t = at_least(b / p, 1.5, "≥ 1.5x peer") + "; " + at_least(b / h, 0.6, "≥ 60% of hello")
    print(f"| manifest GET by tag, req/s, {c} conns (oha -z {duration}; hello: GET /) | {fmt(b)} | {fmt(p)} | {fmt(h)} | {ratio(b, p)} | {ratio(b, h)} | {t} |")
for c in (16, 32):
    b, p = med("berth", f"head_rps_c{c}"), med("peer", f"head_rps_c{c}")
    print(f"| blob HEAD, req/s, {c} conns | {fmt(b)} | {fmt(p)} | – | {ratio(b, p)} | – | {at_least(b / p, 1, '≥ peer')} |")
b, p, h = med("berth", "cpu_ms_per_manifest_get"), med("peer", "cpu_ms_per_manifest_get"), med("hello", "cpu_ms_per_manifest_get")
bp, pp, hp = med("berth", "program_ms_per_manifest_get"), med("peer", "program_ms_per_manifest_get"), med("hello", "program_ms_per_manifest_get")
hello_cpu = "–" if h is None else f"{h:.3f} (+ {hp:.3f})"
print(f"| CPU per manifest GET, ms (isolate profiler, {gets} GETs; hello: GET /; + V8 \"(program)\") | {b:.3f} (+ {bp:.3f}) | {p:.3f} (+ {pp:.3f}) | {hello_cpu} | {ratio(b, p)} | {ratio(b, h)} | {at_most(b, 1, '≤ 1 ms')} |")
b, p = med("berth", "cpu_ms_per_upload_mib"), med("peer", "cpu_ms_per_upload_mib")
bp, pp = med("berth", "program_ms_per_upload_mib"), med("peer", "program_ms_per_upload_mib")
print(f"| CPU per MiB uploaded, ms ({upload_mib} MiB: POST, streamed PATCH, PUT; + \"(program)\") | {b:.3f} (+ {bp:.3f}) | {p:.3f} (+ {pp:.3f}) | – | {ratio(b, p)} | – | {at_most(b, 3, '≤ 3 ms')} |")
b, p = med("berth", "pull_first_mbps"), med("peer", "pull_first_mbps")
print(f"| first pull of a {blob_mib} MiB blob (right after its push), MB/s | {fmt(b, 1)} | {fmt(p, 1)} | – | {ratio(b, p)} | – | {at_least(b / p, 1, '≥ peer')} |")
b, p = med("berth", "pull_second_mbps"), med("peer", "pull_second_mbps")
print(f"| second pull of it, MB/s | {fmt(b, 1)} | {fmt(p, 1)} | – | {ratio(b, p)} | – | |")
b, p = med("berth", "push_mbps"), med("peer", "push_mbps")
print(f"| docker-style push of {blob_mib} MiB (POST, one chunked PATCH, PUT), MB/s | {fmt(b, 1)} | {fmt(p, 1)} | – | {ratio(b, p)} | – | |")
b, p = med("berth", "push_rss_peak_mib"), med("peer", "push_rss_peak_mib")
ba, pa = med("berth", "push_rss_after_mib"), med("peer", "push_rss_after_mib")
print(f"| workerd RSS growth during that push, MiB: peak (after) | {fmt(b)} ({fmt(ba)}) | {fmt(p)} ({fmt(pa)}) | – | {ratio(b, p)} | – | |")
b, p = med("berth", "bundle_gzip"), med("peer", "bundle_gzip")
print(f"| bundle, gzip -9 bytes | {fmt(b)} | {fmt(p)} | – | {ratio(b, p)} | – | {at_most(b, 250_000, '≤ 250 KB')} |")
print()
print("Raw runs (server, measure: value per round):")
print()
print("```")
keys = []
for r in rows:
    if (r["server"], r["measure"]) not in keys: keys.append((r["server"], r["measure"]))
for s, m in sorted(keys):
    print(f"{s:6} {m:30} " + " ".join(str(r["value"]) for r in rows if r["server"] == s and r["measure"] == m))
print("```")
PY
