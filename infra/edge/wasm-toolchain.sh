#!/usr/bin/env bash
# Makes a Rust toolchain that builds for wasm32-unknown-unknown available, and prints the
# directory to put first on PATH (it holds `rustc` and `cargo`).
#
# rustup's wasm32 target is used where it is installed. Otherwise (this machine: no rustup
# target can be downloaded) Debian's rustc-web + rust-web-src + cargo-web + lld-22: std is built
# once from source (`-Zbuild-std`) into a private sysroot under .tools/wasm-sysroot-immediate-abort, and a
# `rustc` wrapper passes `--sysroot`, so that later builds, `worker-build` included, run like a
# normal toolchain with an installed target. The sysroot is rebuilt when rustc's version changes.
#
# That std is built with the `immediate-abort` panic strategy: a panic is a bare wasm trap, with
# no message formatting, panic hook or backtrace symbolizer behind it (a tenth of the bundle).
# Nothing panics on a request path by design; workerd still reports the trap as an exception on
# that request. The directory printed holds a file `panic-strategy` saying so, and
# worker-build.sh compiles the Worker with the same strategy (rustup's std has no such variant,
# so there it stays `abort`). Sysroot and wrapper have their own names, so a checkout from before
# this change, sharing .tools, keeps its own.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tools="$root/.tools"
log() { printf 'wasm-toolchain: %s\n' "$*" >&2; }

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  dirname "$(rustup which cargo)"
  exit 0
fi

# The wasm linker rustc calls is `rust-lld`. Older rustc-web packages installed it as
# /usr/bin/rust-lld; 1.96.0+dfsg1-1~deb12u2 does not, so it is then lld-22's multi-call `lld`
# (rustc passes `-flavor wasm`), linked into the private bin directory below.
lld() { ls /usr/bin/rust-lld /usr/lib/llvm-22/bin/lld 2>/dev/null | head -1; }
if ! [ -x /usr/bin/rustc ] || ! [ -d /usr/lib/rustlib/src/rust/library ] || [ -z "$(lld)" ]; then
  log "apt-get install rustc-web rust-web-src cargo-web lld-22"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends \
    rustc-web rust-web-src cargo-web lld-22 >/dev/null
fi

sysroot="$tools/wasm-sysroot-immediate-abort"
bin="$tools/wasm-rust-bin-immediate-abort"
version=$(/usr/bin/rustc --version)
host=$(/usr/bin/rustc -vV | sed -n 's/^host: //p')
if [ "$(cat "$sysroot/.rustc-version" 2>/dev/null)" != "$version" ]; then
  log "building std for wasm32-unknown-unknown with $version (once)"
  work="$tools/wasm-std-build-immediate-abort"
  rm -rf "$work" "$sysroot"
  mkdir -p "$work/src"
  # An empty library whose only purpose is to make cargo build std. `lto = true` keeps the
  # bitcode in the rlibs, so that the Worker's own LTO build can link against them.
  cat >"$work/Cargo.toml" <<'TOML'
[package]
name = "berth-wasm-std"
version = "0.0.0"
edition = "2021"
[lib]
crate-type = ["rlib"]
[profile.release]
opt-level = "z"
lto = true
codegen-units = 1
panic = "abort"
[workspace]
TOML
  : >"$work/src/lib.rs"
  (cd "$work" && RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort" \
    /usr/bin/cargo build --release -q -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown)
  lib="$sysroot/lib/rustlib/wasm32-unknown-unknown/lib"
  mkdir -p "$lib"
  find "$work/target/wasm32-unknown-unknown/release/deps" -name 'lib*.rlib' \
    ! -name 'libberth_wasm_std-*' -exec cp {} "$lib/" \;
  # The host's own libraries (build scripts, proc macros) and the std sources stay Debian's.
  ln -s "/usr/lib/rustlib/$host" "$sysroot/lib/rustlib/$host"
  ln -s /usr/lib/rustlib/src "$sysroot/lib/rustlib/src"
  rm -rf "$work"
  printf '%s\n' "$version" >"$sysroot/.rustc-version"
fi

mkdir -p "$bin"
wrapper="#!/bin/sh
exec /usr/bin/rustc --sysroot \"$sysroot\" \"\$@\""
# Replaced atomically and only when it changes: a build may be running it right now.
if [ "$(cat "$bin/rustc" 2>/dev/null)" != "$wrapper" ]; then
  printf '%s\n' "$wrapper" >"$bin/rustc.new" && chmod +x "$bin/rustc.new" && mv -f "$bin/rustc.new" "$bin/rustc"
fi
[ -L "$bin/cargo" ] || ln -sf /usr/bin/cargo "$bin/cargo"
if ! [ -x /usr/bin/rust-lld ] && [ "$(readlink "$bin/rust-lld" 2>/dev/null)" != "$(lld)" ]; then
  ln -sfn "$(lld)" "$bin/rust-lld"
fi
[ "$(cat "$bin/panic-strategy" 2>/dev/null)" = immediate-abort ] || echo immediate-abort >"$bin/panic-strategy"
echo "$bin"
