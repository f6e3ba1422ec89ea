"""Writes OCI image layouts for the shell tests (tests/mirror/make_image.py,
tests/replication/make_index.py): content-addressed blobs, one-layer images whose config has
the right diff_ids (so docker accepts them), and the layout's index.json naming one tag.
"""
import gzip, hashlib, io, json, os, tarfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Layout:
    def __init__(self, out):
        self.out = out
        self.blobs = os.path.join(out, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)

    def put(self, data):
        """Stores a blob; returns its digest and size."""
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobs, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest, len(data)

    def image(self, files, config):
        """A one-layer image manifest: a gzip tar of FILES ([(name, bytes)], mtime 0) and CONFIG
        (a dict, given its rootfs here). Returns the manifest's descriptor."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        tar_bytes = raw.getvalue()
        layer, layer_size = self.put(gzip.compress(tar_bytes, mtime=0))
        config = dict(config, rootfs={"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]})
        config_digest, config_size = self.put(json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
        }
        digest, size = self.put(json.dumps(manifest).encode())
        return {"mediaType": MANIFEST, "digest": digest, "size": size}

    def tag(self, descriptor, tag):
        """Writes oci-layout and index.json: DESCRIPTOR (mediaType, digest, size) as TAG."""
        with open(os.path.join(self.out, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        with open(os.path.join(self.out, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [{
                "mediaType": descriptor["mediaType"], "digest": descriptor["digest"], "size": descriptor["size"],
                "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
