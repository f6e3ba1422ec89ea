#!/usr/bin/env python3
"""Tests of Berth's Worker that the shared HTTP suite does not cover, against `wrangler dev`.

    python3 tests/edge/edge_test.py --url http://127.0.0.1:8700 \
        --limited-url http://127.0.0.1:8702 --limit 1048576

--url: an instance with a body limit above 300 MiB. --limited-url: an instance with a low limit
(--limit, bytes) and S3 credentials configured (blob GETs answer 307 to a presigned URL).
Prints one `--- PASS name` / `--- FAIL name` line per test; exits non-zero if any failed.
Every test pushes to its own repository (with a per-run prefix), so runs do not interfere.
"""

import argparse
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

MiB = 1024 * 1024
RUN = os.urandom(4).hex()


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


WRANGLER_PROXY_RESET = b"Your worker restarted mid-request."


class Registry:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port

    def conn(self, timeout=600):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def req(self, method, path, body=None, headers=None, chunked=False):
        """One request on a fresh connection; returns (status, headers, body bytes)."""
        c = self.conn()
        try:
            c.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def req_again_after_proxy_reset(self, method, path, **kwargs):
        """A request the Worker may take twice with the same effect (opening a session, a
        monolithic push of the same bytes, a manifest PUT), sent once more when wrangler dev's
        proxy answered its 503 "worker restarted" (see `complete`): after the 300 MiB streamed
        PATCH the proxy's stale keep-alive connection can take the next test's first request
        too."""
        s, h, b = self.req(method, path, **kwargs)
        if s == 503 and b.startswith(WRANGLER_PROXY_RESET):
            print(f"    (wrangler dev's proxy reset {method} {path}; sending it again)", flush=True)
            s, h, b = self.req(method, path, **kwargs)
        return s, h, b

    def start(self, repo):
        s, h, b = self.req_again_after_proxy_reset("POST", f"/v2/{repo}/blobs/uploads/")
        check(s == 202, f"POST upload: {s} {b[:300]!r}")
        return h["location"], h

    def put_blob(self, repo, data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        s, _, b = self.req_again_after_proxy_reset("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body=data,
                                                   headers={"Content-Type": "application/octet-stream"})
        check(s == 201, f"monolithic push: {s} {b[:300]!r}")
        return d

    def complete(self, location, digest):
        """The closing PUT ?digest=. wrangler dev's proxy sends requests to the Worker's own
        workerd over pooled keep-alive connections; after a long streamed PATCH it sometimes
        reuses one the Worker's side has just closed, gets "Connection reset by peer" and turns
        that into 503 "Your worker restarted mid-request" for any non-GET request (its
        ProxyWorker.js compares the request URL with the worker's origin, so the message shows
        even when nothing restarted). Berth never saw that request: the test proves it by finding
        the session still open with every byte, then sends the PUT once more, as docker's retry
        would."""
        target = with_query(location, f"digest={digest}")
        s, h, b = self.req("PUT", target)
        if s == 503 and b.startswith(WRANGLER_PROXY_RESET):
            st, sh, sb = self.req("GET", location)
            check(st == 204, f"after the proxy's 503 the session is gone: {st} {sh} {sb[:200]!r}")
            print(f"    (wrangler dev's proxy reset the PUT before the Worker saw it; the session "
                  f"still holds {sh.get('range')}; sending it again)", flush=True)
            s, h, b = self.req("PUT", target)
        return s, h, b

    def put_manifest(self, repo, ref, manifest):
        raw = json.dumps(manifest).encode()
        s, h, b = self.req_again_after_proxy_reset("PUT", f"/v2/{repo}/manifests/{ref}", body=raw,
                                                   headers={"Content-Type": manifest["mediaType"]})
        return s, h, b, "sha256:" + hashlib.sha256(raw).hexdigest()

    def blob_digest(self, repo, digest):
        """Streams a blob back, returns (status, sha256 digest, length)."""
        c = self.conn()
        try:
            c.request("GET", f"/v2/{repo}/blobs/{digest}")
            r = c.getresponse()
            h, n = hashlib.sha256(), 0
            while True:
                piece = r.read(MiB)
                if not piece:
                    break
                h.update(piece)
                n += len(piece)
            return r.status, "sha256:" + h.hexdigest(), n, r.getheader("content-length")
        finally:
            c.close()


def with_query(location, query):
    return location + ("&" if "?" in location else "?") + query


def oci_error(body):
    try:
        return json.loads(body)["errors"][0]
    except Exception:
        return None


def image(reg, repo, label):
    config = reg.put_blob(repo, json.dumps({"label": label, "run": RUN}).encode())
    layer_data = os.urandom(1000)
    layer = reg.put_blob(repo, layer_data)
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                   "size": len(json.dumps({"label": label, "run": RUN}).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer, "size": len(layer_data)}],
    }


# ---------------------------------------------------------------------------------------------
# tests

def test_chunked_64mib_in_5mib_chunks(reg, args):
    """64 MiB in 5 MiB PATCHes with Content-Range: parts are 8 MiB, so every request leaves a
    staged tail the next one must pick up; a chunk that skips ahead gets 416 with the Range."""
    repo = f"edge-{RUN}/chunked"
    loc, h = reg.start(repo)
    check("oci-chunk-min-length" in h, f"no OCI-Chunk-Min-Length on POST: {h}")
    total, step = 64 * MiB, 5 * MiB
    digest, offset = hashlib.sha256(), 0
    while offset < total:
        n = min(step, total - offset)
        chunk = os.urandom(n)
        if offset == 10 * MiB:
            s, hh, b = reg.req("PATCH", loc, body=chunk, headers={
                "Content-Range": f"{offset + 1}-{offset + n}", "Content-Type": "application/octet-stream"})
            check(s == 416 and hh.get("range") == f"0-{offset - 1}", f"out-of-order chunk: {s} {hh} {b[:200]!r}")
        s, hh, b = reg.req("PATCH", loc, body=chunk, headers={
            "Content-Range": f"{offset}-{offset + n - 1}", "Content-Type": "application/octet-stream"})
        check(s == 202, f"PATCH at {offset}: {s} {b[:300]!r}")
        offset += n
        check(hh.get("range") == f"0-{offset - 1}", f"Range after {offset}: {hh.get('range')}")
        loc = hh["location"]
        digest.update(chunk)
    d = "sha256:" + digest.hexdigest()
    s, hh, b = reg.complete(loc, d)
    check(s == 201, f"final PUT: {s} {b[:300]!r}")
    s, got, n, length = reg.blob_digest(repo, d)
    check(s == 200 and got == d and n == total and length == str(total), f"pull: {s} {got} {n} {length}")
    s, hh, _ = reg.req("GET", f"/v2/{repo}/blobs/{d}", headers={"Range": f"bytes={total - 10}-"})
    check(s == 206 and hh.get("content-range") == f"bytes {total - 10}-{total - 1}/{total}", f"range: {s} {hh}")


def test_docker_streamed_300mib_layer(reg, args):
    """docker's way: one PATCH, chunked transfer encoding, no Content-Length; then PUT."""
    repo = f"edge-{RUN}/streamed"
    loc, _ = reg.start(repo)
    total = 300 * MiB
    digest = hashlib.sha256()

    def body():
        sent = 0
        while sent < total:
            piece = os.urandom(min(MiB, total - sent))
            digest.update(piece)
            sent += len(piece)
            yield piece

    s, hh, b = reg.req("PATCH", loc, body=body(), headers={"Content-Type": "application/octet-stream"}, chunked=True)
    check(s == 202 and hh.get("range") == f"0-{total - 1}", f"streamed PATCH: {s} {hh} {b[:300]!r}")
    d = "sha256:" + digest.hexdigest()
    s, _, b = reg.complete(hh["location"], d)
    check(s == 201, f"final PUT: {s} {b[:300]!r}")
    s, got, n, length = reg.blob_digest(repo, d)
    check(s == 200 and got == d and n == total, f"pull: {s} {got} {n} {length}")


def test_wrong_digest_leaves_nothing(reg, args):
    repo = f"edge-{RUN}/wrong-digest"
    loc, _ = reg.start(repo)
    data = os.urandom(9 * MiB)  # one full part and a tail
    s, hh, b = reg.req("PATCH", loc, body=data, headers={"Content-Type": "application/octet-stream"})
    check(s == 202, f"PATCH: {s} {b[:200]!r}")
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    s, _, b = reg.req("PUT", with_query(hh["location"], f"digest={wrong}"))
    check(s == 400 and (oci_error(b) or {}).get("code") == "DIGEST_INVALID", f"wrong digest: {s} {b[:300]!r}")
    for d in (wrong, "sha256:" + hashlib.sha256(data).hexdigest()):
        s, _, _ = reg.req("HEAD", f"/v2/{repo}/blobs/{d}")
        check(s == 404, f"blob {d} visible after a failed upload: {s}")


def test_concurrent_pushes_of_one_tag(reg, args):
    """Two clients push different images to the same tag at once, several rounds. Each push
    succeeds or fails cleanly (an OCI error); the tag ends at one of the pushed manifests,
    every manifest that was acknowledged is stored, and the tag is listed once."""
    repo = f"edge-{RUN}/race"
    manifests = [image(reg, repo, f"m{i}") for i in range(2)]
    for rnd in range(6):
        results = [None, None]

        def push(i):
            try:
                results[i] = reg.put_manifest(repo, "latest", manifests[i])
            except Exception as e:  # a transport error is a failure, not a clean error
                results[i] = e

        threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        ok = []
        for r in results:
            check(not isinstance(r, Exception), f"round {rnd}: push broke: {r!r}")
            s, _, b, d = r
            if s == 201:
                ok.append(d)
            else:
                check(oci_error(b) is not None and s < 500 or s in (409, 503),
                      f"round {rnd}: push failed uncleanly: {s} {b[:300]!r}")
        check(ok, f"round {rnd}: neither push succeeded: {results}")
        s, h, _ = reg.req("HEAD", f"/v2/{repo}/manifests/latest",
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        check(s == 200 and h.get("docker-content-digest") in ok,
              f"round {rnd}: tag is {h.get('docker-content-digest')}, pushed {ok}")
        for d in ok:
            s, _, _ = reg.req("HEAD", f"/v2/{repo}/manifests/{d}",
                              headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            check(s == 200, f"round {rnd}: acknowledged manifest {d} is missing: {s}")
    s, _, b = reg.req("GET", f"/v2/{repo}/tags/list")
    check(s == 200 and json.loads(b)["tags"] == ["latest"], f"tags: {s} {b!r}")


def test_concurrent_writes_to_one_upload(reg, args):
    """Two PATCHes to one upload session at the same time: R2's conditional write lets one
    claim it; the other gets 416 with the Range (or runs after it). Whatever was acknowledged is
    exactly what the session holds."""
    repo = f"edge-{RUN}/upload-race"
    loc, _ = reg.start(repo)
    data = [os.urandom(6 * MiB), os.urandom(6 * MiB)]
    results = [None, None]

    def patch(i):
        results[i] = reg.req("PATCH", loc, body=data[i], headers={"Content-Type": "application/octet-stream"})

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    accepted = [i for i in range(2) if results[i][0] == 202]
    for i in range(2):
        check(results[i][0] in (202, 416), f"PATCH {i}: {results[i][0]} {results[i][2][:200]!r}")
    check(accepted, "neither PATCH was accepted")
    s, h, _ = reg.req("GET", loc)
    check(s == 204 and h.get("range") == f"0-{6 * MiB * len(accepted) - 1}", f"status: {s} {h}")
    content = b"".join(data[i] for i in accepted)  # in order only when both were accepted in order
    if len(accepted) == 1:
        d = "sha256:" + hashlib.sha256(content).hexdigest()
        s, _, b = reg.req("PUT", with_query(h["location"], f"digest={d}"))
        check(s == 201, f"completing with the accepted bytes: {s} {b[:200]!r}")


KILLED_CLIENT = r"""
import hashlib, http.client, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection(host, port)
c.putrequest("PATCH", path)
c.putheader("Content-Type", "application/octet-stream")
c.putheader("Transfer-Encoding", "chunked")
c.endheaders()
for i in range(200):  # up to 200 MiB; killed long before
    piece = hashlib.sha256(str(i).encode()).digest() * 32768
    c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
    sys.stdout.write("."); sys.stdout.flush()
"""


def killed_client_bytes(n):
    """The first n bytes the killed client sends (1 MiB pieces, each a repeated sha256)."""
    out, i = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(str(i).encode()).digest() * 32768
        i += 1
    return bytes(out[:n])


def test_killed_upload_leaves_nothing(reg, args):
    """A client killed in the middle of a streamed PATCH. Nothing becomes visible (no blob, no
    repository), and the session holds exactly a prefix of what the client sent: whatever the
    runtime made of the cut-off body (an error, or an early end), completing the upload with the
    digest of that prefix works, so no byte was half-written or lost from the hash state."""
    repo = f"edge-{RUN}/killed"
    loc, _ = reg.start(repo)
    p = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, reg.host, str(reg.port), loc],
                         stdout=subprocess.PIPE)
    got = b""
    while len(got) < 20:  # 20 MiB sent: two full parts uploaded to R2 by now
        piece = p.stdout.read(1)
        if not piece:
            break
        got += piece
    p.send_signal(signal.SIGKILL)
    p.wait()
    # The client keeps sending while this reads its first 20 dots: count every piece it sent
    # before the kill (a dot follows each), or a loaded machine makes the bound below a lie.
    got += p.stdout.read()
    check(len(got) >= 20, f"the client died early ({len(got)} MiB sent)")
    time.sleep(2)
    s, h, b = reg.req("GET", loc)
    check(s == 204, f"upload status after the kill: {s} {h} {b[:200]!r}")
    held = int(h["range"].split("-")[1]) + 1 if h["range"] != "0-0" else 0
    check(held <= (len(got) + 1) * MiB, f"the session holds {held} bytes, more than was sent")
    s, _, _ = reg.req("GET", f"/v2/{repo}/tags/list")
    check(s == 404, f"repository visible after a killed upload: {s}")
    d = "sha256:" + hashlib.sha256(killed_client_bytes(held)).hexdigest()
    s, _, _ = reg.req("HEAD", f"/v2/{repo}/blobs/{d}")
    check(s == 404, f"blob visible before its upload was completed: {s}")
    s, _, b = reg.req("PUT", with_query(h["location"], f"digest={d}"))
    check(s == 201, f"completing with the {held} bytes the session holds: {s} {b[:300]!r}")
    s, got_d, n, _ = reg.blob_digest(repo, d)
    check(s == 200 and got_d == d and n == held, f"pull: {s} {got_d} {n}")
    print(f"    (the session kept {held} of the bytes sent before the kill)")


def test_body_over_the_limit_is_413(lim, args):
    """Above MAX_REQUEST_BODY: 413 with an OCI error that names the limit and the way out."""
    repo = f"edge-{RUN}/limit"
    limit = args.limit
    loc, _ = lim.start(repo)
    for name, kwargs in [
        ("declared", dict(body=os.urandom(limit + 1))),
        ("streamed", dict(body=iter([os.urandom(limit // 2 + 1), os.urandom(limit // 2 + 1)]), chunked=True)),
    ]:
        s, _, b = lim.req("PATCH", loc, headers={"Content-Type": "application/octet-stream"}, **kwargs)
        e = oci_error(b) or {}
        check(s == 413 and e.get("code") == "SIZE_INVALID" and str(limit) in e.get("message", "")
              and "chunks" in e.get("message", ""), f"{name}: {s} {b[:400]!r}")
    # containerd's way, the whole blob in the final PUT: the same 413, and nothing visible.
    big = os.urandom(limit + 1)
    d = "sha256:" + hashlib.sha256(big).hexdigest()
    loc2, _ = lim.start(repo)
    s, _, b = lim.req("PUT", with_query(loc2, f"digest={d}"), body=big,
                      headers={"Content-Type": "application/octet-stream"})
    check(s == 413 and (oci_error(b) or {}).get("code") == "SIZE_INVALID", f"PUT over the limit: {s} {b[:300]!r}")
    s, _, _ = lim.req("HEAD", f"/v2/{repo}/blobs/{d}")
    check(s == 404, f"blob visible after a refused PUT: {s}")
    # The session is untouched, and a chunk under the limit still goes through.
    s, h, _ = lim.req("GET", loc)
    check(s == 204 and h.get("range") == "0-0", f"status after 413: {s} {h}")
    s, h, b = lim.req("PATCH", loc, body=os.urandom(limit // 2), headers={"Content-Type": "application/octet-stream"})
    check(s == 202, f"chunk under the limit: {s} {b[:200]!r}")


def test_blob_get_redirects_to_presigned_url(lim, args):
    """The 307 goes to a SigV4-presigned URL that an S3 implementation checking signatures
    (s3s-fs, standing in for R2's S3 API) honours; tampered or expired, it is refused."""
    repo = f"edge-{RUN}/redirect"
    data = os.urandom(4096)
    d = lim.put_blob(repo, data)
    s, h, _ = lim.req("GET", f"/v2/{repo}/blobs/{d}")
    loc = h.get("location", "")
    u = urllib.parse.urlsplit(loc)
    q = urllib.parse.parse_qs(u.query)
    # Uploaded blobs are pointers to data/<upload id>; small blobs pushed whole sit at blobs/<digest>.
    check(s == 307 and u.path.startswith(("/berth-blobs/data/", "/berth-blobs/blobs/"))
          and q.get("X-Amz-Algorithm") == ["AWS4-HMAC-SHA256"] and q.get("X-Amz-Expires") == [str(args.presign_secs)],
          f"GET: {s} {h}")
    # R2 would hold the object; s3s-fs keeps objects as files under its root.
    key = urllib.parse.unquote(u.path[len("/berth-blobs/"):])
    path = os.path.join(args.s3_root, "berth-blobs", key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    got = urllib.request.urlopen(loc).read()
    check(got == data, "the presigned URL did not return the blob")
    sig = q["X-Amz-Signature"][0]
    tampered = loc.replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:])
    for what, url in [("tampered signature", tampered),
                      ("another key", loc.replace(u.path, u.path + "x"))]:
        try:
            urllib.request.urlopen(url)
            raise Fail(f"{what}: the presigned URL was honoured")
        except urllib.error.HTTPError as e:
            check(e.code == 403, f"{what}: {e.code}")
    time.sleep(args.presign_secs + 1.5)
    try:
        urllib.request.urlopen(loc)
        raise Fail("an expired presigned URL was honoured")
    except urllib.error.HTTPError as e:
        check(e.code == 403, f"expired: {e.code}")
    s, h, _ = lim.req("HEAD", f"/v2/{repo}/blobs/{d}")
    check(s == 200 and h.get("content-length") == "4096", f"HEAD is answered directly: {s} {h}")
    s, h, _ = lim.req("GET", f"/v2/{repo}/blobs/sha256:{'0' * 64}")
    check(s == 404, f"unknown blob is 404, not a redirect: {s} {h}")


def test_blob_pulls_through_the_cache(reg, args):
    """The first pull of an uploaded blob streams from R2 and fills the Workers cache from that
    same read; later pulls (whole or a range) come from the cache, with the same bytes."""
    repo = f"edge-{RUN}/cache"
    data = os.urandom(3 * MiB + 17)
    d = reg.put_blob(repo, data)
    s, h, b = reg.req("GET", f"/v2/{repo}/blobs/{d}")
    check(s == 200 and b == data and "x-berth-cache" not in h, f"first pull: {s} {h}")
    for _ in range(20):  # the fill runs after the first response (waitUntil)
        time.sleep(0.25)
        s, h, b = reg.req("GET", f"/v2/{repo}/blobs/{d}")
        if h.get("x-berth-cache") == "hit":
            break
    check(s == 200 and h.get("x-berth-cache") == "hit" and b == data
          and h.get("content-length") == str(len(data)), f"second pull: {s} {h}")
    s, h, b = reg.req("GET", f"/v2/{repo}/blobs/{d}", headers={"Range": "bytes=1000-1999"})
    check(s == 206 and b == data[1000:2000] and h.get("content-range") == f"bytes 1000-1999/{len(data)}",
          f"range: {s} {h} {len(b)}")
    # The cache never widens access: another repository still gets 404.
    s, _, _ = reg.req("GET", f"/v2/edge-{RUN}/other/blobs/{d}")
    check(s == 404, f"blob of another repository: {s}")


def test_range_before_any_pull_fills_nothing(reg, args):
    """A range GET of a blob nobody pulled yet comes from R2 (exact bytes) and caches nothing:
    only a full read fills the cache, so the first full GET after it is still a miss."""
    repo = f"edge-{RUN}/cache-range"
    data = os.urandom(9 * MiB + 5)
    d = reg.put_blob(repo, data)
    for _ in range(2):
        s, h, b = reg.req("GET", f"/v2/{repo}/blobs/{d}", headers={"Range": f"bytes={5 * MiB}-"})
        check(s == 206 and b == data[5 * MiB:] and "x-berth-cache" not in h
              and h.get("content-range") == f"bytes {5 * MiB}-{len(data) - 1}/{len(data)}", f"range: {s} {h} {len(b)}")
        time.sleep(0.5)
    s, h, b = reg.req("GET", f"/v2/{repo}/blobs/{d}")
    check(s == 200 and b == data and "x-berth-cache" not in h, f"first full pull after ranges: {s} {h}")


def test_client_gone_mid_first_pull_caches_no_truncated_blob(reg, args):
    """A client that hangs up in the middle of the first pull (which fills the cache from the
    same R2 read) must not leave a truncated copy in the cache: every later pull is whole."""
    repo = f"edge-{RUN}/cache-cut"
    data = os.urandom(12 * MiB + 3)
    d = reg.put_blob(repo, data)
    c = reg.conn()
    c.request("GET", f"/v2/{repo}/blobs/{d}")
    r = c.getresponse()
    check(r.status == 200, f"first pull: {r.status}")
    r.read(MiB)
    c.sock.close()
    c.close()
    time.sleep(1)
    for _ in range(6):
        s, h, b = reg.req("GET", f"/v2/{repo}/blobs/{d}")
        check(s == 200 and b == data, f"pull after a cut first pull: {s} {h} {len(b)} bytes")
        time.sleep(0.25)


def analytics_points(log, request_id, want=1, wait=10):
    """The `berth: analytics {json}` lines (ANALYTICS_ECHO) the Worker printed for a request id."""
    deadline = time.time() + wait
    while True:
        points = []
        with open(log, errors="replace") as f:
            for line in f:
                at = line.find("berth: analytics ")
                if at >= 0:
                    p = json.loads(line[at + len("berth: analytics "):].strip())
                    if p["blobs"][5] == request_id:
                        points.append(p)
        if len(points) >= want or time.time() > deadline:
            return points
        time.sleep(0.2)


def test_each_request_is_one_analytics_data_point(reg, args):
    """Every registry request writes one Analytics Engine data point (the dataset bound as
    METRICS; wrangler dev's local one discards it, ANALYTICS_ECHO prints it): a pull is indexed
    by its repository and counted as one, a push too, a refused or missing read is not."""
    repo = f"edge-{RUN}/analytics"
    m = image(reg, repo, "analytics")
    s, _, b, digest = reg.put_manifest(repo, "v1", m)
    check(s == 201, f"manifest PUT: {s} {b[:200]!r}")
    raw = json.dumps(m).encode()
    cases = [
        ("GET", f"/v2/{repo}/manifests/v1", 200,
         ["manifest_get", "GET", "200", "pull", repo], [1, None, 0, len(raw), 1, 0], repo),
        ("HEAD", f"/v2/{repo}/manifests/v1", 200,
         ["manifest_get", "HEAD", "200", "", ""], [1, None, 0, 0, 0, 0], "manifest_get"),
        ("GET", f"/v2/{repo}/manifests/nope", 404,
         ["manifest_get", "GET", "404", "", ""], [1, None, 0, None, 0, 0], "manifest_get"),
        ("PUT", f"/v2/{repo}/manifests/v2", 201,
         ["manifest_put", "PUT", "201", "push", repo], [1, None, len(raw), 0, 0, 1], repo),
    ]
    for i, (method, path, status, blobs, doubles, index) in enumerate(cases):
        rid = f"analytics-{RUN}-{i}"
        headers = {"X-Request-Id": rid}
        body = None
        if method == "PUT":
            body, headers["Content-Type"] = raw, m["mediaType"]
        s, h, _ = reg.req(method, path, body=body, headers=headers)
        check(s == status and h.get("x-request-id") == rid, f"{method} {path}: {s} {h}")
        points = analytics_points(args.a_log, rid)
        check(len(points) == 1, f"{method} {path}: {len(points)} data points for request {rid}")
        p = points[0]
        check(p["indexes"] == [index] and p["blobs"][:5] == blobs,
              f"{method} {path}: data point {p}, wanted index {index} and blobs {blobs}")
        for j, want in enumerate(doubles):
            check(want is None or p["doubles"][j] == want, f"{method} {path}: double{j + 1} = {p['doubles'][j]}, wanted {want}")
        check(0 <= p["doubles"][1] < 60, f"{method} {path}: seconds {p['doubles'][1]}")
    with open(args.a_log, errors="replace") as f:
        check("data point not written" not in f.read(), "the Worker failed to write a data point")


TESTS = [
    ("chunked-64mib", test_chunked_64mib_in_5mib_chunks, "url"),
    ("streamed-300mib", test_docker_streamed_300mib_layer, "url"),
    ("wrong-digest", test_wrong_digest_leaves_nothing, "url"),
    ("concurrent-tag", test_concurrent_pushes_of_one_tag, "url"),
    ("concurrent-upload", test_concurrent_writes_to_one_upload, "url"),
    ("killed-upload", test_killed_upload_leaves_nothing, "url"),
    ("limit-413", test_body_over_the_limit_is_413, "limited_url"),
    ("blob-cache", test_blob_pulls_through_the_cache, "url"),
    ("cache-range-first", test_range_before_any_pull_fills_nothing, "url"),
    ("cache-cut-pull", test_client_gone_mid_first_pull_caches_no_truncated_blob, "url"),
    ("presigned-redirect", test_blob_get_redirects_to_presigned_url, "limited_url"),
    ("analytics", test_each_request_is_one_analytics_data_point, "url"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--limited-url", required=True)
    ap.add_argument("--limit", type=int, required=True)
    ap.add_argument("--s3-root", required=True, help="s3s-fs's directory (the limited Worker's S3_ENDPOINT)")
    ap.add_argument("--presign-secs", type=int, required=True, help="the limited Worker's PRESIGN_SECS")
    ap.add_argument("--a-log", required=True, help="the Worker at --url's log (it runs with ANALYTICS_ECHO)")
    ap.add_argument("only", nargs="*")
    args = ap.parse_args()
    passed = failed = 0
    for name, fn, which in TESTS:
        if args.only and name not in args.only:
            continue
        t = time.time()
        try:
            fn(Registry(getattr(args, which)), args)
            print(f"--- PASS {name} ({time.time() - t:.1f}s)", flush=True)
            passed += 1
        except Exception as e:
            detail = str(e) if isinstance(e, Fail) else traceback.format_exc()
            print(f"--- FAIL {name} ({time.time() - t:.1f}s): {detail}", flush=True)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
