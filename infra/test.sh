#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds once, then runs the
# unit tests, the HTTP integration suite against `berth serve`, the real OCI clients (skopeo,
# podman, docker, oras), the Worker and Lambda runtimes, checks that the core still builds for
# wasm32, builds the deployment artifacts and checks the Terraform modules that use them.
# Every server it starts listens on 127.0.0.1 and is stopped by PID when it is done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Each step says how long the run has taken so far (CI's budget: 20 minutes on a warm machine).
step() { printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# Build output and tools built from source (wasm sysroot, wasm-bindgen, worker-build, s3s-fs)
# live in a per-machine cache that every clone links to, so a CI run on a machine that has run
# the tests before rebuilds only Berth's own crates. A fresh machine fills it once.
# BERTH_CACHE=none keeps them inside the clone.
cache=${BERTH_CACHE:-$HOME/.cache/berth}
if [ "$cache" != none ]; then
  for dir in target edge/target fuzz/target .tools; do
    [ -e "$dir" ] || [ -L "$dir" ] && continue
    mkdir -p "$cache/${dir//\//-}"
    ln -s "$cache/${dir//\//-}" "$dir"
  done
fi

step "install test dependencies (skipped when present)"
bash infra/install-deps.sh

step "build (release, once for every suite)"
cargo build --release --workspace --all-targets --locked
export BERTH_BIN="$root/target/release/berth"

step "core wasm32 build check"
bash infra/check-wasm.sh

step "unit tests and HTTP integration suite against berth serve"
cargo test --release --workspace --locked

step "fuzz the core's parsers (cargo fuzz, FUZZ_SECONDS=${FUZZ_SECONDS:-10} per target)"
FUZZ_SECONDS=${FUZZ_SECONDS:-10} bash infra/fuzz.sh

step "real OCI clients against berth serve"
bash tests/clients/run.sh

step "observability: Prometheus scrapes berth serve while skopeo pushes and pulls; promtool on the alert rules"
bash tests/observability/run.sh

step "README.md's Quickstart, as written (skopeo, docker, berth push, curl) against berth serve"
bash tests/quickstart.sh

step "berth serve over TLS: curl (HTTP/2), skopeo with a test CA, certificate reload on SIGHUP, docker"
bash tests/clients/tls.sh

step "web interface: committed assets rebuilt from the lockfile, Playwright (chromium) against berth serve, auth off and on"
bash tests/ui/run.sh

step "token auth with real OCI clients (docker login, skopeo, podman, oras, OIDC) against berth serve --auth-config"
bash tests/clients/auth.sh

step "pull-through cache: berth serve mirrors berth (token auth), Distribution (htpasswd) and a broken upstream; skopeo, docker registry-mirrors, containerd hosts.toml"
bash tests/mirror/run.sh

step "replication: berth serve copies on push (an image, an index, a referrer) to Distribution (htpasswd) and berth (token auth), retries a destination that was down, replicates deletes; berth replicate by hand and status"
bash tests/replication/run.sh

step "the Cloudflare Worker (edge/) in workerd via wrangler dev: suite, clients, edge tests"
bash tests/edge/run.sh

step "Lambda adapter: HTTP suite, edges, real clients, berth push (cargo lambda watch + local S3)"
bash tests/lambda/run.sh

step "deployment artifacts the Terraform modules point at: the Lambda zip (the Worker bundle is built above)"
(cd lambda && cargo lambda build --profile lambda --compiler cargo --output-format zip --locked -p berth-lambda)
ls -l target/lambda/berth-lambda/bootstrap.zip edge/build/index.js edge/build/index_bg.wasm \
  edge/build-serve/index.js edge/build-serve/index_bg.wasm edge/build-maintenance/index.js edge/build-maintenance/index_bg.wasm

step "Terraform: parse, provider schemas, structure, fmt layout (python-hcl2); checkov"
bash terraform/tests/run.sh

step "all passed"
