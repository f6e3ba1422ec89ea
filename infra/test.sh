#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds once, then runs the
# unit tests, the HTTP integration suite against `berth serve`, the real OCI clients (skopeo,
# podman, docker, oras), and checks that the core still builds for wasm32.
# Every server it starts listens on 127.0.0.1 and is stopped by PID when it is done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

step "install test dependencies (skipped when present)"
bash infra/install-deps.sh

step "build (release, once for every suite)"
cargo build --release --workspace --all-targets --locked
export BERTH_BIN="$root/target/release/berth"

step "core wasm32 build check"
bash infra/check-wasm.sh

step "unit tests and HTTP integration suite against berth serve"
cargo test --release --workspace --locked

step "real OCI clients against berth serve"
bash tests/clients/run.sh

step "Lambda adapter: HTTP suite, edges, real clients, berth push (cargo lambda watch + local S3)"
bash tests/lambda/run.sh
