"""A byte-for-byte TCP front for a plain-HTTP test server that answers a TLS ClientHello the way
a plain HTTP server should: by closing the connection at once.

skopeo, podman and docker try https first even for a registry they are told is insecure, and
fall back to http when the TLS handshake fails. `wrangler dev`'s workerd entry (like
`cargo lambda watch`) instead waits for an HTTP request head that never comes, so every client
command hangs 10 s in its TLS handshake timeout before the fallback. This front closes a
connection whose first byte is a TLS handshake record (0x16) and pipes everything else through
unchanged, in both directions.

    python3 plain_front.py LISTEN_PORT UPSTREAM_PORT
"""

import asyncio
import sys


async def pipe(reader, writer, close=False):
    """Copies reader to writer until EOF; then half-closes the writer (or closes it)."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            if close:
                writer.close()
            elif writer.can_write_eof():
                writer.write_eof()
        except Exception:
            pass


async def handle(client_r, client_w):
    try:
        first = await client_r.read(1)
    except ConnectionError:
        first = b""
    if not first or first == b"\x16":
        client_w.close()
        return
    try:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", int(sys.argv[2]))
    except OSError:
        client_w.close()
        return
    up_w.write(first)
    await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
    up_w.close()
    client_w.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
