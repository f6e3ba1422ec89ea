#!/usr/bin/env bash
# Head-to-head push timing of two berth binaries, less exposed to machine noise than two
# separate bench/run.sh runs: runs alternate A, B, A, B, ... each on a fresh data directory.
#
#   bench/ab-push.sh OLD_BERTH NEW_BERTH [RUNS=4] [MIB=1024]
#
# Each run: start the server on 127.0.0.1, touch and free 1.5x the blob in memory (this VM
# returns freed memory to the host, see run.sh), sync, then POST + one `curl -T` PUT of a random
# blob; prints the seconds from curl's time_total of the PUT, then the medians.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,10p' "$0"; exit 2; }
A=$1 B=$2 RUNS=${3:-4} MIB=${4:-1024}
WORK=$(mktemp -d /tmp/berth-ab.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
head -c $((MIB << 20)) /dev/urandom >"$WORK/blob"
DIGEST="sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)"

one() {  # $1 binary, $2 port: prints the PUT's seconds
    rm -rf "$WORK/data"
    "$1" serve --addr "127.0.0.1:$2" --data-dir "$WORK/data" >/dev/null 2>&1 &
    PID=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/v2/" >/dev/null && break; sleep 0.1; done
    python3 -c "b = bytearray($MIB * 3 << 19); b[::4096] = b'\x01' * len(b[::4096])"
    sync
    local loc t code
    loc=$(curl -sS -X POST -D - -o /dev/null "http://127.0.0.1:$2/v2/ab/blobs/uploads/" \
        | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
    read -r code t < <(curl -sS -T "$WORK/blob" -H 'Expect:' -o /dev/null -w '%{http_code} %{time_total}\n' \
        "http://127.0.0.1:$2$loc?digest=$DIGEST")
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    [ "$code" = 201 ] || { echo "PUT answered $code" >&2; exit 1; }
    echo "$t"
}

median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
: >"$WORK/a"; : >"$WORK/b"
for i in $(seq "$RUNS"); do
    a=$(one "$A" 5291); echo "run $i A $a s"; echo "$a" >>"$WORK/a"
    b=$(one "$B" 5292); echo "run $i B $b s"; echo "$b" >>"$WORK/b"
done
echo "median A ($A): $(median <"$WORK/a") s"
echo "median B ($B): $(median <"$WORK/b") s"
