#!/usr/bin/env bash
# `berth serve` over TLS (--tls-cert/--tls-key), with real clients and a test CA made here:
#   1. curl: HTTP/2 and HTTP/1.1 over TLS against the CA; plain HTTP on the TLS port is refused;
#   2. skopeo copies an image in and out with --cert-dir holding the CA, with verification on,
#      and fails without the CA (so the certificate really is checked);
#   3. the certificate is replaced by one from a second CA and the server reloads it on SIGHUP
#      without a restart: the new CA works, the old one no longer does;
#   4. docker (a private dockerd, the CA in /etc/docker/certs.d/127.0.0.1:PORT/) pushes and
#      pulls over TLS. docker treats every loopback registry as "insecure" and skips
#      verification there, so step 2 is what proves verification; here berth speaks only TLS
#      on its port, so a push that works went over TLS.
# Everything listens on 127.0.0.1 on ports picked free at run time and is stopped by PID.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BERTH_BIN:-$root/target/release/berth}
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
work=$(mktemp -d /tmp/berth-tls.XXXXXX)
pids=()
certsd=
passed=0 failed=0

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do timeout 20 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null; done
  [ -n "$certsd" ] && rm -rf "$certsd"
  # dockerd is stopped by now (its containerd exits with it): its directory can go.
  if [ -f "$work/docker-dir" ]; then
    # dockerd makes its data root a mount of its own and unmounts it when it stops cleanly.
    umount "$(cat "$work/docker-dir")/data" 2>/dev/null
    rm -rf "$(cat "$work/docker-dir")"
  fi
  [ -e "$work/remove-key-json" ] && rm -f /etc/docker/key.json
  if [ "$failed" -gt 0 ] || [ -n "${KEEP_WORK:-}" ]; then echo "tls: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

check() { # check NAME CMD...: one test step
  local name=$1; shift
  if "$@" >"$work/step.log" 2>&1; then
    echo "--- PASS $name"; passed=$((passed + 1))
  else
    echo "--- FAIL $name"; sed 's/^/    /' "$work/step.log" | tail -20; failed=$((failed + 1))
  fi
}
fails() { ! "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
t() { timeout -k 5 120 "$@"; }

# A CA and a server certificate it signs (P-256, SAN 127.0.0.1 and localhost).
make_ca() { # make_ca DIR
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=berth test CA $(basename "$1")" -keyout "$1/ca.key" -out "$1/ca.crt" 2>/dev/null
}
make_server_cert() { # make_server_cert CA_DIR OUT_PREFIX
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$2.key" -out "$2.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >"$2.ext"
  openssl x509 -req -in "$2.csr" -CA "$1/ca.crt" -CAkey "$1/ca.key" -CAcreateserial -days 2 \
    -extfile "$2.ext" -out "$2.crt" 2>/dev/null
}
make_ca "$work/ca1" && make_ca "$work/ca2" || { echo "tls: openssl cannot make a CA" >&2; exit 1; }
make_server_cert "$work/ca1" "$work/server"
# skopeo's --cert-dir takes a directory of *.crt CA files.
mkdir -p "$work/trust1" "$work/trust2" "$work/empty"
cp "$work/ca1/ca.crt" "$work/trust1/ca.crt"
cp "$work/ca2/ca.crt" "$work/trust2/ca.crt"

port=$(free_port)
reg=127.0.0.1:$port
"$bin" serve --addr "$reg" --data-dir "$work/data" --tls-cert "$work/server.crt" --tls-key "$work/server.key" \
  >"$work/server.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 1 100); do
  curl -s -o /dev/null --cacert "$work/ca1/ca.crt" "https://$reg/v2/" && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.1
done

check "curl: HTTP/2 over TLS" test "$(t curl -s -o /dev/null -w '%{http_code} %{http_version}' --cacert "$work/ca1/ca.crt" "https://$reg/v2/")" = "200 2"
check "curl: HTTP/1.1 over TLS" test "$(t curl -s -o /dev/null -w '%{http_code} %{http_version}' --http1.1 --cacert "$work/ca1/ca.crt" "https://$reg/v2/")" = "200 1.1"
check "curl: plain HTTP on the TLS port gets no answer" fails t curl -sf -m 5 "http://$reg/v2/"
check "curl: an unknown CA is refused" fails t curl -sf "https://$reg/v2/"

# A small image: one layer with one file, made offline with umoci.
mkdir -p "$work/rootfs" && echo "hello over TLS $RANDOM" >"$work/rootfs/hello.txt"
t umoci init --layout "$work/layout" && t umoci new --image "$work/layout:v1" \
  && t umoci insert --image "$work/layout:v1" "$work/rootfs/hello.txt" /hello.txt >/dev/null \
  || { echo "tls: umoci could not make the test image" >&2; exit 1; }

check "skopeo: push with verification, trusting the test CA" \
  t skopeo copy --quiet --dest-cert-dir "$work/trust1" "oci:$work/layout:v1" "docker://$reg/tls/app:v1"
check "skopeo: pull with verification, trusting the test CA" \
  t skopeo copy --quiet --src-cert-dir "$work/trust1" "docker://$reg/tls/app:v1" "oci:$work/copy:v1"
check "skopeo: the copy is the same image" \
  test "$(jq -r '.manifests[0].digest' "$work/copy/index.json")" = "$(jq -r '.manifests[0].digest' "$work/layout/index.json")"
check "skopeo: without the CA, verification fails" \
  fails t skopeo inspect --cert-dir "$work/empty" "docker://$reg/tls/app:v1"

# Renewal: a certificate from the second CA replaces the first; SIGHUP reloads it.
make_server_cert "$work/ca2" "$work/renewed"
cp "$work/renewed.key" "$work/server.key" && cp "$work/renewed.crt" "$work/server.crt"
kill -HUP "$server"
for _ in $(seq 1 50); do
  curl -s -o /dev/null --cacert "$work/ca2/ca.crt" "https://$reg/v2/" && break
  sleep 0.1
done
check "reload: the server is still the same process" kill -0 "$server"
check "reload: the renewed certificate is served" \
  t skopeo inspect --cert-dir "$work/trust2" "docker://$reg/tls/app:v1"
check "reload: the old CA no longer verifies" \
  fails t skopeo inspect --cert-dir "$work/trust1" "docker://$reg/tls/app:v1"

# docker over TLS, with the (renewed) CA where dockerd looks for it.
docker_test() {
  local T; T=$(mktemp -d /tmp/berth-tlsdk.XXXXXX) # short: dockerd's socket paths must fit
  echo "$T" >"$work/docker-dir"
  certsd=/etc/docker/certs.d/$reg
  mkdir -p "$certsd" && cp "$work/ca2/ca.crt" "$certsd/ca.crt"
  [ -e /etc/docker/key.json ] || touch "$work/remove-key-json"
  echo '{}' >"$T/daemon.json"
  dockerd --config-file "$T/daemon.json" --storage-driver=vfs --iptables=false --ip-masq=false \
    --bridge=none --data-root "$T/data" --exec-root "$T/exec" --pidfile "$T/dockerd.pid" \
    -H "unix://$T/docker.sock" >"$work/dockerd.log" 2>&1 &
  pids+=($!)
  export DOCKER_HOST=unix://$T/docker.sock DOCKER_CONFIG=$T/cli
  for _ in $(seq 1 60); do timeout 5 docker version >/dev/null 2>&1 && break; sleep 0.5; done
  tar -C "$work/rootfs" -cf "$T/rootfs.tar" hello.txt
  t docker import "$T/rootfs.tar" "$reg/tls/docker:v1" >/dev/null || return 1
  t docker push "$reg/tls/docker:v1" || return 1
  t docker rmi "$reg/tls/docker:v1" >/dev/null || return 1
  t docker pull --quiet "$reg/tls/docker:v1" || return 1
  grep -q 'uri=/v2/tls/docker/manifests/v1' "$work/server.log"
}
if command -v dockerd >/dev/null; then
  check "docker: push and pull over TLS (CA in certs.d)" docker_test
else
  echo "--- FAIL docker: no dockerd (infra/install-deps.sh installs docker.io)"; failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
