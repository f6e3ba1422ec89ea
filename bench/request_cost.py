#!/usr/bin/env python3
"""The storage operations behind each registry request, per runtime (bench/request-cost.sh).

Usage: request_cost.py NAME=URL [NAME=URL ...]
Each URL is a Berth that answers with `Berth-Backend-Calls` (the Worker with the var
COUNT_BACKEND_CALLS, the Lambda function with BERTH_COUNT_BACKEND_CALLS). The same sequence of
requests, one at a time, goes to each; the table has one row per step and one column per runtime,
each cell the operations that request made (total, then by operation). A request that does not
answer as the protocol says stops the run: a count of a failed request would be meaningless.
"""

import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse

LAYER = os.urandom(1024 * 1024)
SMALL = os.urandom(1024)
CONFIG = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": []}}).encode()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(CONFIG), "size": len(CONFIG)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(LAYER), "size": len(LAYER)}],
}).encode()


def call(base, method, path, body=None, headers=None):
    url = urllib.parse.urlsplit(path if path.startswith("http") else base + path)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    target = url.path + (f"?{url.query}" if url.query else "")
    conn.request(method, target, body=body, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def steps(repo, other):
    """(label, method, path-or-callable, body, headers, wanted statuses)."""
    state = {}

    def upload_location(resp):
        state["location"] = resp.getheader("location")

    return [
        ("monolithic push of a 1 KiB blob (POST ?digest=)", "POST",
         f"/v2/{repo}/blobs/uploads/?digest={sha(SMALL)}", SMALL,
         {"content-type": "application/octet-stream"}, {201}, None),
        ("docker push: POST (start upload)", "POST", f"/v2/{repo}/blobs/uploads/", None, {}, {202}, upload_location),
        ("docker push: PATCH 1 MiB (streamed)", "PATCH", lambda: state["location"], LAYER,
         {"content-type": "application/octet-stream"}, {202}, upload_location),
        ("docker push: PUT ?digest= (empty)", "PUT",
         lambda: state["location"] + ("&" if "?" in state["location"] else "?") + f"digest={sha(LAYER)}",
         None, {}, {201}, None),
        ("config push (POST ?digest=)", "POST", f"/v2/{repo}/blobs/uploads/?digest={sha(CONFIG)}", CONFIG,
         {"content-type": "application/octet-stream"}, {201}, None),
        ("blob HEAD, present", "HEAD", f"/v2/{repo}/blobs/{sha(LAYER)}", None, {}, {200}, None),
        ("blob HEAD, absent", "HEAD", f"/v2/{repo}/blobs/{sha(b'absent')}", None, {}, {404}, None),
        ("manifest PUT by tag", "PUT", f"/v2/{repo}/manifests/v1", MANIFEST,
         {"content-type": "application/vnd.oci.image.manifest.v1+json"}, {201}, None),
        ("manifest GET by tag", "GET", f"/v2/{repo}/manifests/v1", None,
         {"accept": "application/vnd.oci.image.manifest.v1+json"}, {200}, None),
        ("manifest GET by tag, again", "GET", f"/v2/{repo}/manifests/v1", None,
         {"accept": "application/vnd.oci.image.manifest.v1+json"}, {200}, None),
        ("manifest HEAD by tag", "HEAD", f"/v2/{repo}/manifests/v1", None,
         {"accept": "application/vnd.oci.image.manifest.v1+json"}, {200}, None),
        ("manifest GET by digest", "GET", f"/v2/{repo}/manifests/{sha(MANIFEST)}", None,
         {"accept": "application/vnd.oci.image.manifest.v1+json"}, {200}, None),
        ("layer GET, first", "GET", f"/v2/{repo}/blobs/{sha(LAYER)}", None, {}, {200, 307}, None),
        ("layer GET, again", "GET", f"/v2/{repo}/blobs/{sha(LAYER)}", None, {}, {200, 307}, None),
        ("tags list", "GET", f"/v2/{repo}/tags/list", None, {}, {200}, None),
        ("cross-repository mount", "POST", f"/v2/{other}/blobs/uploads/?mount={sha(LAYER)}&from={repo}",
         None, {}, {201}, None),
    ]


def run(base):
    tag = hashlib.sha256(os.urandom(8)).hexdigest()[:8]
    rows = []
    for label, method, path, body, headers, wanted, after in steps(f"cost-{tag}/app", f"cost-{tag}/other"):
        target = path() if callable(path) else path
        resp = call(base, method, target, body, headers)
        if resp.status not in wanted:
            sys.exit(f"request_cost.py: {label}: {method} {target} answered {resp.status}, wanted {wanted}")
        calls = resp.getheader("berth-backend-calls")
        if calls is None:
            sys.exit(f"request_cost.py: {base} does not count backend calls (no Berth-Backend-Calls header)")
        if after:
            after(resp)
        rows.append((label, calls))
        # Lets what the Worker scheduled after the response (the blob cache's fill) finish
        # before the next request starts its count.
        time.sleep(1 if label.startswith("layer GET") else 0.05)
    return rows


def cell(calls):
    if calls == "none":
        return "0"
    parts = [p.split("=") for p in calls.split()]
    total = sum(int(n) for _, n in parts)
    return f"**{total}**: " + ", ".join(f"{op} {n}" if n != "1" else op for op, n in parts)


def main():
    runtimes = [arg.split("=", 1) for arg in sys.argv[1:]]
    if not runtimes:
        sys.exit(__doc__)
    results = {name: run(url.rstrip("/")) for name, url in runtimes}
    names = [name for name, _ in runtimes]
    print("| request | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for i, (label, _) in enumerate(results[names[0]]):
        print(f"| {label} | " + " | ".join(cell(results[n][i][1]) for n in names) + " |")


if __name__ == "__main__":
    main()
