#!/usr/bin/env python3
"""Garbage collection on the Lambda function (docs/gc.md), with real parts: the function binary
behind `cargo lambda watch`, blobs in s3s-fs (objects are files under S3_DIR), metadata in moto.

Run by tests/lambda/run.sh (step `gc`), which starts a function on its own buckets with
BERTH_GC_GRACE=0 and BERTH_GC_SETTLE=0, so one scheduled invocation does the whole pipeline.
Pushes two images sharing a layer (one layer of the doomed image through an upload session, so
its bytes are an upload's data object behind a pointer), plus a blob no manifest references,
deletes one image, fires EventBridge's "Scheduled Event" at the emulator's Invoke API, then
checks in the bucket's directory: exactly the deleted image's own blobs, its manifest and the
unreferenced blob are gone (their `blobs/` objects and the upload's `data/` object), the report
freed exactly their bytes, every other object is still there, and the kept image pulls with
every digest verified (and with skopeo, when it is installed: every blob of the OCI layout it
writes checked against its digest). A second invocation frees nothing.

Then retention under the schedule: the function runs with a retention rule on gc/ret
(tests/gc-retention.toml: keep the 2 most recently pushed tags and v*). Pushes v1, t1, t2, t3,
t4 a second apart, fires the scheduled event, and checks t1 and t2 are gone (404, not in
tags/list, their own objects gone from the bucket), v1, t3 and t4 pull (t3 with skopeo), and the
function's log has the `retention-delete` audit lines (both tags deleted, both manifests
condemned and deleted).

Environment: BERTH_URL (the shim in front of the emulator), GC_INVOKE_URL (the emulator's
/2015-03-31/functions/<name>/invocations), S3_DIR (the function's bucket directory),
GC_FUNCTION_LOG (the function's log, for the audit lines).
"""

import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import gc_checks  # noqa: E402

base = os.environ["BERTH_URL"]
invoke_url = os.environ["GC_INVOKE_URL"]
bucket_dir = os.environ["S3_DIR"]
function_log = os.environ["GC_FUNCTION_LOG"]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method, url, body=None, headers=None):
    req = urllib.request.Request(url if url.startswith("http") else base + url, data=body, method=method,
                                 headers=headers or {})
    try:
        with opener.open(req, timeout=120) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def objects():
    """Every object in the bucket: key -> size of its file (s3s-fs keeps one file per object,
    and its own metadata files beside them, which are not objects and are skipped)."""
    found = {}
    for top in ("blobs", "data"):
        for dirpath, _, files in os.walk(os.path.join(bucket_dir, top)):
            for f in files:
                path = os.path.join(dirpath, f)
                found[os.path.relpath(path, bucket_dir)] = os.path.getsize(path)
    return found


def blob_object(d):
    return "blobs/" + d.replace(":", "/", 1)


def push_whole(repo, data):
    status, body, _ = call("POST", f"/v2/{repo}/blobs/uploads/?digest={digest(data)}", data,
                           {"content-type": "application/octet-stream"})
    assert status == 201, (status, body)


def push_session(repo, data):
    """POST, PATCH, PUT: the bytes go through an upload session (a data object and a pointer)."""
    status, body, headers = call("POST", f"/v2/{repo}/blobs/uploads/")
    assert status == 202, (status, body)
    location = headers["location"]
    status, body, headers = call("PATCH", location, data, {"content-type": "application/octet-stream"})
    assert status == 202, (status, body)
    location = headers["location"]
    sep = "&" if "?" in location else "?"
    status, body, _ = call("PUT", f"{location}{sep}digest={digest(data)}")
    assert status == 201, (status, body)


def push_image(repo, tag, layers, session_layers=()):
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    for blob in [config] + layers:
        (push_session if blob in session_layers else push_whole)(repo, blob)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(l), "size": len(l)} for l in layers],
    }).encode()
    status, body, _ = call("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                           {"content-type": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 201, (status, body)
    return config, manifest


def pull(repo, ref):
    status, manifest, _ = call("GET", f"/v2/{repo}/manifests/{ref}",
                               headers={"accept": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 200, (ref, status)
    m = json.loads(manifest)
    for d in [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]:
        # The function answers 307 to S3 (presigned); urllib follows it.
        status, blob, _ = call("GET", f"/v2/{repo}/blobs/{d}")
        assert status == 200 and digest(blob) == d, (d, status)


def scheduled():
    event = {
        "version": "0", "id": os.urandom(8).hex(), "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-12-06T00:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/berth-gc"], "detail": {},
    }
    status, body, _ = call("POST", invoke_url, json.dumps(event).encode(), {"content-type": "application/json"})
    assert status == 200, (status, body)
    report = json.loads(body)
    assert isinstance(report, dict) and "bytes_freed" in report, report
    return report


runtime = gc_checks.Runtime(
    name="lambda gc", host=base.split("://", 1)[1], push_image=push_image,
    status=lambda method, path, headers: call(method, path, headers=headers)[:2], scheduled=scheduled,
    objects=objects, blob_object=blob_object, pull=pull, log=function_log)

repo = "gc/lambda"
shared = os.urandom(3000)
own_kept, own_gone, session_gone = os.urandom(2000), os.urandom(2500), os.urandom(4096)
orphan = os.urandom(1500)
config_kept, manifest_kept = push_image(repo, "kept", [own_kept, shared])
config_gone, manifest_gone = push_image(repo, "gone", [own_gone, session_gone, shared], session_layers=(session_gone,))
push_whole(repo, orphan)  # uploaded, never referenced: past a grace of 0 it goes too
status, body, _ = call("DELETE", f"/v2/{repo}/manifests/{digest(manifest_gone)}")
assert status == 202, (status, body)

gone = {digest(b): len(b) for b in (config_gone, own_gone, session_gone, orphan, manifest_gone)}
before = objects()
for d in gone:
    assert blob_object(d) in before, f"{d} has no object before GC: {sorted(before)}"
data_before = {k for k in before if k.startswith("data/")}
assert data_before, f"the upload session left no data/ object: {sorted(before)}"

report = scheduled()
print("lambda gc: report", report)
assert report["finished"], report
assert report["dry_run"] is False, report
expected = sum(gone.values())
assert report["content_deleted"] == len(gone), (report["content_deleted"], len(gone))
assert report["bytes_freed"] == expected, (report["bytes_freed"], expected)

after = objects()
removed = set(before) - set(after)
want_removed = {blob_object(d) for d in gone}
# The session layer's bytes were an upload's data object behind the pointer: gone as well.
data_removed = {k for k in removed if k.startswith("data/")}
assert len(data_removed) == 1, f"data objects removed: {sorted(data_removed)}"
assert removed - data_removed == want_removed, (sorted(removed - data_removed), sorted(want_removed))
assert not set(after) - set(before), f"objects appeared: {sorted(set(after) - set(before))}"
print(f"lambda gc: {len(removed)} objects removed from the bucket "
      f"({len(want_removed)} blobs/ and {len(data_removed)} data/), {len(after)} left")
for d in gone:
    if d == digest(manifest_gone):
        continue
    status, _, _ = call("HEAD", f"/v2/{repo}/blobs/{d}")
    assert status == 404, (d, status)
pull(repo, "kept")

if shutil.which("skopeo"):
    gc_checks.skopeo_pull(runtime, repo, "kept", manifest_kept, [config_kept, own_kept, shared])

again = scheduled()
assert again["finished"] and again["bytes_freed"] == 0 and again["content_deleted"] == 0, again
assert objects() == after, "the second run removed objects"
pull(repo, "kept")
print(f"lambda gc: ok (freed {expected} bytes in {len(gone)} blobs; the kept image pulls and verifies)")


# Retention under the schedule (tests/gc-retention.toml on gc/ret).
gc_checks.retention(runtime, skopeo=bool(shutil.which("skopeo")))
