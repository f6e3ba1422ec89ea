#!/usr/bin/env python3
"""Writes a two-platform OCI image layout (linux/amd64 and linux/arm64 images under one index,
tagged TAG) and, beside it, a referrer of that index (an artifact manifest with `subject`):
OUT_DIR TAG NONCE. The referrer is written to OUT_DIR/referrer.json (its config blob, `{}`, is
in the layout). Prints: index digest, the two children's digests, the referrer's digest.
"""
import hashlib, json, os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from oci_layout import Layout  # noqa: E402

out, tag, nonce = sys.argv[1], sys.argv[2], sys.argv[3]
layout = Layout(out)


def image(arch):
    data = f"replication test {nonce} {arch}\n".encode() + os.urandom(64 * 1024)
    manifest = layout.image([("hello.txt", data)], {"architecture": arch, "os": "linux"})
    return dict(manifest, platform={"architecture": arch, "os": "linux"})


children = [image("amd64"), image("arm64")]
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}
index_digest, index_size = layout.put(json.dumps(index).encode())
empty, empty_size = layout.put(b"{}")
referrer = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": empty_size},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": empty_size}],
            "subject": {"mediaType": index["mediaType"], "digest": index_digest, "size": index_size}}
referrer_bytes = json.dumps(referrer).encode()
with open(os.path.join(out, "referrer.json"), "wb") as f:
    f.write(referrer_bytes)
layout.tag({"mediaType": index["mediaType"], "digest": index_digest, "size": index_size}, tag)
print(index_digest, children[0]["digest"], children[1]["digest"], "sha256:" + hashlib.sha256(referrer_bytes).hexdigest())
