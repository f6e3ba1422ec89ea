#!/usr/bin/env python3
"""Writes a one-layer OCI image layout for the mirror test: OUT_DIR TAG NONCE [LAYER_KIB].

The layer is a gzip tar with a text file holding the nonce and LAYER_KIB KiB of random bytes
(incompressible, so the blob is really that big); the config's diff_ids are right, so docker
accepts the image. Prints the manifest digest.
"""
import gzip, hashlib, io, json, os, sys, tarfile

out, tag, nonce = sys.argv[1], sys.argv[2], sys.argv[3]
kib = int(sys.argv[4]) if len(sys.argv) > 4 else 512
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def put(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as tar:
    for name, data in [("hello.txt", f"mirror test {nonce}\n".encode()), ("random.bin", os.urandom(kib * 1024))]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
tar_bytes = raw.getvalue()
layer, layer_size = put(gzip.compress(tar_bytes, mtime=0))
config = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Cmd": ["/hello.txt"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]},
}
config_digest, config_size = put(json.dumps(config).encode())
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
}
manifest_digest, manifest_size = put(json.dumps(manifest).encode())
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": manifest["mediaType"], "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
print(manifest_digest)
