#!/usr/bin/env bash
# wrangler's build command (wrangler.toml [build]): compiles edge/ with worker-build, using only
# local tools: the wasm32 toolchain from wasm-toolchain.sh, wasm-bindgen and worker-build from
# .tools/bin, wasm-opt and esbuild from .tools/node (worker-build would download them otherwise).
# Run infra/edge-build.sh once first; it installs all of these.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.tools"
rust_bin=$(bash "$root/infra/edge/wasm-toolchain.sh")
export PATH="$rust_bin:$tools/bin:$PATH"
export RUSTC="$rust_bin/rustc"
export WASM_BINDGEN_BIN="$tools/bin/wasm-bindgen"
export WASM_OPT_BIN="$tools/node/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$tools/node/node_modules/.bin/esbuild"
cd "$root"
# wrangler runs this on every `dev` and `deploy`: skip the rebuild (wasm-opt alone takes ~15 s)
# when no source changed since the last one.
out=edge/build/index_bg.wasm
if [ -f "$out" ] && [ -f edge/build/index.js ] && [ -z "$(find edge/src shared/src edge/Cargo.toml \
    edge/Cargo.lock shared/Cargo.toml Cargo.toml -newer "$out" -print -quit)" ]; then
  echo "edge/build is up to date"
  exit 0
fi
cd edge
exec worker-build --release
