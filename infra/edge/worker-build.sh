#!/usr/bin/env bash
# wrangler's build command (wrangler.toml [build]): compiles edge/ with worker-build, using only
# local tools: the wasm32 toolchain from wasm-toolchain.sh, wasm-bindgen and worker-build from
# .tools/bin, wasm-opt and esbuild from .tools/node (worker-build would download them otherwise).
# Run infra/edge-build.sh once first; it installs all of these.
#
#   bash infra/edge/worker-build.sh              # the all-in-one Worker (wrangler.toml), into edge/build
#   bash infra/edge/worker-build.sh serve        # only the fetch handler, into edge/build-serve
#   bash infra/edge/worker-build.sh maintenance  # only the Cron Trigger's and the queue's
#                                                # handlers, into edge/build-maintenance
#   bash infra/edge/worker-build.sh contract     # with the `contract` feature (the storage contract
#                                                # route), into edge/build-contract, for
#                                                # tests/edge/wrangler-contract.toml
#   BERTH_WASM_NAMES=1 bash infra/edge/worker-build.sh serve
#       keeps the functions' names in the wasm, so that a CPU profile (bench/edge_cpu.mjs with
#       TOP=N) names Rust functions instead of wasm-function[N]; never for a deployment (the
#       names are about a fifth of the bundle). A later build without it rebuilds.
# serve and maintenance are the two Workers of a split deployment on one bucket
# (terraform/modules/cloudflare; edge/Cargo.toml's features say why).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.tools"
rust_bin=$(bash "$root/infra/edge/wasm-toolchain.sh")
export PATH="$rust_bin:$tools/bin:$PATH"
export RUSTC="$rust_bin/rustc"
export WASM_BINDGEN_BIN="$tools/bin/wasm-bindgen"
export WASM_OPT_BIN="$tools/node/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$tools/node/node_modules/.bin/esbuild"
# The std of this toolchain was built to abort without a panic message (wasm-toolchain.sh); the
# Worker must be compiled with the same strategy. Only the wasm target gets these flags: build
# scripts and proc macros run on the host with its normal std.
if [ "$(cat "$rust_bin/panic-strategy" 2>/dev/null)" = immediate-abort ]; then
  export RUSTC_BOOTSTRAP=1
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort"
fi
cd "$root"
variant=${1:-}
case "$variant" in
  "") out_dir=build extra=() ;;
  serve) out_dir=build-serve extra=(--no-default-features --features serve) ;;
  maintenance) out_dir=build-maintenance extra=(--no-default-features --features maintenance) ;;
  contract) out_dir=build-contract extra=(--features contract) ;;
  *) echo "worker-build.sh: unknown variant $variant (none, serve, maintenance or contract)" >&2; exit 2 ;;
esac
# Each variant has its own cargo target dir: the cdylib's file name carries no feature hash, so
# one target dir would let each variant overwrite the other's wasm (and relink it, LTO and all,
# at every switch). Seeded once with hard links from the default build's, so only berth-core
# and berth-edge compile for it.
if [ -n "$variant" ]; then
  export CARGO_TARGET_DIR="$root/edge/target/$variant"
  if [ ! -d "$CARGO_TARGET_DIR" ] && [ -d edge/target/wasm32-unknown-unknown ]; then
    mkdir -p "$CARGO_TARGET_DIR"
    for d in release wasm32-unknown-unknown; do
      [ -d "edge/target/$d" ] && cp -al "edge/target/$d" "$CARGO_TARGET_DIR/"
    done
    # The files whose names carry no hash are rewritten in place: unlink them, or writing
    # them here would write the default build's too.
    rm -f "$CARGO_TARGET_DIR"/wasm32-unknown-unknown/release/berth_edge.* \
      "$CARGO_TARGET_DIR"/wasm32-unknown-unknown/release/deps/berth_edge.*
  fi
fi
# wrangler runs this on every `dev` and `deploy`: skip the rebuild (wasm-opt alone takes ~15 s)
# when no source changed since the last one.
out=edge/$out_dir/index_bg.wasm
names=${BERTH_WASM_NAMES:-0}
if [ -f "$out" ] && [ -f "edge/$out_dir/index.js" ] && [ "$(cat "edge/$out_dir/.names" 2>/dev/null || echo 0)" = "$names" ] \
    && [ -z "$(find edge/src shared/src edge/Cargo.toml edge/Cargo.lock shared/Cargo.toml Cargo.toml -newer "$out" -print -quit)" ]; then
  echo "edge/$out_dir is up to date"
  exit 0
fi
cd edge
worker-build --release --out-dir "$out_dir" "${extra[@]}"
# worker-build's own wasm-opt pass is off (edge/Cargo.toml's wasm-pack metadata): it keeps the
# name section (--debuginfo), function names were ~19% of the bundle, and optimizing with the
# names in place left ~2.7 KB gzip more than one pass that drops them first (issue 19). So the one
# pass is here, after wasm-bindgen: `-O` (of -O, -Os, -Oz, -O3 and -Oz --converge the smallest
# gzip) with --strip-debug. Not the profile's `strip = true`: that also drops the target_features
# section, and wasm-bindgen, not knowing multivalue is on, then returns values through memory.
# Panics are traps (see wasm-toolchain.sh); stack traces show wasm-function[N] instead of names.
wasm="$out_dir/index_bg.wasm"
features=()
for f in mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue reference-types \
    exception-handling; do features+=("--enable-$f"); done # worker-build's own list
if [ "$names" = 1 ]; then keep=--debuginfo; else keep=--strip-debug; fi
"$WASM_OPT_BIN" "$wasm" -o "$wasm.opt" -O "$keep" "${features[@]}"
mv -f "$wasm.opt" "$wasm"
echo "$names" >"$out_dir/.names" # read by the up-to-date check above
