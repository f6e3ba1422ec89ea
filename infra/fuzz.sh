#!/usr/bin/env bash
# Bounded fuzzing of berth-core's parsers (fuzz/, cargo fuzz + libFuzzer): installs cargo-fuzz
# when missing, builds every target once, then runs each for FUZZ_SECONDS (default 20) from its
# checked-in seed corpus (fuzz/corpus/<target>/). Exits non-zero on the first crash and says
# where the crashing input is and how to replay it.
#
# The machine has a stable toolchain only: RUSTC_BOOTSTRAP=1 lets it take the nightly flags
# cargo fuzz passes (-Zsanitizer, -Cpasses=sancov). FUZZ_SANITIZER=none turns AddressSanitizer
# off (Berth's core has no unsafe code; ASan only guards its dependencies' unsafe code).
# Targets are built optimised but with debug assertions and overflow checks (-a): an integer
# overflow in a parser is a bug even where release builds would wrap silently.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"

seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1
# The fuzz build is instrumented and has its own profile: never share the main target dir.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=$(cargo fuzz list)
echo "==> building fuzz targets ($(echo $targets)), sanitizer: $sanitizer"
cargo fuzz build --debug-assertions --sanitizer "$sanitizer"

status=0
for target in $targets; do
  # libFuzzer writes what it finds into the first corpus directory: give it a scratch copy so
  # the checked-in seeds stay small and reviewed.
  work="corpus-run/$target"
  mkdir -p "$work" "artifacts/$target"
  cp -n corpus/"$target"/* "$work"/ 2>/dev/null || true
  echo "==> fuzzing $target for ${seconds}s"
  if ! cargo fuzz run --debug-assertions --sanitizer "$sanitizer" "$target" "$work" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
      -print_final_stats=1 >"artifacts/$target/log" 2>&1; then
    status=1
    # The panic or sanitizer report, not cargo fuzz's own backtrace.
    grep -E -A4 'panicked at|ERROR: (AddressSanitizer|libFuzzer)|^SUMMARY' "artifacts/$target/log" | head -40 \
      || tail -40 "artifacts/$target/log"
    crash=$(ls -t "artifacts/$target"/crash-* "artifacts/$target"/oom-* "artifacts/$target"/timeout-* 2>/dev/null | head -1 || true)
    echo "FAIL: $target crashed; input: $root/fuzz/${crash:-artifacts/$target (see log)}" >&2
    echo "      replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --debug-assertions --sanitizer $sanitizer $target ${crash:-<input>}" >&2
  else
    grep -E '^Done|^stat::new_units_added' "artifacts/$target/log" | tr '\n' ' '; echo
  fi
done
exit $status
