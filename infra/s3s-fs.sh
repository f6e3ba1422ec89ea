#!/usr/bin/env bash
# Prints the path of s3s-fs (an S3 implementation on a directory that checks SigV4 signatures
# and the expiry of presigned URLs), building it into .tools/ first if it is not there. The
# Lambda tests keep blobs in it; the edge tests check the Worker's presigned R2 URLs against it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/.tools/s3s-fs/bin/s3s-fs
if [ ! -x "$bin" ]; then
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$root/.tools/s3s-fs" >&2
fi
echo "$bin"
