#!/usr/bin/env python3
"""Writes a one-layer OCI image layout for the mirror test: OUT_DIR TAG NONCE [LAYER_KIB].

The layer is a gzip tar with a text file holding the nonce and LAYER_KIB KiB of random bytes
(incompressible, so the blob is really that big); the config's diff_ids are right, so docker
accepts the image. Prints the manifest digest.
"""
import os, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from oci_layout import Layout  # noqa: E402

out, tag, nonce = sys.argv[1], sys.argv[2], sys.argv[3]
kib = int(sys.argv[4]) if len(sys.argv) > 4 else 512
layout = Layout(out)
manifest = layout.image(
    [("hello.txt", f"mirror test {nonce}\n".encode()), ("random.bin", os.urandom(kib * 1024))],
    {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello.txt"]}})
layout.tag(manifest, tag)
print(manifest["digest"])
