"""Sits between a function and `cargo lambda watch`'s runtime API and makes the invocation
deadline what AWS sends: Unix epoch milliseconds.

cargo lambda 1.9.2 answers `GET .../runtime/invocation/next` with `Lambda-Runtime-Deadline-Ms:
600000`, a duration, where AWS sends the epoch time at which the invocation is killed. HTTP
requests never look at it; the scheduled GC (lambda/src/scheduled.rs) stops a margin before it
and so, given a deadline in 1970, does no step at all. A value too small to be an epoch time
(before 2001) is taken as the time left and sent as now + that.

Requests go to the emulator byte for byte; responses are framed (Content-Length or chunked) only
to find each head, and only that header changes.

    python3 deadline_shim.py LISTEN_PORT UPSTREAM_PORT
"""

import asyncio
import re
import sys
import time

LISTEN, UPSTREAM = int(sys.argv[1]), int(sys.argv[2])
DEADLINE = re.compile(rb"(?im)^(lambda-runtime-deadline-ms:[ \t]*)(\d+)")


def fix(head):
    def repl(m):
        value = int(m.group(2))
        if value < 978307200000:
            value += int(time.time() * 1000)
        return m.group(1) + str(value).encode()
    return DEADLINE.sub(repl, head)


async def requests(client, upstream):
    while data := await client.read(1 << 16):
        upstream.write(data)
        await upstream.drain()
    upstream.write_eof()


async def responses(upstream, client):
    while True:
        head = await upstream.readuntil(b"\r\n\r\n")
        client.write(fix(head))
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            while True:
                size_line = await upstream.readuntil(b"\r\n")
                client.write(size_line)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (line := await upstream.readuntil(b"\r\n")) != b"\r\n":
                        client.write(line)
                    client.write(b"\r\n")
                    break
                client.write(await upstream.readexactly(size + 2))
        else:
            m = re.search(rb"(?im)^content-length:[ \t]*(\d+)", head)
            if m:
                client.write(await upstream.readexactly(int(m.group(1))))
        await client.drain()


async def handle(client_r, client_w):
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    except OSError:
        client_w.close()
        return
    tasks = [asyncio.create_task(requests(client_r, up_w)), asyncio.create_task(responses(up_r, client_w))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        # The function closed its side and the emulator answered, or either side failed.
        await tasks[1]
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        client_w.close()
        up_w.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN, limit=1 << 20)
    async with server:
        await server.serve_forever()


asyncio.run(main())
