#!/usr/bin/env bash
# Garbage collection time and peak memory on `berth serve`'s store (issue 14; docs/gc.md).
#
#   cargo build --release -p berth && bash bench/gc.sh            # 1,000/10,000, 3,000/30,000, 10,000/100,000
#   bash bench/gc.sh 2000:20000 5000:50000                        # MANIFESTS:BLOBS pairs
#
# For each size: a fresh data directory, `berth serve --fsync false` on a free 127.0.0.1 port,
# bench/gc_store.py fills it through the HTTP API (MANIFESTS image manifests in up to 100
# repositories, BLOBS distinct 64-byte blobs, each manifest 9 own blobs and 2 shared by its
# repository; see that file) and deletes 10 % of the manifests. The server stops, then
# `/usr/bin/time -v berth gc --grace 0` runs on the directory (settle is 0 for `berth gc`): the
# wall time and the process's peak RSS (Maximum resident set size = VmHWM) are the figures. The
# run fails unless GC deleted exactly the content the deleted manifests owned, with its bytes,
# and a sample of the kept images still pulls with every digest verified.
# BERTH_BIN (default target/release/berth), GC_BENCH_DIR (default /tmp) for the scratch stores,
# which are removed after each size; GC_BENCH_THREADS client threads (16). The environment
# reaches `berth gc` unchanged (BENCHMARKS.md also measures MALLOC_ARENA_MAX=1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
BERTH=${BERTH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/berth}
[ -x "$BERTH" ] || { echo "bench/gc.sh: no berth binary (cargo build --release -p berth, or set BERTH_BIN)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench/gc.sh: needs /usr/bin/time (GNU time)" >&2; exit 1; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000:10000 3000:30000 10000:100000)

server=""
work=""
cleanup() {
  # `if`, not `&&`: the trap's last status would become the script's.
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  if [ -n "$work" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

serve() { # serve DATA-DIR: starts berth serve, sets $server and $url
  local port
  port=$(bash tests/free-port.sh)
  "$BERTH" serve --addr "127.0.0.1:$port" --data-dir "$1" --fsync false >>"$work/serve.log" 2>&1 &
  server=$!
  url="http://127.0.0.1:$port"
  bash tests/wait-port.sh "$port" "berth serve" >/dev/null
}
stop() { kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""; }

rows=()
for size in "${sizes[@]}"; do
  manifests=${size%%:*} blobs=${size##*:}
  work=$(mktemp -d "${GC_BENCH_DIR:-/tmp}/berth-gcbench.XXXXXX")
  echo "--- $manifests manifests, $blobs blobs (store in $work)"
  serve "$work/data"
  store=$(python3 bench/gc_store.py "$url" "$manifests" "$blobs" 10 "${GC_BENCH_THREADS:-16}")
  echo "store: $store"
  stop
  disk_before=$(du -sk "$work/data" | cut -f1)
  # The metadata database GC reads (redb keeps pages it read in its own cache).
  redb_kb=$(( $(stat -c %s "$work/data/meta.redb") / 1024 ))
  /usr/bin/time -v "$BERTH" gc --data-dir "$work/data" --grace 0 --json >"$work/report.json" 2>"$work/time.txt"
  disk_after=$(du -sk "$work/data" | cut -f1)
  report=$(cat "$work/report.json")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{print $2}' "$work/time.txt")
  rss_kb=$(awk -F': ' '/Maximum resident set size/{print $2}' "$work/time.txt")
  cpu=$(awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{printf "%.1f", u+s}' "$work/time.txt")
  echo "gc: wall $wall, cpu ${cpu}s, peak RSS ${rss_kb} KiB; report $(tr -d ' \n' <"$work/report.json")"
  # GC did exactly the work the store left it, and the kept images are intact.
  python3 - "$store" "$report" <<'PY'
import json, sys
store, report = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert report["finished"], report
assert report["content_deleted"] == store["expected_content_deleted"], (report["content_deleted"], store["expected_content_deleted"])
assert report["bytes_freed"] == store["expected_bytes_freed"], (report["bytes_freed"], store["expected_bytes_freed"])
PY
  serve "$work/data"
  python3 - "$url" "$store" <<'PY'
import hashlib, http.client, json, sys, urllib.parse
url, store = sys.argv[1], json.loads(sys.argv[2])
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
def get(path, accept=None):
    c.request("GET", path, headers={"Accept": accept} if accept else {})
    r = c.getresponse()
    return r.status, r.read()
for ref in store["kept_sample"]:
    repo, tag = ref.rsplit(":", 1)
    status, body = get(f"/v2/{repo}/manifests/{tag}", "application/vnd.oci.image.manifest.v1+json")
    assert status == 200, (ref, status)
    m = json.loads(body)
    for d in [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]:
        status, blob = get(f"/v2/{repo}/blobs/{d}")
        assert status == 200 and "sha256:" + hashlib.sha256(blob).hexdigest() == d, (ref, d, status)
print(f"pulled and verified {len(store['kept_sample'])} kept images")
PY
  stop
  rows+=("| $manifests | $blobs | $(python3 -c "import json,sys; s=json.loads(sys.argv[1]); print(s['deleted_manifests'])" "$store") | $(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(r['content_deleted'], '/', r['bytes_freed'])" "$report") | $wall | ${cpu} s | $((rss_kb / 1024)) MiB (${rss_kb} KiB) | $((redb_kb / 1024)) MiB | $((disk_before / 1024)) -> $((disk_after / 1024)) MiB |")
  rm -rf "$work"
  work=""
done

echo
echo "| manifests | blobs | manifests deleted | content deleted / bytes freed | gc wall time | gc CPU (user+sys) | gc peak RSS (VmHWM) | meta.redb | data dir before -> after |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
