#!/usr/bin/env bash
# Prints a TCP port on 127.0.0.1 that is free now: the kernel picks it (bind to port 0), so
# test servers never collide with each other or with other services on a fixed port.
# With COUNT, the port and the COUNT-1 after it are all free (for a launcher that derives its
# helper ports from one: PORT+1, PORT+2, …); it retries until it finds such a run.
#
#   port=$(bash tests/free-port.sh)
#   base=$(bash tests/free-port.sh 4)
exec python3 - "${1:-1}" <<'PY'
import socket, sys
count = int(sys.argv[1])
for _ in range(200):
    held = [socket.socket()]
    held[0].bind(("127.0.0.1", 0))
    base = held[0].getsockname()[1]
    try:
        for p in range(base + 1, base + count):
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in held:
            s.close()
    print(base)
    sys.exit(0)
sys.exit("no run of %d free ports found" % count)
PY
