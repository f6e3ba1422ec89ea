"""HTTP helpers of the Lambda tests (edge_test.py, replica_test.py): one request at a time,
redirects never followed, and checks that stop the test at the first failure."""

import hashlib
import http.client
import os
import sys
import urllib.parse


def request(method, url, body=None, headers=None, chunked=False, timeout=120):
    """One request; returns (status, headers dict (lower-case), body bytes). Never follows."""
    parts = urllib.parse.urlsplit(url if "://" in url else os.environ["BERTH_URL"] + url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = parts.path + ("?" + parts.query if parts.query else "")
    headers = dict(headers or {})
    if chunked:
        conn.putrequest(method, target)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(body), 1 << 20):
            piece = body[i : i + (1 << 20)]
            conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
    else:
        conn.request(method, target, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def check(cond, what, detail=""):
    if not cond:
        print(f"FAIL: {what}\n{detail}", file=sys.stderr)
        sys.exit(1)
    print(f"  ok: {what}")


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()
