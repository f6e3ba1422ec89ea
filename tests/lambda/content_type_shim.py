"""A tiny HTTP/1.1 front for `cargo lambda watch`, doing three things AWS's own front (Function
URLs, API Gateway HTTP APIs) does and the emulator does not:

- a body that is not UTF-8 and has no Content-Type makes the emulator answer 500 before the
  function runs (AWS base64-encodes such bodies): the shim adds
  `Content-Type: application/octet-stream` to requests that carry a body but no Content-Type
  (Berth treats a missing Content-Type and application/octet-stream alike, docs/protocol.md);
- the emulator keeps only one value of a repeated header (AWS joins them with commas): the shim
  joins repeated headers into one comma-separated line;
- AWS's front tells the function the scheme the client used in `X-Forwarded-Proto` (lambda_http
  builds the request URI from it, and auth's token realm with it); without it the function
  would assume https. The shim serves plain http and says so, unless the client already did.

Everything else passes through byte for byte (requests are re-framed only to find where each
one ends; responses are piped), so the tests see what production does.

    python3 content_type_shim.py LISTEN_PORT UPSTREAM_PORT
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))
from plain_front import pipe  # noqa: E402

LISTEN, UPSTREAM = int(sys.argv[1]), int(sys.argv[2])


def join_repeated(lines):
    """Joins repeated header fields into one line, in order, as AWS does."""
    out, seen = [lines[0]], {}
    for line in lines[1:]:
        if b":" not in line:
            out.append(line)
            continue
        name, value = line.split(b":", 1)
        key = name.strip().lower()
        if key in seen:
            i = seen[key]
            out[i] = out[i] + b", " + value.strip()
        else:
            seen[key] = len(out)
            out.append(name + b": " + value.strip())
    return out


async def forward_requests(client, upstream):
    # Clients that are not told a registry is plain http (skopeo, podman, docker) try TLS first
    # and fall back when that fails. An HTTP server fails it at once; the emulator would wait for
    # a request head that never comes, and every such client would hang 10 s in its TLS
    # handshake. A TLS record (0x16, handshake) is not HTTP: close, as a plain server does.
    first = await client.read(1)
    if not first or first == b"\x16":
        return
    pending = first
    while True:
        head = pending + await client.readuntil(b"\r\n\r\n")
        pending = b""
        lines = head[:-4].split(b"\r\n")
        names = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip()
                 for l in lines[1:] if b":" in l}
        chunked = b"chunked" in names.get(b"transfer-encoding", b"").lower()
        try:
            length = int(names.get(b"content-length", b"0"))
        except ValueError:
            length = 0
        if (chunked or length > 0) and b"content-type" not in names:
            lines.insert(1, b"Content-Type: application/octet-stream")
        if b"x-forwarded-proto" not in names:
            lines.insert(1, b"X-Forwarded-Proto: http")
        lines = join_repeated(lines)
        upstream.write(b"\r\n".join(lines) + b"\r\n\r\n")
        if chunked:
            while True:
                size_line = await client.readuntil(b"\r\n")
                upstream.write(size_line)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, then the blank line.
                    while (line := await client.readuntil(b"\r\n")) != b"\r\n":
                        upstream.write(line)
                    upstream.write(b"\r\n")
                    break
                upstream.write(await client.readexactly(size + 2))
                await upstream.drain()
        else:
            remaining = length
            while remaining > 0:
                data = await client.read(min(remaining, 1 << 16))
                if not data:
                    return
                upstream.write(data)
                remaining -= len(data)
                await upstream.drain()
        await upstream.drain()


async def handle(client_r, client_w):
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    except OSError:
        client_w.close()
        return
    back = asyncio.create_task(pipe(up_r, client_w, close=True))
    try:
        await forward_requests(client_r, up_w)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        pass
    finally:
        try:
            up_w.write_eof()
        except Exception:
            pass
    await back


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN, limit=1 << 20)
    async with server:
        await server.serve_forever()


asyncio.run(main())
