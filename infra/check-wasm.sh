#!/usr/bin/env bash
# Checks that the core crate builds for wasm32-unknown-unknown (the Worker runtime): no tokio,
# no threads, no filesystem crept into berth-core. Uses rustup's wasm32 target where it is
# installed; otherwise Debian's rustc-web toolchain, building std from rust-web-src
# (rustup cannot download targets on machines without internet access).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  exec cargo check --locked -p berth-core --target wasm32-unknown-unknown --target-dir target/wasm-check
fi

if ! [ -x /usr/bin/rustc ] || ! [ -d /usr/lib/rustlib/src/rust/library ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq rustc-web rust-web-src cargo-web >/dev/null
fi
RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo check --locked -q \
  -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown \
  -p berth-core --target-dir target/wasm-check
echo "berth-core builds for wasm32-unknown-unknown"
