#!/usr/bin/env bash
# Builds the Cloudflare Worker bundle (edge/) on a fresh Debian machine, offline apart from the
# package registries, and reports its size. Idempotent and quick when everything is in place.
#
#   1. wrangler (pinned, runs on Node 20), wasm-opt (binaryen 132) and esbuild from npm into
#      .tools/node, from infra/edge/package-lock.json;
#   2. a Rust toolchain for wasm32 (infra/edge/wasm-toolchain.sh: rustup's target, else Debian's
#      rustc-web with std built once into .tools/wasm-sysroot-immediate-abort);
#   3. wasm-bindgen-cli at exactly edge/Cargo.lock's wasm-bindgen version, and worker-build,
#      with `cargo install` into .tools/bin;
#   4. `wrangler deploy --dry-run --outdir target/edge-dist`, which runs wrangler.toml's build
#      command (infra/edge/worker-build.sh) and writes the deployable bundle without any network.
#   5. the two halves of a split deployment (infra/edge/worker-build.sh serve and maintenance:
#      edge/build-serve, edge/build-maintenance; terraform/modules/cloudflare deploys them).
# Prints their sizes, then `edge bundle: N bytes, gzip M bytes` (the all-in-one Worker) last.
#
# EDGE_BUNDLE=contract builds the test bundle instead: the Worker with the `contract` feature (the
# storage contract route, for tests/edge/run.sh) through tests/edge/wrangler-contract.toml, into
# edge/build-contract and target/edge-contract-dist. The production bundle never has it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
cd "$root"
log() { printf 'edge-build: %s\n' "$*" >&2; }

WORKER_BUILD_VERSION=0.8.7

# 1. npm tools, exactly as locked.
mkdir -p "$tools/node"
if ! cmp -s infra/edge/package-lock.json "$tools/node/package-lock.json" \
    || ! [ -x "$tools/node/node_modules/.bin/wrangler" ]; then
  command -v npm >/dev/null || { log "npm is missing (apt-get install nodejs npm; Node >= 20)"; exit 1; }
  log "npm ci (wrangler, binaryen, esbuild)"
  cp infra/edge/package.json infra/edge/package-lock.json "$tools/node/"
  (cd "$tools/node" && npm ci --no-audit --no-fund --loglevel=error)
else
  log "npm tools present"
fi

# 2. Rust for wasm32.
rust_bin=$(bash infra/edge/wasm-toolchain.sh)

# 3. wasm-bindgen (must match the library version exactly) and worker-build.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' edge/Cargo.lock)
if ! "$tools/bin/wasm-bindgen" --version 2>/dev/null | grep -qw "$bindgen_version"; then
  log "cargo install wasm-bindgen-cli $bindgen_version"
  cargo install -q wasm-bindgen-cli --version "$bindgen_version" --root "$tools" --force
fi
if ! "$tools/bin/worker-build" --version 2>/dev/null | grep -qw "$WORKER_BUILD_VERSION"; then
  log "cargo install worker-build $WORKER_BUILD_VERSION"
  cargo install -q worker-build --version "$WORKER_BUILD_VERSION" --root "$tools" --force
fi

# 4. The bundle, offline.
case "${EDGE_BUNDLE:-}" in
  "") config=wrangler.toml dist=target/edge-dist label="edge bundle" ;;
  contract) config=tests/edge/wrangler-contract.toml dist=target/edge-contract-dist label="edge contract bundle" ;;
  *) log "EDGE_BUNDLE must be empty or contract, not ${EDGE_BUNDLE}"; exit 2 ;;
esac
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
rm -rf "$dist"
"$tools/node/node_modules/.bin/wrangler" deploy --dry-run --config "$config" --outdir "$root/$dist" >&2
raw=$(cat "$dist"/*.wasm "$dist"/index.js | wc -c)
gz=$( (cat "$dist"/*.wasm | gzip -9; cat "$dist"/index.js | gzip -9) | wc -c)
[ -n "${EDGE_BUNDLE:-}" ] || split_lines=$(
  # The two halves of a split deployment (edge/Cargo.toml's features): the request Worker and
  # the background one, as terraform/modules/cloudflare uploads them (worker-build's files; the
  # JS glue is not minified there as wrangler minifies it above).
  for half in serve maintenance; do
    bash infra/edge/worker-build.sh "$half" >&2
    d=edge/build-$half
    printf 'edge %s bundle (%s): %s bytes, gzip %s bytes\n' "$half" "$d" \
      "$(cat "$d/index_bg.wasm" "$d/index.js" | wc -c)" "$( (gzip -9 <"$d/index_bg.wasm"; gzip -9 <"$d/index.js") | wc -c)"
  done
)
[ -z "${split_lines:-}" ] || echo "$split_lines"
echo "$label: $raw bytes, gzip $gz bytes (free plan limit: 3 MiB gzip; target: under 1 MiB)"
