#!/usr/bin/env python3
"""Garbage collection on the Worker, the checks (run by tests/edge/gc.sh, which starts
`wrangler dev --test-scheduled` with local R2, BERTH_GC_GRACE=0, BERTH_GC_SETTLE=0 and the
retention rule of tests/gc-retention.toml on gc/ret).

1. Pushes two images sharing a layer into gc/a, deletes one, fires the Cron Trigger at
   /__scheduled, then checks the local R2 bucket itself: exactly the deleted image's own blob
   objects and its manifest's are gone, every other content object is still there with its
   bytes' file; the report freed exactly those bytes; the blobs answer 404; the kept image pulls
   with every digest verified, over HTTP and with skopeo (`skopeo copy docker://... oci:DIR`,
   every blob of the layout checked against its digest). Fires it again: nothing more goes.
2. Retention under the trigger (tests/gc_checks.py): v1, t1..t4 pushed into gc/ret; after the
   trigger t1 and t2 are gone (404, not in tags/list, their objects gone from R2), v1, t3 and t4
   pull (skopeo too), and the Worker's log has the `retention-delete` audit lines.

The bucket: wrangler's --persist-to state, where miniflare keeps each bucket's object index in
a sqlite db (v3/r2/miniflare-R2BucketObject/<hash>.sqlite, table _mf_objects) and each
object's bytes in a file named by its blob_id (v3/r2/<bucket>/blobs/). The listing reads the
index read-only beside the running workerd (sqlite's WAL allows it) and fails loudly when the
layout is not there, so a change of miniflare's layout cannot make the test pass vacuously.

    python3 tests/edge/gc_test.py PORT WRANGLER_LOG STATE_DIR FRONT_PORT
"""

import glob
import hashlib
import json
import os
import re
import sqlite3
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import gc_checks  # noqa: E402

port, log, state, front = sys.argv[1:5]
base = f"http://127.0.0.1:{port}"


def call(method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

def push_blob(repo, data):
    status, body = call("POST", f"/v2/{repo}/blobs/uploads/?digest={digest(data)}", data,
                        {"content-type": "application/octet-stream"})
    assert status == 201, (status, body)

def push_image(repo, tag, layers):
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    for blob in [config] + layers:
        push_blob(repo, blob)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(l), "size": len(l)} for l in layers],
    }).encode()
    status, body = call("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                        {"content-type": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 201, (status, body)
    return config, manifest

def pull(repo, ref):
    status, manifest = call("GET", f"/v2/{repo}/manifests/{ref}", headers={"accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200, (ref, status)
    m = json.loads(manifest)
    for d in [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]:
        status, blob = call("GET", f"/v2/{repo}/blobs/{d}")
        assert status == 200 and digest(blob) == d, (d, status)

def scheduled():
    before = open(log, errors="replace").read().count("garbage collection:")
    status, _ = call("GET", "/__scheduled?cron=17+*+*+*+*")
    assert status == 200, status
    for _ in range(600):  # 60 s: a busy machine
        reports = re.findall(r"berth: garbage collection: (\{.*\})", open(log, errors="replace").read())
        if len(reports) > before:
            return json.loads(reports[-1])
        time.sleep(0.1)
    raise SystemExit("no garbage collection report in the Worker's log")


def r2_objects():
    """The local R2 bucket's content objects (keys under blobs/ and data/; meta/ holds records):
    key -> (size, whether its bytes' file exists)."""
    r2 = os.path.join(state, "v3", "r2")
    dbs = [f for f in glob.glob(os.path.join(r2, "miniflare-R2BucketObject", "*.sqlite"))
           if os.path.basename(f) != "metadata.sqlite"]
    assert dbs, f"no R2 object index under {r2}: {sorted(glob.glob(r2 + '/**', recursive=True))[:20]}"
    found = {}
    for db in dbs:
        c = sqlite3.connect(db, timeout=10)
        try:
            rows = c.execute("SELECT key, size, blob_id FROM _mf_objects").fetchall()
        finally:
            c.close()
        for key, size, blob_id in rows:
            if key.startswith(("blobs/", "data/")):
                found[key] = (size, bool(blob_id and glob.glob(os.path.join(r2, "*", "blobs", blob_id))))
    return found


def blob_object(d):
    return "blobs/" + d


def check_removed(before, after, want_removed):
    """Exactly want_removed went, nothing appeared, every kept object keeps its size and file."""
    removed = set(before) - set(after)
    assert removed == want_removed, ("removed", sorted(removed), "want", sorted(want_removed))
    assert not set(after) - set(before), f"objects appeared: {sorted(set(after) - set(before))}"
    for key, (size, has_file) in after.items():
        assert (size, has_file) == before[key], (key, before[key], (size, has_file))
        assert has_file or size == 0, f"{key}: its bytes' file is missing"


runtime = gc_checks.Runtime(
    name="edge gc", host=f"127.0.0.1:{front}", push_image=push_image,
    status=lambda method, path, headers: call(method, path, headers=headers), scheduled=scheduled,
    objects=r2_objects, blob_object=blob_object, pull=pull, log=log)

# 1. A deleted image's content goes; the other image's stays.
shared = os.urandom(3000)
own_kept, own_gone = os.urandom(2000), os.urandom(2500)
config_kept, manifest_kept = push_image("gc/a", "kept", [own_kept, shared])
config_gone, manifest_gone = push_image("gc/a", "gone", [own_gone, shared])
status, _ = call("DELETE", f"/v2/gc/a/manifests/{digest(manifest_gone)}")
assert status == 202, status

gone = [config_gone, own_gone, manifest_gone]
before = r2_objects()
for b in gone + [config_kept, own_kept, shared]:
    assert blob_object(digest(b)) in before, f"{digest(b)} has no R2 object before GC: {sorted(before)}"
report = scheduled()
print("edge gc: report", report)
expected = sum(len(b) for b in gone)
assert report["finished"], report
assert report["bytes_freed"] == expected, (report["bytes_freed"], expected)
after = r2_objects()
check_removed(before, after, {blob_object(digest(b)) for b in gone})
print(f"edge gc: R2 lost exactly the {len(gone)} objects of the deleted image; {len(after)} content objects left")
for d in (digest(own_gone), digest(config_gone)):
    status, _ = call("HEAD", f"/v2/gc/a/blobs/{d}")
    assert status == 404, (d, status)
pull("gc/a", "kept")
gc_checks.skopeo_pull(runtime, "gc/a", "kept", manifest_kept, [config_kept, own_kept, shared])
again = scheduled()
assert again["bytes_freed"] == 0, again
assert r2_objects() == after, "the second run removed objects"
pull("gc/a", "kept")
print(f"edge gc: ok (freed {expected} bytes; the kept image pulls)")

# 2. Retention under the trigger (tests/gc-retention.toml on gc/ret).
gc_checks.retention(runtime)
