"""Checks the garbage-collection tests of the Worker (tests/edge/gc.sh) and the Lambda function
(tests/lambda/gc_test.py) share: a skopeo pull verified digest by digest, and retention under
the runtime's schedule (the rule of tests/gc-retention.toml). Each runtime's test hands in how
it talks to its instance (a `Runtime`)."""

import glob
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Callable


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


@dataclass
class Runtime:
    name: str  # for messages: "edge gc", "lambda gc"
    host: str  # host:port skopeo pulls from (plain HTTP)
    push_image: Callable  # (repo, tag, layers) -> (config bytes, manifest bytes)
    status: Callable  # (method, path, headers) -> (status, body)
    scheduled: Callable  # () -> the GC report of one scheduled invocation
    objects: Callable  # () -> {content object key: anything}, the bucket's content objects
    blob_object: Callable  # digest -> its object's key
    pull: Callable  # (repo, reference): pulls and verifies every digest
    log: str  # the instance's log, where the audit lines go


def skopeo_pull(rt, repo, tag, manifest, blobs):
    """skopeo copies the image into an OCI layout, digests preserved (it would otherwise gzip
    the test's uncompressed layers); every blob there matches its digest, the manifest is the
    one pushed and its config and layers are `blobs`."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--preserve-digests",
                        "--dest-oci-accept-uncompressed-layers",
                        f"docker://{rt.host}/{repo}:{tag}", f"oci:{out}:{tag}"], check=True, timeout=120)
        stored = {}
        for path in glob.glob(os.path.join(out, "blobs", "sha256", "*")):
            with open(path, "rb") as f:
                data = f.read()
            assert digest(data) == "sha256:" + os.path.basename(path), f"{path} does not match its digest"
            stored["sha256:" + os.path.basename(path)] = data
        with open(os.path.join(out, "index.json")) as f:
            index = json.load(f)
        assert index["manifests"][0]["digest"] == digest(manifest), (index, digest(manifest))
        m = json.loads(stored[digest(manifest)])
        got = {m["config"]["digest"]} | {l["digest"] for l in m["layers"]}
        assert got == {digest(b) for b in blobs}, (sorted(got), sorted(digest(b) for b in blobs))
    print(f"{rt.name}: skopeo copied {repo}:{tag}, every digest verified")


def tags(rt, repo):
    status, body = rt.status("GET", f"/v2/{repo}/tags/list", {})
    assert status == 200, (status, body)
    return sorted(json.loads(body)["tags"])


def retention(rt, repo="gc/ret", skopeo=True):
    """keep_last = 2 and keep_tags = ["v*"] on `repo`: pushes v1, t1..t4 a second apart, fires
    the schedule, and checks t1 and t2 are gone (404, not in tags/list, their own content
    objects gone and nothing else), v1, t3 and t4 pull (t3 with skopeo), and the log has the
    `retention-delete` audit lines: each expired tag deleted, its manifest condemned, then
    deleted; none for a kept tag."""
    shared = os.urandom(1800)
    images = {}
    for tag in ["v1", "t1", "t2", "t3", "t4"]:
        own = os.urandom(1000 + len(images))
        config, manifest = rt.push_image(repo, tag, [own, shared])
        images[tag] = (config, own, manifest)
        time.sleep(1.1)  # pushed a second apart: "most recently pushed" has an order
    assert tags(rt, repo) == ["t1", "t2", "t3", "t4", "v1"], tags(rt, repo)
    before = rt.objects()
    report = rt.scheduled()
    print(f"{rt.name}: retention report", report)
    expired, kept = ["t1", "t2"], ["v1", "t3", "t4"]
    expected = sum(len(b) for t in expired for b in images[t])
    assert report["finished"], report
    assert (report["tags_deleted"], report["manifests_condemned"], report["manifests_deleted"]) == (2, 2, 2), report
    assert report["bytes_freed"] == expected, (report["bytes_freed"], expected)
    assert tags(rt, repo) == ["t3", "t4", "v1"], tags(rt, repo)
    for t in expired:
        config, own, manifest = images[t]
        for ref in (t, digest(manifest)):
            status, _ = rt.status("GET", f"/v2/{repo}/manifests/{ref}",
                                  {"accept": "application/vnd.oci.image.manifest.v1+json"})
            assert status == 404, (ref, status)
        status, _ = rt.status("HEAD", f"/v2/{repo}/blobs/{digest(own)}", {})
        assert status == 404, (t, status)
    after = rt.objects()
    removed = set(before) - set(after)
    want_removed = {rt.blob_object(digest(b)) for t in expired for b in images[t]}
    assert removed == want_removed, (sorted(removed), sorted(want_removed))
    assert not set(after) - set(before), f"objects appeared: {sorted(set(after) - set(before))}"
    for t in kept:
        rt.pull(repo, t)
    if skopeo:
        config, own, manifest = images["t3"]
        skopeo_pull(rt, repo, "t3", manifest, [config, own, shared])

    with open(rt.log, errors="replace") as f:
        lines = [l for l in f.read().splitlines() if "retention-delete" in l and repo in l]
    assert lines, f"no retention-delete audit line for {repo} in {rt.log}"

    def audited(kind, ref, outcome):
        return any(f'kind="{kind}"' in l and re.search(rf"reference=\"?{re.escape(ref)}\"?(\s|$)", l)
                   and f'outcome="{outcome}"' in l for l in lines)

    for t in expired:
        d = digest(images[t][2])
        assert audited("tag", t, "deleted"), (t, lines)
        assert audited("manifest", d, "condemned"), (d, lines)
        assert audited("manifest", d, "deleted"), (d, lines)
    for t in kept:
        d = digest(images[t][2])
        assert not any(re.search(rf"reference=\"?({t}|{d})\"?(\s|$)", l) for l in lines), (t, lines)
    print(f"{rt.name}: retention ok (t1, t2 and their {expected} bytes gone; v1, t3, t4 pull; "
          f"{len(lines)} audit lines, e.g. {lines[0].strip()})")
