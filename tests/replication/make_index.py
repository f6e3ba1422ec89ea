#!/usr/bin/env python3
"""Writes a two-platform OCI image layout (linux/amd64 and linux/arm64 images under one index,
tagged TAG) and, beside it, a referrer of that index (an artifact manifest with `subject`):
OUT_DIR TAG NONCE. The referrer is written to OUT_DIR/referrer.json (its config blob, `{}`, is
in the layout). Prints: index digest, the two children's digests, the referrer's digest.
"""
import gzip, hashlib, io, json, os, sys, tarfile

out, tag, nonce = sys.argv[1], sys.argv[2], sys.argv[3]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def image(arch):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = f"replication test {nonce} {arch}\n".encode() + os.urandom(64 * 1024)
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    layer, layer_size = put(gzip.compress(tar_bytes, mtime=0))
    config = {"architecture": arch, "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]}}
    cd, cs = put(json.dumps(config).encode())
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}]}
    d, s = put(json.dumps(m).encode())
    return {"mediaType": m["mediaType"], "digest": d, "size": s, "platform": {"architecture": arch, "os": "linux"}}


children = [image("amd64"), image("arm64")]
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}
index_digest, index_size = put(json.dumps(index).encode())
empty, empty_size = put(b"{}")
referrer = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": empty_size},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": empty_size}],
            "subject": {"mediaType": index["mediaType"], "digest": index_digest, "size": index_size}}
referrer_bytes = json.dumps(referrer).encode()
with open(os.path.join(out, "referrer.json"), "wb") as f:
    f.write(referrer_bytes)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": index["mediaType"], "digest": index_digest, "size": index_size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
print(index_digest, children[0]["digest"], children[1]["digest"], "sha256:" + hashlib.sha256(referrer_bytes).hexdigest())
