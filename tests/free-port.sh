#!/usr/bin/env bash
# Prints a TCP port on 127.0.0.1 that is free now: the kernel picks it (bind to port 0), so
# test servers never collide with each other or with other services on a fixed port.
#
#   port=$(bash tests/free-port.sh)
exec python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
