"""Sits between a function and `cargo lambda watch`'s runtime API and makes the invocation
deadline what AWS sends: Unix epoch milliseconds.

cargo lambda 1.9.2 answers `GET .../runtime/invocation/next` with `Lambda-Runtime-Deadline-Ms:
600000`, a duration, where AWS sends the epoch time at which the invocation is killed. HTTP
requests never look at it; the scheduled GC (lambda/src/scheduled.rs) stops a margin before it
and so, given a deadline in 1970, does no step at all. A value too small to be an epoch time
(before 2001) is taken as the time left and sent as now + that; everything else passes through.

    python3 deadline_shim.py LISTEN_PORT UPSTREAM_PORT
"""

import http.client
import http.server
import sys
import time

LISTEN, UPSTREAM = int(sys.argv[1]), int(sys.argv[2])
HEADER = "lambda-runtime-deadline-ms"


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
        skip = ("host", "content-length", "transfer-encoding")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        # No timeout: `next` is a long poll that returns when an invocation arrives.
        up = http.client.HTTPConnection("127.0.0.1", UPSTREAM)
        up.request(self.command, self.path, body=body, headers=headers)
        r = up.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() in ("content-length", "transfer-encoding", "connection"):
                continue
            if k.lower() == HEADER and v.isdigit() and int(v) < 978307200000:
                v = str(int(time.time() * 1000) + int(v))
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        up.close()

    do_GET = do_POST = do_PUT = forward


http.server.ThreadingHTTPServer(("127.0.0.1", LISTEN), Proxy).serve_forever()
