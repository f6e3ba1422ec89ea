#!/usr/bin/env python3
"""A broken upstream registry for the mirror test: PORT.

Every manifest it serves has bytes that do not match the digest it announces (and asked by
digest, bytes of another digest); a blob answers with a short body under a full Content-Length;
/v2/loop/... redirects to itself for ever; /v2/hang/... never answers. A mirror must refuse all
of it and store nothing.
"""
import hashlib, http.server, json, sys, time

MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + "0" * 64, "size": 2},
    "layers": [],
}).encode()
WRONG = "sha256:" + hashlib.sha256(MANIFEST + b" ").hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, head):
        path = self.path
        if path.startswith("/v2/hang/"):
            time.sleep(3600)
        if path.startswith("/v2/loop/"):
            self.send_response(307)
            self.send_header("Location", path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "/manifests/" in path:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Docker-Content-Digest", WRONG)
            self.send_header("Content-Length", str(len(MANIFEST)))
            self.end_headers()
            if not head:
                self.wfile.write(MANIFEST)
            return
        if "/blobs/" in path:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            if not head:
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(200 if path == "/v2/" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        if not head:
            self.wfile.write(b"{}")

    def do_GET(self):
        self.answer(False)

    def do_HEAD(self):
        self.answer(True)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
