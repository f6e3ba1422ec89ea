#!/usr/bin/env bash
# Berth vs. CNCF Distribution (docker-registry 2.8), side by side on this machine, same clients.
#
#   bench/run.sh                      # berth = $BERTH_BIN (default <repo>/target/release/berth)
#   bench/run.sh --wait-for-berth 600 # wait up to 600 s for the berth binary to appear
#   bench/run.sh --self-test          # both sides docker-registry: checks the harness, not berth
#
# Measures (1) manifest GET by tag and blob HEAD with `oha -z 10s -c 32`, (2) a 1 GiB monolithic
# blob push (POST + one streamed PUT) and its pull, median of 3, against the one-core sha256
# ceiling from `openssl speed`, (3) each server's peak RSS (VmHWM) during (2). Writes a Markdown
# report to stdout and bench/out/latest.md (raw results and server logs in bench/out/latest-raw/).
#
# Environment: BERTH_BIN, BERTH_ARGS (extra `berth serve` flags, e.g. "--fsync false"),
# BERTH_LOG (default warn), DIST_BIN (default docker-registry), OHA (default oha in PATH or
# ~/.cargo/bin/oha). For quick harness checks only: BENCH_DURATION (10s), BENCH_CONNS (32),
# BENCH_BLOB_MIB (1024), BENCH_RUNS (3); the report flags non-default values. BENCH_PREFAULT_MIB:
# memory touched and freed right before each push (default 1.5 x blob; 0 = off; see below).
# Everything listens on and talks to 127.0.0.1 only, on free ports in 5200-5299.
# Exit status: 0 when both registries behaved (whether or not targets are met), 1 when a registry
# misbehaved (details in the report's Problems section), 2 on bad usage.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ORIG_ARGS=("$@")
SET_ENV=""   # the overrides the caller set, for the report's exact command
for v in BERTH_BIN BERTH_ARGS BERTH_LOG DIST_BIN OHA BENCH_DURATION BENCH_CONNS BENCH_BLOB_MIB BENCH_RUNS BENCH_PREFAULT_MIB; do
    [ -n "${!v+x}" ] && SET_ENV+="$v='${!v}' "
done
BERTH_BIN=${BERTH_BIN:-$ROOT/target/release/berth}
DIST_BIN=${DIST_BIN:-$(command -v docker-registry || echo /usr/bin/docker-registry)}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-32}
BLOB_MIB=${BENCH_BLOB_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
BERTH_ARGS=${BERTH_ARGS:-}
export BERTH_LOG=${BERTH_LOG:-warn}
SELF_TEST=0
WAIT_BERTH=0
PY=${PYTHON:-python3}
CLIENT="$HERE/client.py"
REPO=bench/app
TAG=v1
BIGREPO=bench/big

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --self-test) SELF_TEST=1 ;;
        --wait-for-berth) WAIT_BERTH=${2:?--wait-for-berth needs seconds}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
fail() { log "FATAL: $*"; exit 1; }

# The benchmark's own tools (reference registry, oha, wrk): the test command does not install them.
bash "$ROOT/infra/install-deps.sh" --bench >&2 || fail "infra/install-deps.sh --bench failed"

for tool in "$OHA" curl jq openssl "$PY" "$DIST_BIN"; do
    command -v "$tool" >/dev/null 2>&1 || fail "missing tool: $tool"
done
if [ "$SELF_TEST" = 0 ]; then
    waited=0
    while [ ! -x "$BERTH_BIN" ] && [ "$waited" -lt "$WAIT_BERTH" ]; do
        [ "$waited" = 0 ] && log "waiting up to ${WAIT_BERTH}s for $BERTH_BIN"
        sleep 5; waited=$((waited + 5))
    done
    [ -x "$BERTH_BIN" ] || fail "no berth binary at $BERTH_BIN (build it, set BERTH_BIN, use --wait-for-berth SECS, or --self-test)"
fi

sync   # start without someone else's pending writeback (run on an otherwise idle machine)
START_TS=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
RES="$WORK/results"
mkdir -p "$RES" "$HERE/out"
PIDS=()
declare -A PID BASE LOGF

cleanup() {
    local rc=$? pid i
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || continue
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid ignored SIGTERM for 5 s; killing it"
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    if [ -d "$RES" ]; then
        rm -rf "$HERE/out/latest-raw"
        cp -r "$RES" "$HERE/out/latest-raw" 2>/dev/null
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

problem() {  # record a registry misbehaviour verbatim for the report
    { printf '[%s] %s\n' "$1" "$2"; [ -n "${3:-}" ] && cat "$3"; echo; } >>"$RES/problems.txt"
    log "PROBLEM ($1): $2"
}

alive() { kill -0 "${PID[$1]}" 2>/dev/null; }

# ------------------------------------------------------------------ servers
read -r PORT_B PORT_D PORT_S <<<"$("$PY" "$CLIENT" free-ports 3)" || fail "no free ports"

dist_config() {  # $1 port, $2 data dir, $3 config path
    cat >"$3" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$1
  secret: bench-$RANDOM$RANDOM$RANDOM
EOF
}

start_server() {  # $1 side name, $2 kind (berth|distribution), $3 port
    local side=$1 kind=$2 port=$3 dir="$WORK/data-$1" cmd
    mkdir -p "$dir"
    LOGF[$side]="$RES/$side-server.log"
    if [ "$kind" = berth ]; then
        # shellcheck disable=SC2086
        "$BERTH_BIN" serve --addr "127.0.0.1:$port" --data-dir "$dir" $BERTH_ARGS >"${LOGF[$side]}" 2>&1 &
    else
        dist_config "$port" "$dir" "$WORK/$side-config.yml"
        "$DIST_BIN" serve "$WORK/$side-config.yml" >"${LOGF[$side]}" 2>&1 &
    fi
    PID[$side]=$!
    PIDS+=("$!")
    BASE[$side]="http://127.0.0.1:$port"
    "$PY" "$CLIENT" wait "${BASE[$side]}" 20 "${PID[$side]}" || { cat "${LOGF[$side]}" >&2; fail "$side did not start"; }
    log "$side ($kind) pid ${PID[$side]} on ${BASE[$side]}"
}

# ------------------------------------------------------------------ machine, ceiling, test file
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
NPROC=$(nproc)
log "sha256 ceiling: openssl speed -evp sha256 -bytes 16384 -seconds 3"
SHA_K=$(openssl speed -evp sha256 -bytes 16384 -seconds 3 2>/dev/null | awk '$1=="sha256" {print $2}' | tr -d k)
[ -n "$SHA_K" ] || fail "could not parse openssl speed output"
CEILING=$(awk -v k="$SHA_K" 'BEGIN {printf "%.1f", k / 1000}')   # 1000s of bytes/s -> MB/s
log "ceiling $CEILING MB/s"

# This VM backs guest memory lazily and takes freed memory back within seconds (virtio-balloon
# free page reporting): growing the page cache into such memory writes at ~0.4 GB/s instead of
# ~4 GB/s. Each push writes a new 1 GiB file, so right before each push (untimed) we touch and
# free that much memory, so that every push, whichever server, starts with warm free memory.
PREFAULT_MIB=${BENCH_PREFAULT_MIB:-$(( BLOB_MIB * 3 / 2 ))}
prefault() { [ "$PREFAULT_MIB" -gt 0 ] && "$PY" "$CLIENT" prefault "$PREFAULT_MIB" >/dev/null; }

BLOB="$WORK/blob.bin"
log "generating ${BLOB_MIB} MiB of random data"
head -c "$((BLOB_MIB * 1024 * 1024))" /dev/urandom >"$BLOB" || fail "cannot write $BLOB"
BLOB_SIZE=$(stat -c %s "$BLOB")
BLOB_DIGEST="sha256:$(openssl dgst -sha256 -r "$BLOB" | cut -d' ' -f1)"

# ------------------------------------------------------------------ start and seed
if [ "$SELF_TEST" = 1 ]; then
    start_server berth distribution "$PORT_B"
else
    start_server berth berth "$PORT_B"
fi
start_server distribution distribution "$PORT_D"
SIDES=(berth distribution)

for side in "${SIDES[@]}"; do
    if "$PY" "$CLIENT" push-image "${BASE[$side]}" "$REPO" "$TAG" >"$RES/$side-image.json" 2>"$RES/$side-image.err"; then
        :
    else
        problem "$side" "pushing the small test image failed" "$RES/$side-image.err"
        rm -f "$RES/$side-image.json"
    fi
done
IMAGE_JSON="$RES/distribution-image.json"
[ -s "$IMAGE_JSON" ] || fail "could not push the test image to distribution: $(cat "$RES/distribution-image.err")"
ACCEPT=$(jq -r .accept "$IMAGE_JSON")
LAYER=$(jq -r .layer_digest "$IMAGE_JSON")

# ------------------------------------------------------------------ (1) small requests
run_oha() {  # $1 side, $2 kind, then URL/method args
    local side=$1 kind=$2; shift 2
    # A 1 s warm-up (discarded), then the measured run.
    "$OHA" -z 1s -c "$CONNS" --no-tui --output-format quiet "$@" >/dev/null 2>&1
    log "$side $kind: oha -z $DURATION -c $CONNS"
    if ! "$OHA" -z "$DURATION" -c "$CONNS" --no-tui --output-format json "$@" >"$RES/$side-$kind.json" 2>"$RES/$side-$kind.err"; then
        problem "$side" "oha $kind failed" "$RES/$side-$kind.err"; rm -f "$RES/$side-$kind.json"; return
    fi
    local codes
    codes=$(jq -c '.statusCodeDistribution' "$RES/$side-$kind.json")
    log "$side $kind: $(jq -r '.summary.requestsPerSec | floor' "$RES/$side-$kind.json") req/s, codes $codes"
    if [ "$(jq '[.statusCodeDistribution | to_entries[] | select(.key != "200")] | length' "$RES/$side-$kind.json")" != 0 ]; then
        problem "$side" "$kind under load answered non-200: $codes (oha $*)"
    fi
    alive "$side" || problem "$side" "server process exited during $kind load" "${LOGF[$side]}"
}

for side in "${SIDES[@]}"; do
    [ -s "$RES/$side-image.json" ] || continue
    run_oha "$side" manifest -H "Accept: $ACCEPT" "${BASE[$side]}/v2/$REPO/manifests/$TAG"
    run_oha "$side" blobhead -m HEAD "${BASE[$side]}/v2/$REPO/blobs/$LAYER"
done

vmhwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
declare -A HWM1
for side in "${SIDES[@]}"; do
    HWM1[$side]=$(vmhwm "${PID[$side]}")
    # Reset the peak so part 2 is measured on its own.
    echo 5 >"/proc/${PID[$side]}/clear_refs" 2>/dev/null || log "cannot reset VmHWM of $side; part-2 peak includes part 1"
done

# ------------------------------------------------------------------ (2) 1 GiB push and pull
CURL=(curl -sS --noproxy '*' --proto =http --proto-redir =http --connect-to ::127.0.0.1: --max-time 300)

push_once() {  # $1 side, $2 run label, $3 results file
    local side=$1 n=$2 results=$3 base=${BASE[$1]} out post put code t_post t_put url loc got
    out="$RES/$side-push-$n"
    # Flush dirty pages first (untimed), so no push pays for the previous one's writeback
    # (berth fsyncs by default; Distribution leaves 1 GiB dirty in the page cache).
    sync
    prefault
    post=$("${CURL[@]}" -X POST -o "$out.post.body" -D "$out.post.hdr" -w '%{http_code} %{time_total}' \
        "$base/v2/$BIGREPO/blobs/uploads/")
    read -r code t_post <<<"$post"
    loc=$(tr -d '\r' <"$out.post.hdr" | awk 'tolower($1)=="location:" {print $2; exit}')
    if [ "$code" != 202 ] || [ -z "$loc" ]; then
        { echo "> POST $base/v2/$BIGREPO/blobs/uploads/"; cat "$out.post.hdr" "$out.post.body"; } >"$out.trace"
        problem "$side" "push run $n: upload start answered $code, Location '$loc'" "$out.trace"; return 1
    fi
    case "$loc" in
        http://127.0.0.1:*|http://127.0.0.1/*) url=$loc ;;
        /*) url="$base$loc" ;;
        *) problem "$side" "push run $n: upload Location not on 127.0.0.1 or not absolute-path: $loc"; return 1 ;;
    esac
    case "$url" in *\?*) url="$url&digest=$BLOB_DIGEST" ;; *) url="$url?digest=$BLOB_DIGEST" ;; esac
    # -T streams the file (64 KiB reads); 'Expect:' drops curl's 100-continue, which docker and
    # containerd (Go net/http) do not send either.
    put=$("${CURL[@]}" -T "$BLOB" -H 'Content-Type: application/octet-stream' -H 'Expect:' \
        -o "$out.put.body" -D "$out.put.hdr" -w '%{http_code} %{size_upload} %{time_total}' "$url")
    read -r code _ t_put <<<"$put"
    got=$(tr -d '\r' <"$out.put.hdr" | awk 'tolower($1)=="docker-content-digest:" {print $2; exit}')
    if [ "$code" != 201 ] || { [ -n "$got" ] && [ "$got" != "$BLOB_DIGEST" ]; }; then
        { echo "> PUT $url  (body: $BLOB_SIZE bytes, $BLOB_DIGEST, Content-Type: application/octet-stream)"
          cat "$out.put.hdr"; head -c 2000 "$out.put.body"; echo; } >"$out.trace"
        problem "$side" "push run $n: PUT answered $code, Docker-Content-Digest '$got' (expected 201, $BLOB_DIGEST)" "$out.trace"
        return 1
    fi
    echo "$code $BLOB_SIZE $(awk -v a="$t_post" -v b="$t_put" 'BEGIN {printf "%.6f", a + b}')" >>"$results"
    log "$side push $n: $(awk -v s="$BLOB_SIZE" -v a="$t_post" -v b="$t_put" 'BEGIN {printf "%.0f MB/s (%.2f s)", s / (a + b) / 1e6, a + b}')"
    # The blob must now be visible with the right size.
    local head
    head=$("${CURL[@]}" -I -o "$out.head.hdr" -w '%{http_code}' "$base/v2/$BIGREPO/blobs/$BLOB_DIGEST")
    local len
    len=$(tr -d '\r' <"$out.head.hdr" | awk 'tolower($1)=="content-length:" {print $2; exit}')
    if [ "$head" != 200 ] || [ "$len" != "$BLOB_SIZE" ]; then
        problem "$side" "after push run $n: HEAD /v2/$BIGREPO/blobs/$BLOB_DIGEST answered $head, Content-Length '$len' (expected 200, $BLOB_SIZE)" "$out.head.hdr"
    fi
}

pull_once() {  # $1 side, $2 run number
    local side=$1 n=$2 base=${BASE[$1]} out r code size t redirs
    out="$RES/$side-pull-$n"
    r=$("${CURL[@]}" -L -o /dev/null -D "$out.hdr" -w '%{http_code} %{size_download} %{time_total} %{num_redirects}' \
        "$base/v2/$BIGREPO/blobs/$BLOB_DIGEST")
    read -r code size t redirs <<<"$r"
    if [ "$code" != 200 ] || [ "$size" != "$BLOB_SIZE" ]; then
        problem "$side" "pull run $n: GET /v2/$BIGREPO/blobs/$BLOB_DIGEST gave $code with $size bytes (expected 200, $BLOB_SIZE)" "$out.hdr"
        return 1
    fi
    echo "$code $size $t redirects=$redirs" >>"$RES/$side-pull.txt"
    log "$side pull $n: $(awk -v s="$size" -v t="$t" 'BEGIN {printf "%.0f MB/s (%.2f s)", s / t / 1e6, t}'), $redirs redirect(s)"
}

verify_pull() {  # $1 side: one more pull, hashed, to check the content
    local side=$1 base=${BASE[$1]} sum w code size t
    sum=$("${CURL[@]}" -L -o - -D "$RES/$side-verify.hdr" \
        -w '%{stderr}%{http_code} %{size_download} %{time_total}\n' \
        "$base/v2/$BIGREPO/blobs/$BLOB_DIGEST" 2>"$RES/$side-verify.err" | openssl dgst -sha256 -r | cut -d' ' -f1)
    w=$(tail -n1 "$RES/$side-verify.err")
    read -r code size t <<<"$w"
    if [ "sha256:$sum" = "$BLOB_DIGEST" ]; then
        echo "$code $size $t sha256-ok" >"$RES/$side-verify.txt"
        log "$side pull verified: sha256 matches"
    else
        echo "$code $size $t sha256-MISMATCH" >"$RES/$side-verify.txt"
        problem "$side" "pull content sha256:$sum != pushed $BLOB_DIGEST (HTTP $code, $size bytes)" "$RES/$side-verify.hdr"
    fi
}

# Client ceiling: the same upload into a discard-only endpoint.
"$PY" "$CLIENT" sink "$PORT_S" >"$RES/sink.log" 2>&1 &
SINK_PID=$!
PIDS+=("$SINK_PID")
sleep 0.3
for n in $(seq "$RUNS"); do
    "${CURL[@]}" -T "$BLOB" -H 'Content-Type: application/octet-stream' -H 'Expect:' -o /dev/null \
        -w '%{http_code} %{size_upload} %{time_total}\n' "http://127.0.0.1:$PORT_S/sink" >>"$RES/sink.txt" \
        || log "sink upload failed"
done
kill -TERM "$SINK_PID" 2>/dev/null
log "client ceiling (curl -T into a discard sink): $(awk '{printf "%.0f MB/s  ", $2 / $3 / 1e6}' "$RES/sink.txt")"

# Each run pushes a new blob (as docker does: it skips layers the registry has): the first 32
# bytes of the file change per run, both servers get the same content in the same run.
for n in $(seq "$RUNS"); do
    printf 'berth-bench run %04d %10d' "$n" "$START_TS" | dd of="$BLOB" bs=32 count=1 conv=notrunc status=none
    BLOB_DIGEST="sha256:$(openssl dgst -sha256 -r "$BLOB" | cut -d' ' -f1)"
    for side in "${SIDES[@]}"; do push_once "$side" "$n" "$RES/$side-push.txt"; done
done
sleep 5   # let the host take back the memory freed by the last pre-touch before timing pulls
# The verifying pull (hashed, untimed in the median) also warms each server's read path.
for side in "${SIDES[@]}"; do verify_pull "$side"; done
for n in $(seq "$RUNS"); do
    for side in "${SIDES[@]}"; do pull_once "$side" "$n"; done
done
# For information: pushing the last blob again, when the registry already has it.
for side in "${SIDES[@]}"; do push_once "$side" repush "$RES/$side-repush.txt"; done

for side in "${SIDES[@]}"; do
    if alive "$side"; then
        jq -n --argjson a "${HWM1[$side]:-null}" --argjson b "$(vmhwm "${PID[$side]}")" \
            '{hwm_part1_kb: $a, hwm_part2_kb: $b}' >"$RES/$side-rss.json"
    else
        problem "$side" "server process exited during part 2" "${LOGF[$side]}"
    fi
done

# ------------------------------------------------------------------ report
rel() { case "$1" in "$ROOT"/*) echo "${1#"$ROOT"/}" ;; *) echo "$1" ;; esac; }
CMD="${SET_ENV}bench/run.sh"
[ ${#ORIG_ARGS[@]} -gt 0 ] && CMD="$CMD ${ORIG_ARGS[*]}"
NONSTD=""
[ "$DURATION" != 10s ] && NONSTD+="duration $DURATION; "
[ "$CONNS" != 32 ] && NONSTD+="connections $CONNS; "
[ "$BLOB_MIB" != 1024 ] && NONSTD+="blob ${BLOB_MIB} MiB; "
[ "$RUNS" != 3 ] && NONSTD+="runs $RUNS; "
if [ "$SELF_TEST" = 1 ]; then
    BERTH_CMD="$DIST_BIN serve CONFIG (self-test)"; BERTH_VER="self-test"
else
    BERTH_CMD="BERTH_LOG=$BERTH_LOG $(rel "$BERTH_BIN") serve --addr 127.0.0.1:$PORT_B --data-dir TMP${BERTH_ARGS:+ $BERTH_ARGS}"
    BERTH_VER="$("$BERTH_BIN" --version 2>&1 | head -1), built $(date -r "$BERTH_BIN" '+%F %T'), repo HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ] && echo ' (dirty tree)')"
fi
NOTES=()
NOTES+=("Both servers run concurrently (idle while the other is measured); oha/curl run on the same ${NPROC} CPUs as the server under test, so the small-request numbers include the client's CPU cost.")
NOTES+=("Each push run sends a new ${BLOB_MIB} MiB blob (same random file, first 32 bytes changed per run); \`sync\` runs (untimed) before each push; pulls (of the last blob) read data that is likely in the page cache.")
if [ "$PREFAULT_MIB" -gt 0 ]; then
    NOTES+=("Right before each push (untimed), ${PREFAULT_MIB} MiB of memory is touched and freed: this VM gives freed guest memory back to the host within seconds, and growing the page cache into it costs ~2.4 s/GiB (measured with dd: ~4 GB/s warm, ~0.43 GB/s cold), which would otherwise land on whichever push runs later. BENCH_PREFAULT_MIB=0 turns it off.")
else
    NOTES+=("Memory pre-touching before pushes is OFF (BENCH_PREFAULT_MIB=0): push figures include this VM's cold-memory page-cache cost (~2.4 s/GiB).")
fi
case " $BERTH_ARGS " in *" --fsync false "*|*"--fsync=false"*) ;; *)
    [ "$SELF_TEST" = 0 ] && NOTES+=("berth runs with its default \`--fsync true\` (blob data fsynced before the 201); Distribution never fsyncs. Set BERTH_ARGS='--fsync false' for a like-for-like durability comparison.") ;;
esac

jq -n \
    --arg date "$(date -u '+%F %T UTC')" --arg nproc "$NPROC" --arg cpu "$CPU" \
    --arg mem "$(free -h | awk '/^Mem:/ {print $2}')" --arg kernel "$(uname -r)" \
    --arg command "$CMD" --arg berth_cmd "$BERTH_CMD" --arg berth_version "$BERTH_VER" \
    --arg dist_cmd "$(rel "$DIST_BIN") serve CONFIG" --arg dist_version "$("$DIST_BIN" --version 2>&1 | head -1)" \
    --arg oha_version "$("$OHA" --version 2>&1 | head -1)" --arg curl_version "$(curl --version | head -1 | cut -d' ' -f1-2)" \
    --arg duration "$DURATION" --arg conns "$CONNS" --argjson blob_mib "$BLOB_MIB" --argjson runs "$RUNS" \
    --argjson ceiling "$CEILING" --argjson self_test "$SELF_TEST" --arg nonstandard "${NONSTD%; }" \
    --argjson elapsed "$(( $(date +%s) - START_TS ))" \
    --arg load "at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)" \
    --slurpfile image "$IMAGE_JSON" \
    --argjson notes "$(printf '%s\n' "${NOTES[@]}" | jq -R . | jq -s .)" \
    '{date: $date, nproc: $nproc, cpu: $cpu, mem: $mem, kernel: $kernel, command: $command,
      berth_cmd: $berth_cmd, berth_version: $berth_version, dist_cmd: $dist_cmd,
      dist_version: $dist_version, oha_version: $oha_version, curl_version: $curl_version,
      duration: $duration, conns: $conns, blob_mib: $blob_mib, runs: $runs,
      sha256_ceiling_MBps: $ceiling, self_test: ($self_test == 1), nonstandard: $nonstandard,
      elapsed: $elapsed, load: $load, image: $image[0], notes: $notes,
      sides: [["berth", (if $self_test == 1 then "berth (self-test: distribution)" else "berth" end)],
              ["distribution", "distribution"]]}' >"$RES/meta.json"

"$PY" "$CLIENT" report "$RES" >"$HERE/out/latest.md" || fail "report rendering failed"
cat "$HERE/out/latest.md"
if [ -s "$RES/problems.txt" ]; then
    log "registry problems were recorded: see the Problems section of bench/out/latest.md"
    exit 1
fi
