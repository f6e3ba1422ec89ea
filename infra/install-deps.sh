#!/usr/bin/env bash
# Installs what Berth's end-to-end tests and benchmarks need on a Debian 12 (bookworm) machine,
# running as root, with only the package registries (apt, PyPI, npm, crates.io) reachable.
#
# Idempotent: every item is checked first (`command -v`, `dpkg-query`, `python3 -c "import …"`)
# and only what is missing is installed; `apt-get update` runs only when an apt install is
# actually needed. On a warm machine this takes a second or two.
#
#   apt:   skopeo umoci podman (+ conmon, crun/runc, containers-common for rootful vfs)
#          docker.io (dockerd + docker CLI) containerd jq curl openssl
#          docker-registry (Distribution: the mirror and replication tests' peer, the clients'
#          `distribution` comparison, and the reference registry of the benchmarks)
#   PyPI:  oras (oras-py, used by tests/clients/oras_test.py)
#   apt:   python3-venv when python3 cannot make virtualenvs (terraform/tests/run.sh puts
#          python-hcl2 and checkov in their own)
# With --bench, also what only the benchmarks use (the test command skips it: building oha
# alone takes minutes on a fresh machine):
#   apt:   wrk hyperfine
#   cargo: oha (load generator), only when `oha` is not on PATH or in ~/.cargo/bin
#
# Packages whose maintainer scripts would start a system service (docker.io, containerd,
# docker-registry) are installed with a policy-rc.d that forbids starting services: the tests
# start their own daemons by hand, on private directories and 127.0.0.1 ports.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

log() { printf 'install-deps: %s\n' "$*" >&2; }

bench=0
[ "${1:-}" = --bench ] && bench=1

have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

apt_missing=()
need_pkg() { # need_pkg PACKAGE [COMMAND...]: queue PACKAGE unless every COMMAND is on PATH
  local pkg=$1 c; shift  # (with no COMMAND: unless dpkg says PACKAGE is installed)
  if [ $# -eq 0 ]; then
    have_pkg "$pkg" && return 0
  else
    for c in "$@"; do have_cmd "$c" || { apt_missing+=("$pkg"); return 0; }; done
    return 0
  fi
  apt_missing+=("$pkg")
}

need_pkg skopeo skopeo
need_pkg umoci umoci
need_pkg podman podman
# Rootful podman with --storage-driver vfs needs no storage helper, but it does need conmon, an
# OCI runtime and containers-common (policy.json, registries.conf). podman depends on them; check
# anyway, since a half-removed setup is what would break the tests.
need_pkg conmon conmon
have_cmd crun || have_cmd runc || apt_missing+=(crun)
need_pkg golang-github-containers-common
need_pkg docker.io dockerd
# The docker CLI: any `docker` on PATH will do (some images ship one in /usr/local/bin);
# docker.io brings /usr/bin/docker otherwise.
have_cmd docker || { have_pkg docker.io || apt_missing+=(docker.io); }
need_pkg containerd containerd   # docker.io depends on it; listed so it is checked on its own
# The tests start Distribution themselves (tests/lib/common.sh start_distribution): a fresh
# machine without it failed the pull-through cache step.
need_pkg docker-registry docker-registry
if [ "$bench" = 1 ]; then
  need_pkg wrk wrk
  need_pkg hyperfine hyperfine
fi
need_pkg jq jq
need_pkg curl curl
need_pkg openssl openssl   # the TLS test makes its own CA (tests/clients/tls.sh)

# Debian's python3 makes virtualenvs only with python3-venv (ensurepip).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_pkg python3-venv

py_needs_pip=0
python3 -c 'import oras' >/dev/null 2>&1 || { python3 -m pip --version >/dev/null 2>&1 || need_pkg python3-pip; py_needs_pip=1; }

if [ ${#apt_missing[@]} -gt 0 ]; then
  # Deduplicate, keep order.
  mapfile -t apt_missing < <(printf '%s\n' "${apt_missing[@]}" | awk '!seen[$0]++')
  log "apt-get install ${apt_missing[*]}"
  # Forbid maintainer scripts from starting services (dockerd, containerd, docker-registry on
  # :5000 with htpasswd) unless the machine already has its own policy.
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  cleanup_policy() { [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d; return 0; }
  trap cleanup_policy EXIT
  apt-get update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
  cleanup_policy
  trap - EXIT
else
  log "apt packages present"
fi

if [ "$py_needs_pip" = 1 ]; then
  # oras-py: pinned to the version the client tests were written against (its chunked-upload
  # API, OrasClient.push(do_chunked=, chunk_size=), has moved between releases).
  spec="oras==${ORAS_PY_VERSION:-0.2.43}"
  log "pip install $spec"
  if ! python3 -m pip install -q --disable-pip-version-check "$spec"; then
    # Debian's own python3 is "externally managed" (PEP 668); a pyenv/venv python is not.
    python3 -m pip install -q --disable-pip-version-check --break-system-packages "$spec"
  fi
  python3 -c 'import oras' # fail here, not in the tests, if it still is not importable
else
  log "python oras present"
fi

if [ "$bench" = 0 ]; then
  :
elif have_cmd oha || [ -x "$HOME/.cargo/bin/oha" ]; then
  log "oha present"
else
  cargo_bin=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
  [ -x "$cargo_bin" ] || { log "cargo not found: cannot install oha"; exit 1; }
  log "cargo install oha --locked"
  "$cargo_bin" install oha --locked
fi

log "done"
