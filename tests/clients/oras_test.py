#!/usr/bin/env python3
"""Push an artifact (a few files) with oras-py (PyPI `oras`), pull it back, compare the bytes.

  oras_test.py --registry 127.0.0.1:PORT --repo oras/artifact --tag t --mode monolithic|chunked
               --workdir DIR [--nonce N] [--big-mib 6] [--chunk-kib 1024]

monolithic: each blob goes up as POST (open a session) + one PUT with the whole body.
chunked:    POST, then one PATCH per chunk (Content-Range start-end), then PUT ?digest=.
Every HTTP request the client makes is recorded, so the test also checks that the wanted upload
path was really taken (for example, several PATCHes in chunked mode) and never hit a 5xx.
Exits 0 on success, 1 with a message otherwise. Plain HTTP (insecure=True), no auth.
"""
import argparse
import hashlib
import json
import os
import sys
import time
import types


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def ok(msg):
    print(f"  ok: {msg}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--mode", choices=["monolithic", "chunked"], required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--nonce", default=str(os.getpid()))
    ap.add_argument("--big-mib", type=int, default=6)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    args = ap.parse_args()

    import oras.client
    import oras.decorator
    import oras.defaults

    # Quirk: oras-py wraps every request in a retry decorator that, on an exception or a 500,
    # sleeps 2 + 3**attempt seconds, five times (over two minutes) before giving up. A failing
    # registry should fail this test quickly, so cap the sleeps at half a second.
    real_sleep = time.sleep
    oras.decorator.time = types.SimpleNamespace(sleep=lambda s: real_sleep(min(s, 0.5)))

    src = os.path.join(args.workdir, "src")
    out = os.path.join(args.workdir, "out")
    os.makedirs(src, exist_ok=True)
    os.makedirs(out, exist_ok=True)

    # The files: small text, a JSON document, and a big random one whose size is not a multiple
    # of the chunk size (so the last PATCH is a short one). Per-run content: every blob is new to
    # the registry (oras-py skips blobs that a HEAD finds, which would hide the upload path).
    files = {
        "readme.txt": f"berth oras test, mode {args.mode}, nonce {args.nonce}\n".encode(),
        "meta.json": json.dumps({"mode": args.mode, "nonce": args.nonce}).encode(),
        "big.bin": os.urandom(args.big_mib * 1024 * 1024 + 12345),
    }
    for name, data in files.items():
        with open(os.path.join(src, name), "wb") as f:
            f.write(data)

    client = oras.client.OrasClient(hostname=args.registry, insecure=True)

    # Record every request (method, path, status) made through the client's session.
    log = []
    real_request = client.session.request

    def recording_request(method, url, *a, **kw):
        r = real_request(method, url, *a, **kw)
        log.append((method, url.split(args.registry, 1)[-1], r.status_code))
        return r

    client.session.request = recording_request

    target = f"{args.registry}/{args.repo}:{args.tag}"
    chunk_size = args.chunk_kib * 1024
    # Quirk: oras-py refuses paths outside the current directory unless path validation is
    # turned off; run from the source directory and pass bare names, so the layer titles are
    # the bare file names too.
    os.chdir(src)
    resp = client.push(
        target=target,
        files=list(files),
        do_chunked=(args.mode == "chunked"),
        chunk_size=chunk_size,
        quiet=True,
    )
    if resp.status_code != 201:
        fail(f"manifest PUT answered {resp.status_code}: {resp.text[:500]}")
    pushed_digest = resp.headers.get("Docker-Content-Digest", "")
    ok(f"pushed {target} ({pushed_digest or 'no Docker-Content-Digest header'})")

    bad = [e for e in log if e[2] >= 500]
    if bad:
        fail(f"server errors during push: {bad}")
    methods = [m for m, _, _ in log]
    patches = [e for e in log if e[0] == "PATCH"]
    big_size = len(files["big.bin"])
    if args.mode == "chunked":
        want = -(-big_size // chunk_size)  # the big file alone needs this many PATCHes
        if len(patches) < want:
            fail(f"chunked push made {len(patches)} PATCH requests, expected at least {want}: {log}")
        if any(s != 202 for _, _, s in patches):
            fail(f"a PATCH was not answered 202: {patches}")
        ok(f"chunked upload used {len(patches)} PATCH requests of up to {chunk_size} bytes")
    else:
        if patches:
            fail(f"monolithic push made PATCH requests: {patches}")
        puts = [e for e in log if e[0] == "PUT" and "/blobs/uploads/" in e[1]]
        if len(puts) < len(files):
            fail(f"expected one blob PUT per file, got {puts}")
        ok(f"monolithic upload: {len(puts)} blob PUTs with the whole body, no PATCH")
    print(f"  requests: {' '.join(methods)}", flush=True)

    # The manifest the registry serves: the layers must be our files, by digest and size.
    manifest = client.get_manifest(target)
    layers = {
        l["annotations"][oras.defaults.annotation_title]: l for l in manifest.get("layers", [])
    }
    if sorted(layers) != sorted(files):
        fail(f"manifest layers {sorted(layers)} != pushed files {sorted(files)}")
    for name in files:
        p = os.path.join(src, name)
        if layers[name]["digest"] != sha256_file(p) or layers[name]["size"] != os.path.getsize(p):
            fail(f"manifest entry for {name} is wrong: {layers[name]}")
    ok("manifest lists every file with the right digest and size")

    paths = client.pull(target=target, outdir=out)
    got = sorted(os.path.basename(p) for p in paths)
    if got != sorted(files):
        fail(f"pulled {got}, expected {sorted(files)}")
    for name, data in files.items():
        with open(os.path.join(out, name), "rb") as f:
            back = f.read()
        if back != data:
            fail(f"{name}: pulled {len(back)} bytes that differ from the {len(data)} pushed")
    ok(f"pulled {len(files)} files back, byte for byte identical")

    bad = [e for e in log if e[2] >= 500]
    if bad:
        fail(f"server errors: {bad}")


if __name__ == "__main__":
    main()
