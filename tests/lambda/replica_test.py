"""A second region's function before and after replication, against two functions that
tests/lambda/run.sh starts on one local S3: the home one (BERTH_URL, bucket `berth`) and a
replica region's (REPLICA_URL, its own empty bucket `berth-replica`, metadata in the home
region's metadata bucket, BERTH_HOME_BUCKET=berth), as terraform/modules/aws-region sets them up.

- pushed through the home function, a manifest and a blob are pulled through the replica
  region's function before any replication: content comes from the home bucket;
- once the objects are copied into the replica bucket (what S3 replication does), the replica
  region's redirects point at its own bucket;
- a blob the home region never had is still unknown.

Environment: BERTH_URL, REPLICA_URL, S3_ENDPOINT, AWS credentials. Exits non-zero on failure.
"""

import json
import os
import urllib.parse

import boto3
from http_check import check, digest, request

HOME = os.environ["BERTH_URL"]
REPLICA = os.environ["REPLICA_URL"]
S3 = os.environ["S3_ENDPOINT"]
RUN = os.urandom(4).hex()
REPO = f"replica/app-{RUN}"


def push_blob(content):
    blob = digest(content)
    status, headers, _ = request("POST", f"{HOME}/v2/{REPO}/blobs/uploads/?digest={blob}", content,
                                 {"Content-Type": "application/octet-stream", "Content-Length": str(len(content))})
    check(status == 201, f"monolithic push of {len(content)} bytes through the home function ({status})")
    return blob


def blob_key(blob):
    return "blobs/" + blob.replace(":", "/", 1)


# Over 1 MiB, so it is an upload published as a pointer to data/<id> (smaller blobs pushed
# whole are stored as themselves at blobs/<digest>, like the config here).
layer = os.urandom(1536 * 1024 + 3000)
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
layer_digest, config_digest = push_blob(layer), push_blob(config)
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
}).encode()
manifest_digest = digest(manifest)
status, _, _ = request("PUT", f"{HOME}/v2/{REPO}/manifests/v1", manifest,
                       {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
check(status == 201, f"manifest pushed by tag through the home function ({status})")

s3 = boto3.client("s3", endpoint_url=S3)
listed = s3.list_objects_v2(Bucket="berth-replica").get("KeyCount", 0)
check(listed == 0, "the replica bucket is empty: nothing has replicated yet")

def pull_layer_from(bucket, when):
    """The replica region's blob GET redirects into `bucket`, and S3 serves the layer there."""
    status, headers, _ = request("GET", f"{REPLICA}/v2/{REPO}/blobs/{layer_digest}")
    location = headers.get("location", "")
    # A blob is a pointer object under blobs/ naming the upload's object under data/ (the
    # parted-upload engine publishes every upload that way); manifests are stored whole.
    path = urllib.parse.urlsplit(location).path
    check(status == 307 and (path.startswith(f"/{bucket}/blobs/") or path.startswith(f"/{bucket}/data/")),
          f"{when}: the blob GET redirects there ({status} {location[:80]})")
    status, _, body = request("GET", location)
    check(status == 200 and body == layer, f"{when}: S3 serves the layer")


# Before replication: the tag is in the shared metadata, the content in the home bucket.
status, headers, body = request("GET", f"{REPLICA}/v2/{REPO}/manifests/v1",
                                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
check(status == 200 and body == manifest, f"the replica region serves the manifest by tag at once ({status})")
check(headers.get("docker-content-digest") == manifest_digest, "with its digest")
pull_layer_from("berth", "before replication: the home bucket")
status, headers, _ = request("HEAD", f"{REPLICA}/v2/{REPO}/blobs/{config_digest}")
check(status == 200 and headers.get("content-length") == str(len(config)), f"blob HEAD answers from the home bucket ({status})")

# What S3 replication does: the same objects, with their metadata, in the replica's bucket
# (the replicated prefixes are blobs/, data/ and meta/: a pointer and the data it names).
# Pointers first: until the data they name has replicated too, pulls still come from home.
pointed = []
for blob in (layer_digest, config_digest, manifest_digest):
    s3.copy_object(Bucket="berth-replica", Key=blob_key(blob), CopySource={"Bucket": "berth", "Key": blob_key(blob)})
    data = s3.head_object(Bucket="berth", Key=blob_key(blob)).get("Metadata", {}).get("berth-data")
    if data:
        pointed.append(data)
check(pointed, "uploaded blobs are pointers to their upload's data")
check(s3.head_object(Bucket="berth", Key=blob_key(config_digest)).get("Metadata", {}).get("berth-data") is None,
      "a small blob pushed whole is stored as itself")
pull_layer_from("berth", "pointer replicated, data not yet: still the home bucket")
for data in pointed:
    s3.copy_object(Bucket="berth-replica", Key=data, CopySource={"Bucket": "berth", "Key": data})
pull_layer_from("berth-replica", "after replication: the region's own bucket")
status, _, body = request("GET", f"{REPLICA}/v2/{REPO}/manifests/{manifest_digest}")
check(status == 200 and body == manifest, "the manifest by digest comes from the replica")

unknown = digest(os.urandom(16))
status, _, body = request("GET", f"{REPLICA}/v2/{REPO}/blobs/{unknown}")
check(status == 404 and b"BLOB_UNKNOWN" in body, f"a blob neither bucket has is BLOB_UNKNOWN ({status})")
print("replica tests passed")
