#!/usr/bin/env bash
# Waits until something accepts TCP connections on 127.0.0.1:PORT (up to 30 s); says which
# server did not come up otherwise. Used by the test scripts after starting a server.
#
#   bash tests/wait-port.sh PORT WHAT
for _ in $(seq 1 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exit 0
  sleep 0.1
done
echo "$2 did not open port $1" >&2
exit 1
