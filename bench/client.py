#!/usr/bin/env python3
"""Helpers for bench/run.sh: free ports, readiness, pushing the small test image, and the report.

Only the standard library; every request goes to 127.0.0.1 through http.client (no proxies).
Any unexpected registry answer is printed in full (request and response) and exits non-zero, so a
misbehaving server is reported rather than worked around.
"""

import gzip
import hashlib
import http.client
import io
import json
import os
import socket
import statistics
import sys
import tarfile
import time
import urllib.parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# What docker/containerd send when pulling by tag.
ACCEPT = ", ".join([
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


class Failure(Exception):
    pass


def die(msg):
    print(f"client.py: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------- HTTP

def request(base, method, target, body=None, headers=None):
    """One request to base (http://127.0.0.1:PORT). Returns (status, headers dict lower-cased, body, trace)."""
    u = urllib.parse.urlsplit(base)
    if u.hostname != "127.0.0.1":
        raise Failure(f"refusing to contact {u.hostname}: only 127.0.0.1 is allowed")
    if target.startswith("http://") or target.startswith("https://"):
        t = urllib.parse.urlsplit(target)
        if t.hostname != "127.0.0.1" or t.scheme != "http":
            raise Failure(f"refusing to follow {target}: only http://127.0.0.1 is allowed")
        u = t
        target = t.path + (("?" + t.query) if t.query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = dict(headers or {})
    conn.request(method, target, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    hdrs = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    shown = body if isinstance(body, (bytes, type(None))) else b"<stream>"
    trace = (
        f"> {method} {target}\n"
        + "".join(f"> {k}: {v}\n" for k, v in headers.items())
        + (f"> ({len(shown)} byte body)\n" if shown else "")
        + f"< HTTP {resp.status} {resp.reason}\n"
        + "".join(f"< {k}: {v}\n" for k, v in resp.getheaders())
        + f"< {data[:2000]!r}\n"
    )
    return resp.status, hdrs, data, trace


def expect(cond, what, trace):
    if not cond:
        raise Failure(f"{what}\n{trace}")


def resolve(base, location):
    return urllib.parse.urljoin(base + "/", location)


def add_query(url, key, value):
    sep = "&" if urllib.parse.urlsplit(url).query else "?"
    return f"{url}{sep}{key}={urllib.parse.quote(value, safe=':')}"


def push_blob(base, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    st, h, _, tr = request(base, "POST", f"/v2/{repo}/blobs/uploads/")
    expect(st == 202, f"blob upload start: expected 202, got {st}", tr)
    expect("location" in h, "blob upload start: no Location header", tr)
    url = add_query(resolve(base, h["location"]), "digest", digest)
    st, h, _, tr = request(base, "PUT", url, body=data, headers={
        "Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    expect(st == 201, f"monolithic blob PUT: expected 201, got {st}", tr)
    got = h.get("docker-content-digest")
    expect(got in (None, digest), f"blob PUT: Docker-Content-Digest {got} != {digest}", tr)
    return digest


def tiny_layer():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        payload = b"berth benchmark layer\n" * 40
        info = tarfile.TarInfo("bench/hello.txt")
        info.size, info.mtime, info.mode = len(payload), 0, 0o644
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    return tar_bytes, gzip.compress(tar_bytes, mtime=0)


def push_image(base, repo, tag):
    tar_bytes, layer = tiny_layer()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]},
    }, separators=(",", ":")).encode()
    config_digest = push_blob(base, repo, config)
    layer_digest = push_blob(base, repo, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
    }, indent=3).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    st, h, _, tr = request(base, "PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
                           headers={"Content-Type": OCI_MANIFEST})
    expect(st == 201, f"manifest PUT: expected 201, got {st}", tr)
    got = h.get("docker-content-digest")
    expect(got == manifest_digest, f"manifest PUT: Docker-Content-Digest {got} != {manifest_digest}", tr)

    # What the load test will hit must answer correctly first.
    st, h, body, tr = request(base, "GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
    expect(st == 200, f"manifest GET by tag: expected 200, got {st}", tr)
    expect(body == manifest, "manifest GET by tag: body differs from what was pushed", tr)
    expect(h.get("docker-content-digest") == manifest_digest,
           f"manifest GET: Docker-Content-Digest {h.get('docker-content-digest')} != {manifest_digest}", tr)
    expect(h.get("content-type", "").split(";")[0].strip() == OCI_MANIFEST,
           f"manifest GET: Content-Type {h.get('content-type')} != {OCI_MANIFEST}", tr)
    st, h, body, tr = request(base, "HEAD", f"/v2/{repo}/blobs/{layer_digest}")
    expect(st == 200, f"blob HEAD: expected 200, got {st}", tr)
    expect(h.get("content-length") == str(len(layer)),
           f"blob HEAD: Content-Length {h.get('content-length')} != {len(layer)}", tr)
    expect(h.get("docker-content-digest") in (None, layer_digest),
           f"blob HEAD: Docker-Content-Digest {h.get('docker-content-digest')} != {layer_digest}", tr)
    return {
        "manifest_digest": manifest_digest, "manifest_size": len(manifest),
        "config_digest": config_digest, "layer_digest": layer_digest, "layer_size": len(layer),
        "accept": ACCEPT,
    }


# ---------------------------------------------------------------- small commands

def free_ports(n, lo=5200, hi=5299):
    ports = []
    for port in range(lo, hi + 1):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        ports.append(port)
        if len(ports) == n:
            return ports
    die(f"fewer than {n} free ports in {lo}-{hi}")


def wait_ready(base, timeout, pid):
    deadline = time.time() + timeout
    last = "no answer"
    while time.time() < deadline:
        if pid and not os.path.exists(f"/proc/{pid}"):
            die(f"server pid {pid} exited before answering {base}/v2/")
        try:
            st, _, _, _ = request(base, "GET", "/v2/")
            if st in (200, 401):
                return
            last = f"HTTP {st}"
        except (OSError, http.client.HTTPException) as e:
            last = str(e)
        time.sleep(0.1)
    die(f"{base}/v2/ not ready after {timeout}s ({last})")


def prefault(mib):
    """Touch `mib` MiB of anonymous memory, then free it. On a VM whose guest memory is backed
    lazily by the host (Firecracker here), the first touch of a guest page costs a host fault:
    growing the page cache into never-used memory writes files at ~0.4 GB/s instead of ~3.5 GB/s.
    Whichever server first grows the page cache would pay it; pre-touching makes the runs fair."""
    import mmap
    size = mib << 20
    chunk = b"\1" * (64 << 20)
    t = time.time()
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    left = size
    while left > 0:
        n = min(left, len(chunk))
        m.write(chunk[:n])
        left -= n
    m.close()
    return time.time() - t


def sink(port):
    """A discard-only HTTP/1.1 endpoint: reads each request body into one reused buffer and answers
    201. curl -T into it measures what the client and loopback alone can do on this machine."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(8)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    break
                data += more
            head, _, rest = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            left = length - len(rest)
            while left > 0:
                n = conn.recv_into(view, min(left, len(buf)))
                if n == 0:
                    break
                left -= n
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


# ---------------------------------------------------------------- report

def load_oha(path):
    with open(path) as f:
        d = json.load(f)
    s, pct = d["summary"], d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    errors = d.get("errorDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    return {
        "rps": s["requestsPerSec"], "p50_ms": pct.get("p50", float("nan")) * 1000,
        "p99_ms": pct.get("p99", float("nan")) * 1000, "success_rate": s.get("successRate"),
        "codes": codes, "errors": errors, "ok": ok,
    }


def read_runs(path):
    """Lines written by run.sh: `http_code bytes seconds [extra]`."""
    runs = []
    if not os.path.exists(path):
        return runs
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                runs.append({"code": parts[0], "bytes": int(parts[1]), "seconds": float(parts[2]),
                             "extra": parts[3:]})
    return runs


def mbps(run):
    return run["bytes"] / run["seconds"] / 1e6 if run["seconds"] > 0 else float("nan")


def ratio(a, b):
    try:
        return f"{a / b:.2f}x"
    except (TypeError, ZeroDivisionError):
        return "n/a"


def fmt(x, digits=0):
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    return f"{x:,.{digits}f}"


def report(resdir):
    with open(os.path.join(resdir, "meta.json")) as f:
        meta = json.load(f)
    sides = meta["sides"]  # [["berth", label], ["distribution", label]]
    names = [s[0] for s in sides]
    labels = {s[0]: s[1] for s in sides}
    out = []
    w = out.append
    w(f"# Berth benchmark — {meta['date']}\n")
    if meta.get("self_test"):
        w("> **SELF-TEST RUN**: the \"berth\" column is another docker-registry, not berth. "
          "These numbers say nothing about berth.\n")
    if meta.get("nonstandard"):
        w(f"> **Non-standard parameters** ({meta['nonstandard']}): not comparable with the targets' "
          "definition (10 s at 32 connections; 1 GiB; median of 3).\n")
    w("## Setup\n")
    w(f"- Machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['mem']} RAM, kernel {meta['kernel']}")
    w(f"- Load average (1/5/15 min): {meta.get('load', '?')} (this run itself keeps ~2 busy)")
    w(f"- Command: `{meta['command']}`")
    w(f"- berth: `{meta['berth_cmd']}` ({meta['berth_version']})")
    w(f"- distribution: `{meta['dist_cmd']}` ({meta['dist_version']}); config: filesystem storage, "
      "inmemory blob descriptor cache, no auth, log level warn, access log off")
    w(f"- Client: {meta['oha_version']}, {meta['curl_version']}; client and servers share the same "
      f"{meta['nproc']} CPUs, all traffic over 127.0.0.1, one server measured at a time")
    w(f"- Test image: OCI manifest ({meta['image']['manifest_size']} B), config blob, one "
      f"{meta['image']['layer_size']} B gzip layer; manifest GET by tag with `Accept: {meta['image']['accept']}`")
    w("")

    # (1) load
    w(f"## 1. Small requests: `oha -z {meta['duration']} -c {meta['conns']}`\n")
    loads = {}
    for kind, title in (("manifest", "manifest GET by tag"), ("blobhead", "blob HEAD")):
        w(f"### {title}\n")
        w("| | " + " | ".join(labels[n] for n in names) + " | berth / distribution |")
        w("|---|" + "---:|" * (len(names) + 1))
        r = {}
        for n in names:
            p = os.path.join(resdir, f"{n}-{kind}.json")
            r[n] = load_oha(p) if os.path.exists(p) else None
        loads[kind] = r
        b, d = r.get("berth"), r.get("distribution")
        def row(label, key, digits, better_low=False):
            vals = [fmt(r[n][key], digits) if r[n] else "n/a" for n in names]
            rat = ratio(b[key], d[key]) if b and d else "n/a"
            w(f"| {label} | " + " | ".join(vals) + f" | {rat} |")
        row("requests/s", "rps", 0)
        row("p50 latency (ms)", "p50_ms", 3)
        row("p99 latency (ms)", "p99_ms", 3)
        codes = []
        for n in names:
            if r[n]:
                c = ", ".join(f"{k}: {v}" for k, v in sorted(r[n]["codes"].items()))
                e = ", ".join(f"{k}: {v}" for k, v in r[n]["errors"].items())
                codes.append(c + (f"; errors: {e}" if e else ""))
            else:
                codes.append("n/a")
        w("| responses | " + " | ".join(codes) + " | |")
        w("")

    # (2) throughput
    w(f"## 2. One {meta['blob_mib']} MiB blob, monolithic (MB = 10^6 bytes, median of {meta['runs']})\n")
    w(f"Push: `POST /v2/<name>/blobs/uploads/` then one `PUT ?digest=` streamed by `curl -T` "
      "(`Content-Type: application/octet-stream`, no `Expect: 100-continue`, as docker/containerd send); "
      "timed from the POST to the 201; each run pushes a blob the registry does not have yet. Pull: `GET` following redirects (127.0.0.1 only), body discarded; "
      "before the timed pulls, one pull per server piped into `openssl dgst -sha256` verifies the content "
      "(and warms the read path).\n")
    ceiling = meta["sha256_ceiling_MBps"]
    tp = {}
    for n in names:
        push = read_runs(os.path.join(resdir, f"{n}-push.txt"))
        pull = read_runs(os.path.join(resdir, f"{n}-pull.txt"))
        ver = read_runs(os.path.join(resdir, f"{n}-verify.txt"))
        rep = read_runs(os.path.join(resdir, f"{n}-repush.txt"))
        tp[n] = {
            "push": statistics.median([mbps(x) for x in push]) if push else None,
            "pull": statistics.median([mbps(x) for x in pull]) if pull else None,
            "push_runs": [mbps(x) for x in push], "pull_runs": [mbps(x) for x in pull],
            "verify": ver[0] if ver else None,
            "repush": mbps(rep[0]) if rep else None,
        }
    w("| | " + " | ".join(labels[n] for n in names) + " | berth / distribution |")
    w("|---|" + "---:|" * (len(names) + 1))
    b, d = tp.get("berth"), tp.get("distribution")
    for key, label in (("push", "push MB/s"), ("pull", "pull MB/s")):
        w(f"| {label} | " + " | ".join(fmt(tp[n][key]) for n in names) + f" | {ratio(b[key], d[key])} |")
    w("| push, % of sha256 ceiling | " + " | ".join(
        (fmt(100 * tp[n]["push"] / ceiling, 1) + " %") if tp[n]["push"] else "n/a" for n in names) + " | |")
    for key, label in (("push_runs", "push runs MB/s"), ("pull_runs", "pull runs MB/s")):
        w(f"| {label} | " + " | ".join(", ".join(fmt(x) for x in tp[n][key]) for n in names) + " | |")
    w("| re-push of a blob already stored (1 run, not in the median) MB/s | "
      + " | ".join(fmt(tp[n]["repush"]) for n in names) + f" | {ratio(b['repush'], d['repush'])} |")
    vrow = []
    for n in names:
        v = tp[n]["verify"]
        vrow.append(f"{v['extra'][0]} ({fmt(mbps(v))} MB/s incl. hashing)" if v else "n/a")
    w("| pull + sha256 verify | " + " | ".join(vrow) + " | |")
    w("")
    w(f"sha256 ceiling, one core: `openssl speed -evp sha256 -bytes 16384 -seconds 3` = "
      f"**{fmt(ceiling)} MB/s**\n")
    sink_runs = read_runs(os.path.join(resdir, "sink.txt"))
    if sink_runs:
        sv = [mbps(x) for x in sink_runs]
        w(f"Client ceiling: the same `curl -T` upload into a discard-only endpoint (no hashing, no disk) = "
          f"**{fmt(statistics.median(sv))} MB/s** (runs: {', '.join(fmt(x) for x in sv)}); "
          f"on {meta['nproc']} CPUs the client's own core is not available to the server.\n")

    # (3) memory
    w("## 3. Peak RSS (VmHWM)\n")
    w("Peak reset (`echo 5 > /proc/PID/clear_refs`) after part 1, read at the end of part 2.\n")
    rss = {}
    for n in names:
        p = os.path.join(resdir, f"{n}-rss.json")
        rss[n] = json.load(open(p)) if os.path.exists(p) else {}
    w("| | " + " | ".join(labels[n] for n in names) + " | berth / distribution |")
    w("|---|" + "---:|" * (len(names) + 1))
    for key, label in (("hwm_part2_kb", "peak RSS during part 2 (MiB)"),
                       ("hwm_part1_kb", "peak RSS, start through part 1 (MiB)")):
        vals = [rss[n].get(key) for n in names]
        bv, dv = rss.get("berth", {}).get(key), rss.get("distribution", {}).get(key)
        w(f"| {label} | " + " | ".join(fmt(v / 1024, 1) if v else "n/a" for v in vals)
          + f" | {ratio(bv, dv)} |")
    w("")

    # targets
    w("## Berth targets\n")
    w("| target | measured | met |")
    w("|---|---:|:---:|")
    def verdict(ok):
        return "n/a" if ok is None else ("yes" if ok else "**no**")
    m = loads.get("manifest", {})
    if m.get("berth") and m.get("distribution"):
        x = m["berth"]["rps"] / m["distribution"]["rps"]
        clean = m["berth"]["ok"] > 0 and set(m["berth"]["codes"]) <= {"200"}
        w(f"| manifest GET req/s >= 3x Distribution's | {x:.2f}x | {verdict(x >= 3 and clean)} |")
    else:
        w("| manifest GET req/s >= 3x Distribution's | n/a | n/a |")
    if b and b["push"]:
        pct = 100 * b["push"] / ceiling
        w(f"| push >= 60 % of the sha256 ceiling ({fmt(ceiling)} MB/s) | {pct:.1f} % | {verdict(pct >= 60)} |")
    else:
        w("| push >= 60 % of the sha256 ceiling | n/a | n/a |")
    bh = rss.get("berth", {}).get("hwm_part2_kb")
    w(f"| berth peak RSS <= 64 MiB (during part 2) | {fmt(bh / 1024, 1) + ' MiB' if bh else 'n/a'} | "
      f"{verdict(None if not bh else bh <= 64 * 1024)} |")
    bh1 = rss.get("berth", {}).get("hwm_part1_kb")
    if bh1:
        w(f"| (berth peak RSS over the whole run) | {fmt(max(bh1, bh or 0) / 1024, 1)} MiB | "
          f"{verdict(max(bh1, bh or 0) <= 64 * 1024)} |")
    w("")
    notes = meta.get("notes") or []
    if os.path.exists(os.path.join(resdir, "problems.txt")):
        notes = notes + ["Problems seen (details below)."]
    if notes:
        w("## Notes\n")
        for n in notes:
            w(f"- {n}")
        w("")
    p = os.path.join(resdir, "problems.txt")
    if os.path.exists(p):
        w("## Problems\n")
        w("```")
        w(open(p).read().rstrip())
        w("```")
        w("")
    w(f"_Total run time: {meta.get('elapsed', '?')} s._")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) < 2:
        die("usage: client.py free-ports N | wait BASE TIMEOUT PID | push-image BASE REPO TAG | "
            "upload-url BASE REPO DIGEST | report RESDIR")
    cmd = argv[1]
    try:
        if cmd == "free-ports":
            print(" ".join(map(str, free_ports(int(argv[2])))))
        elif cmd == "wait":
            wait_ready(argv[2], float(argv[3]), argv[4] if len(argv) > 4 else None)
        elif cmd == "push-image":
            print(json.dumps(push_image(argv[2], argv[3], argv[4])))
        elif cmd == "upload-url":
            # Start an upload session and print the URL for the monolithic PUT.
            base, repo, digest = argv[2], argv[3], argv[4]
            st, h, _, tr = request(base, "POST", f"/v2/{repo}/blobs/uploads/")
            expect(st == 202, f"blob upload start: expected 202, got {st}", tr)
            expect("location" in h, "blob upload start: no Location header", tr)
            url = add_query(resolve(base, h["location"]), "digest", digest)
            if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
                raise Failure(f"upload Location points away from 127.0.0.1: {h['location']}\n{tr}")
            print(url)
        elif cmd == "sink":
            sink(int(argv[2]))
        elif cmd == "prefault":
            print(f"{prefault(int(argv[2])):.1f}")
        elif cmd == "report":
            sys.stdout.write(report(argv[2]))
        else:
            die(f"unknown command {cmd}")
    except Failure as e:
        print(f"REGISTRY PROBLEM: {e}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main(sys.argv)
