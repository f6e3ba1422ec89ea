#!/usr/bin/env python3
"""Fills a registry with a GC benchmark store through the HTTP API, then deletes a fraction.

    python3 bench/gc_store.py URL MANIFESTS BLOBS [DELETE_PERCENT] [THREADS]

Shape: MANIFESTS image manifests over REPOS repositories (100, or fewer for small stores), BLOBS
distinct small blobs (64 bytes each). Every manifest has its own config and 8 own layers (9 blobs),
plus 2 layers from its repository's shared pool (the other BLOBS - 9 * MANIFESTS blobs, split
between the repositories), so deleting a manifest frees its own 9 blobs and its manifest bytes
while the shared layers stay referenced. Every blob goes up in one request (POST ?digest=,
monolithic); each manifest is tagged. Then DELETE_PERCENT % of the manifests (every k-th) are
deleted by digest.

Prints one JSON line: counts, the bytes the deleted manifests own (what GC must free) and the
time each phase took. Standard library only; every request goes to 127.0.0.1 without proxies, on
keep-alive connections, one per thread. Any unexpected answer exits non-zero.
"""

import hashlib
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

OWN_LAYERS = 8
SHARED_PER_MANIFEST = 2
BLOB_SIZE = 64


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Client:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.conn = None

    def call(self, method, path, body=None, headers=None):
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise


def run_parallel(threads, items, work, host, port):
    """Runs work(client, item) for every item on `threads` threads; the first failure stops all."""
    lock = threading.Lock()
    it = iter(items)
    failure = []

    def worker():
        client = Client(host, port)
        while not failure:
            with lock:
                item = next(it, None)
            if item is None:
                return
            try:
                work(client, item)
            except Exception as e:  # noqa: BLE001 - reported below, then exit non-zero
                failure.append(repr(e))
                return

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if failure:
        sys.exit("gc_store: " + failure[0])


def blob_bytes(seed, i):
    # Deterministic, distinct and cheap: 64 bytes derived from the run's seed and the index.
    return hashlib.sha512(seed + i.to_bytes(8, "big")).digest()[:BLOB_SIZE]


def main():
    url, manifests, blobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    delete_pct = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    u = urllib.parse.urlparse(url)
    host, port = u.hostname, u.port
    own = 1 + OWN_LAYERS
    pool_total = blobs - own * manifests
    repos = max(1, min(100, manifests // 10))
    if pool_total < SHARED_PER_MANIFEST * repos:
        sys.exit(f"gc_store: {blobs} blobs are too few for {manifests} manifests (need >= {own * manifests + SHARED_PER_MANIFEST * repos})")
    seed = os.urandom(16)
    pool_per_repo = pool_total // repos
    # Blob index layout: [0, own*manifests) the manifests' own blobs, then each repository's pool
    # (the last repository takes the remainder).
    def pool_range(r):
        start = own * manifests + r * pool_per_repo
        end = own * manifests + pool_total if r == repos - 1 else start + pool_per_repo
        return start, end

    def repo_of_manifest(m):
        return m % repos

    def repo_of_blob(i):
        if i < own * manifests:
            return repo_of_manifest(i // own)
        return min((i - own * manifests) // pool_per_repo, repos - 1)

    def push_blob(client, i):
        data = blob_bytes(seed, i)
        status, body = client.call("POST", f"/v2/bench/r{repo_of_blob(i)}/blobs/uploads/?digest={digest(data)}", data,
                                   {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        if status != 201:
            raise RuntimeError(f"blob {i}: {status} {body[:300]!r}")

    def manifest_bytes(m):
        r = repo_of_manifest(m)
        first = own * m
        config = blob_bytes(seed, first)
        layers = [blob_bytes(seed, first + 1 + k) for k in range(OWN_LAYERS)]
        start, end = pool_range(r)
        n = end - start
        j = m // repos  # the manifest's place in its repository
        layers += [blob_bytes(seed, start + (j * SHARED_PER_MANIFEST + k) % n) for k in range(SHARED_PER_MANIFEST)]
        return json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(l), "size": len(l)} for l in layers],
        }, separators=(",", ":")).encode()

    def push_manifest(client, m):
        body = manifest_bytes(m)
        status, resp = client.call("PUT", f"/v2/bench/r{repo_of_manifest(m)}/manifests/t{m}", body,
                                   {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        if status != 201:
            raise RuntimeError(f"manifest {m}: {status} {resp[:300]!r}")

    step = max(1, round(100 / delete_pct)) if delete_pct > 0 else 0
    # Every step-th manifest of every repository.
    doomed = [m for m in range(manifests) if step and (m // repos) % step == 0]
    doomed_set = set(doomed)

    def delete_manifest(client, m):
        status, resp = client.call("DELETE", f"/v2/bench/r{repo_of_manifest(m)}/manifests/{digest(manifest_bytes(m))}")
        if status != 202:
            raise RuntimeError(f"delete {m}: {status} {resp[:300]!r}")

    t0 = time.monotonic()
    run_parallel(threads, range(blobs), push_blob, host, port)
    t1 = time.monotonic()
    run_parallel(threads, range(manifests), push_manifest, host, port)
    t2 = time.monotonic()
    run_parallel(threads, doomed, delete_manifest, host, port)
    t3 = time.monotonic()
    # What GC must free: the deleted manifests' bytes and every blob no kept manifest references
    # (a pool blob only deleted manifests used goes too).
    kept_refs = set()
    for m in range(manifests):
        if m not in doomed_set:
            kept_refs.update(l["digest"] for l in json.loads(manifest_bytes(m))["layers"])
            kept_refs.add(json.loads(manifest_bytes(m))["config"]["digest"])
    unreferenced = sum(1 for i in range(blobs) if digest(blob_bytes(seed, i)) not in kept_refs)
    freed = unreferenced * BLOB_SIZE + sum(len(manifest_bytes(m)) for m in doomed)
    print(json.dumps({
        "manifests": manifests, "blobs": blobs, "repositories": repos, "deleted_manifests": len(doomed),
        "expected_content_deleted": unreferenced + len(doomed), "expected_bytes_freed": freed,
        "blob_push_s": round(t1 - t0, 1), "manifest_push_s": round(t2 - t1, 1), "delete_s": round(t3 - t2, 1),
        "kept_sample": [f"bench/r{repo_of_manifest(m)}:t{m}" for m in range(manifests) if m not in doomed_set][:20],
    }))


if __name__ == "__main__":
    main()
