"""Berth on Lambda at its edges, against the stack tests/lambda/run.sh starts.

- the 6 MB event cap: 413 SIZE_INVALID naming `berth push`, also for bodies without a length;
- pulls: 307 to a presigned S3 URL that S3 serves, and refuses once tampered with or expired;
- chunked PATCHes under the cap accumulate across S3's 5 MiB part minimum, leave no staging
  behind and keep their content at data/<id>; a cancelled upload leaves nothing;
- the direct-upload extension: discovery, presigned part URLs, completion with read-back
  verification, and its bad inputs;
- a manifest of exactly 4 MiB (the core's limit) comes back whole through the emulator.

Environment: BERTH_URL, BERTH_MAX_BODY, S3_ENDPOINT, S3_LOG, FUNCTION_LOG,
BERTH_REDIRECT_EXPIRY_SECS.
Exits non-zero on the first failed check.
"""

import hashlib
import json
import os
import time
import urllib.parse

import boto3
from http_check import check, digest, request

BERTH = urllib.parse.urlsplit(os.environ["BERTH_URL"])
MAX_BODY = int(os.environ["BERTH_MAX_BODY"])
S3 = os.environ["S3_ENDPOINT"]
S3_CLIENT = boto3.client("s3", endpoint_url=S3)
S3_LOG = os.environ["S3_LOG"]
FUNCTION_LOG = os.environ["FUNCTION_LOG"]
EXPIRY = int(os.environ.get("BERTH_REDIRECT_EXPIRY_SECS", "5"))
RUN = os.urandom(4).hex()
MIB = 1024 * 1024


def oci_error(status, body, want_status, want_code):
    try:
        code = json.loads(body)["errors"][0]["code"]
    except Exception:
        code = None
    check(status == want_status and code == want_code,
          f"{want_status} {want_code}", f"got {status} {body[:400]!r}")
    return json.loads(body)["errors"][0]["message"]


def push_monolithic(repo, data):
    s, h, b = request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest(data)}", data,
                      {"Content-Type": "application/octet-stream"})
    check(s == 201, f"monolithic push of {len(data)} bytes", f"{s} {b[:300]!r}")


def s3_log_mentions(needle):
    with open(S3_LOG, errors="replace") as f:
        return needle in f.read()


def pull_via_redirect(repo, data, what):
    d = digest(data)
    s, h, b = request("GET", f"/v2/{repo}/blobs/{d}")
    check(s == 307, f"{what}: blob GET answers 307", f"{s} {b[:300]!r}")
    loc = h["location"]
    check(loc.startswith(S3 + "/"), f"{what}: Location points at the S3 endpoint", loc)
    s, _, got = request("GET", loc)
    check(s == 200 and got == data, f"{what}: S3 serves the blob's bytes", f"{s} {got[:300]!r}")
    return loc


def test_cap():
    print("event cap")
    repo = f"lambda-edge-{RUN}/cap"
    big = os.urandom(MAX_BODY + 1)
    s, h, b = request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest(big)}", big,
                      {"Content-Type": "application/octet-stream"})
    msg = oci_error(s, b, 413, "SIZE_INVALID")
    check("berth push" in msg, "the 413 says how to push instead", msg)
    # An event over 6 MB with no Content-Length to go by: refused by the handler itself.
    s, h, b = request("POST", f"/v2/{repo}/blobs/uploads/")
    check(s == 202, "upload started")
    loc = h["location"]
    s, h, b = request("PATCH", loc, os.urandom(5 * MIB), {"Content-Type": "application/octet-stream"},
                      chunked=True)
    msg = oci_error(s, b, 413, "SIZE_INVALID")
    check("berth push" in msg, "chunked-encoding body over the cap: 413 naming berth push", msg)
    # Not an upload at all: a 6.5 MB manifest is refused by the cap, before the core.
    s, h, b = request("PUT", f"/v2/{repo}/manifests/big", b"{" + b" " * (6 * MIB + MIB // 2) + b"}",
                      {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    msg = oci_error(s, b, 413, "SIZE_INVALID")
    check("berth push" in msg, "a 6.5 MB manifest body is refused by the event cap", msg)
    # Exactly at the limit is fine.
    at = os.urandom(MAX_BODY)
    push_monolithic(repo, at)
    pull_via_redirect(repo, at, "blob at the limit")


def test_chunks_accumulate():
    print("chunked PATCHes across S3's 5 MiB part minimum")
    repo = f"lambda-edge-{RUN}/chunks"
    chunk = 4 * MIB
    data = os.urandom(3 * chunk + 12345)
    s, h, b = request("POST", f"/v2/{repo}/blobs/uploads/")
    loc = h["location"]
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        s, h, b = request("PATCH", loc, piece, {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(piece) - 1}"})
        check(s == 202 and h.get("range") == f"0-{start + len(piece) - 1}",
              f"PATCH {start}-{start + len(piece) - 1}", f"{s} {h} {b[:300]!r}")
        loc = h["location"]
    sep = "&" if "?" in loc else "?"
    s, h, b = request("PUT", f"{loc}{sep}digest={digest(data)}")
    check(s == 201, "PUT completes the chunked upload", f"{s} {b[:300]!r}")
    pull_via_redirect(repo, data, "chunked blob")
    upload = upload_id(loc)
    check(s3_keys(f"uploads/{upload}/") == [], "no staging objects are left under uploads/<id>/")
    check(s3_keys(f"data/{upload}") == [f"data/{upload}"],
          "the content stays at data/<id>, outside the staging prefix a lifecycle rule expires")


def test_cancel_removes_everything():
    print("a cancelled multipart upload leaves nothing behind")
    repo = f"lambda-edge-{RUN}/cancel"
    s, h, b = request("POST", f"/v2/{repo}/blobs/uploads/")
    loc = h["location"]
    piece = os.urandom(4 * MIB)
    for start in (0, len(piece)):
        s, h, b = request("PATCH", loc, piece, {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(piece) - 1}"})
        check(s == 202, f"PATCH {start}", f"{s} {b[:300]!r}")
        loc = h["location"]
    upload = upload_id(loc)
    check(s3_keys(f"uploads/{upload}/") != [], "a tail is staged under uploads/<id>/")
    s, h, b = request("DELETE", loc)
    check(s == 204, "DELETE cancels the upload", f"{s} {b[:300]!r}")
    check(s3_keys(f"uploads/{upload}/") == [] and s3_keys(f"data/{upload}") == [],
          "neither staging nor a data object is left")


def upload_id(location):
    return urllib.parse.urlsplit(location).path.rsplit("/", 1)[1]


def object_key(location):
    """The object a presigned URL of the function's bucket names."""
    return urllib.parse.urlsplit(location).path.removeprefix("/berth/")


def s3_keys(prefix):
    """Keys under prefix in the function's bucket, as S3 lists them."""
    listed = S3_CLIENT.list_objects_v2(Bucket="berth", Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_presigned_urls():
    print("presigned redirects")
    repo = f"lambda-edge-{RUN}/presign"
    data = os.urandom(100_000)
    other = os.urandom(50_000)
    push_monolithic(repo, data)
    push_monolithic(repo, other)
    loc = pull_via_redirect(repo, data, "small blob")
    # A blob pushed whole up to 1 MiB is stored as itself at blobs/<digest> (one write); an
    # uploaded one is a pointer to its upload's object, data/<id> (test_chunks_accumulate).
    key = object_key(loc)
    check(key == "blobs/" + digest(data).replace(":", "/", 1), "the redirect names the small blob's own object", key)
    # A presigned GET (not one of the function's own HEADs or GETs) reached S3.
    check(s3_log_mentions(f"method: GET, uri: /berth/{key}?x-id=GetObject&X-Amz-Algorithm="),
          "the S3 server's log shows the client's presigned GET", key)
    u = urllib.parse.urlsplit(loc)
    q = urllib.parse.parse_qs(u.query)
    check("X-Amz-Signature" in q and "X-Amz-Expires" in q, "the URL is a SigV4 presigned URL", loc)
    check(q["X-Amz-Expires"] == [str(EXPIRY)], f"it expires after the configured {EXPIRY} s", loc)
    sig = q["X-Amz-Signature"][0]
    flipped = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    s, _, b = request("GET", loc.replace(sig, flipped))
    check(s == 403, "a URL with a changed signature is refused (403)", f"{s} {b[:300]!r}")
    other_key = object_key(pull_via_redirect(repo, other, "other small blob"))
    s, _, b = request("GET", loc.replace(key, other_key))
    check(s == 403, "the signature does not open another blob (403)", f"{s} {b[:300]!r}")
    s, _, b = request("GET", loc.replace(f"X-Amz-Expires={EXPIRY}", "X-Amz-Expires=604800"))
    check(s == 403, "a lengthened expiry is refused (403)", f"{s} {b[:300]!r}")
    time.sleep(EXPIRY + 2)
    s, _, b = request("GET", loc)
    check(s == 403, f"the URL is refused once expired, after {EXPIRY + 2} s (403)", f"{s} {b[:300]!r}")
    # A HEAD is answered by the function itself.
    s, h, _ = request("HEAD", f"/v2/{repo}/blobs/{digest(data)}")
    check(s == 200 and h.get("content-length") == str(len(data)), "blob HEAD answered directly")


def start_direct(repo):
    s, h, b = request("POST", f"/v2/{repo}/blobs/uploads/")
    check(s == 202 and h.get("berth-direct-upload") == "parts",
          "the upload POST advertises direct uploads", f"{s} {h}")
    return h["location"]


def part_urls(loc, first=1, count=2):
    s, h, b = request("POST", f"{loc}/parts?first={first}&count={count}")
    check(s == 200, f"part URLs {first}..{first + count - 1}", f"{s} {b[:300]!r}")
    return {p["number"]: p["url"] for p in json.loads(b)["parts"]}


def test_direct():
    print("direct uploads")
    repo = f"lambda-edge-{RUN}/direct"
    data = os.urandom(5 * MIB + 4321)
    loc = start_direct(repo)
    urls = part_urls(loc)
    check(all(u.startswith(S3 + "/") for u in urls.values()), "part URLs point at S3")
    s, _, b = request("PUT", urls[1].replace("partNumber=1", "partNumber=3"), data[:1000])
    check(s == 403, "a part URL edited to another part number is refused (403)", f"{s} {b[:300]!r}")
    s, h, _ = request("PUT", urls[1], data[: 5 * MIB])
    check(s == 200, "part 1 straight to S3", f"{s}")
    s, h, _ = request("PUT", urls[2], data[5 * MIB :])
    check(s == 200, "part 2 straight to S3", f"{s}")
    s, h, b = request("PATCH", loc, b"x" * 10, {"Content-Range": "0-9"})
    oci_error(s, b, 400, "BLOB_UPLOAD_INVALID")
    s, h, b = request("GET", f"/v2/{repo}/blobs/{digest(data)}")
    check(s == 404, "nothing visible before completion", f"{s}")
    sep = "&" if "?" in loc else "?"
    s, h, b = request("PUT", f"{loc}{sep}digest={digest(data)}")
    check(s == 201, "completion verifies and publishes", f"{s} {b[:300]!r}")
    pull_via_redirect(repo, data, "direct blob")

    # Parts whose bytes do not match the digest: DIGEST_INVALID, nothing visible.
    loc = start_direct(repo)
    urls = part_urls(loc, 1, 1)
    bad = os.urandom(1000)
    s, _, _ = request("PUT", urls[1], bad)
    check(s == 200, "a part straight to S3")
    claimed = os.urandom(1000)
    sep = "&" if "?" in loc else "?"
    s, h, b = request("PUT", f"{loc}{sep}digest={digest(claimed)}")
    oci_error(s, b, 400, "DIGEST_INVALID")
    s, _, _ = request("HEAD", f"/v2/{repo}/blobs/{digest(claimed)}")
    check(s == 404, "a blob that failed verification is not visible")
    s, _, _ = request("HEAD", f"/v2/{repo}/blobs/{digest(bad)}")
    check(s == 404, "nor are the bytes under their real digest")

    # Completing before any part reached storage, and a part under S3's 5 MiB minimum that is
    # not the last: the client's fault (400 with what to do), never a 500. (s3s-fs drops the
    # multipart upload after a refused completion, so sending the part again is not tested here.)
    # Part URLs make the session direct; without them an empty PUT is an ordinary 0-byte upload.
    loc = start_direct(repo)
    urls = part_urls(loc)
    sep = "&" if "?" in loc else "?"
    s, h, b = request("PUT", f"{loc}{sep}digest={digest(data)}")
    oci_error(s, b, 400, "BLOB_UPLOAD_INVALID")
    s, _, _ = request("PUT", urls[1], data[:MIB])
    check(s == 200, "a 1 MiB first part straight to S3")
    s, _, _ = request("PUT", urls[2], data[5 * MIB :])
    check(s == 200, "a last part straight to S3")
    s, h, b = request("PUT", f"{loc}{sep}digest={digest(data)}")
    oci_error(s, b, 400, "BLOB_UPLOAD_INVALID")
    s, _, _ = request("HEAD", f"/v2/{repo}/blobs/{digest(data)}")
    check(s == 200, "(the blob from the first direct upload is still there)")

    # Bad requests for part URLs.
    loc = start_direct(repo)
    for q in ["first=0", "count=0", "count=101", "first=10000&count=2", "first=abc"]:
        s, h, b = request("POST", f"{loc}/parts?{q}")
        oci_error(s, b, 400, "BLOB_UPLOAD_INVALID")
    s, h, b = request("POST", f"/v2/{repo}/blobs/uploads/00000000000000000000000000000000.00/parts")
    oci_error(s, b, 404, "BLOB_UPLOAD_UNKNOWN")
    # A session that already took bytes through PATCH cannot switch.
    s, h, b = request("PATCH", loc, b"y" * 10, {"Content-Range": "0-9"})
    check(s == 202, "PATCH on a fresh session")
    s, h, b = request("POST", f"{h['location']}/parts")
    oci_error(s, b, 400, "BLOB_UPLOAD_INVALID")


def test_largest_manifest():
    """A 4 MiB manifest, the most the core takes, pushed and read back through the function.

    `cargo lambda watch` 1.9.2 loses some responses this large: its runtime API answers the
    function's POST .../response before reading the body, and under load about 1 GET in 10 of
    a 4 MiB manifest never reaches the client, while the function's log shows the 200 sent in
    under 0.1 s (3 MiB: 0 of 60). A runtime API that reads the body first got 100 of 100 back.
    So a GET that times out is retried, only after the function's log proves it answered.
    The HTTP suite's own 4 MiB test is skipped here for the same reason (tests/lambda/run.sh).
    """
    repo = f"edge-{RUN}/largest-manifest"
    config = b'{"architecture":"amd64","os":"linux"}'
    push_monolithic(repo, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [],
        "annotations": {"pad": ""},
    }
    pad = 4 * MIB - len(json.dumps(manifest).encode())
    manifest["annotations"]["pad"] = "x" * pad
    body = json.dumps(manifest).encode()
    check(len(body) == 4 * MIB, "a manifest of exactly 4 MiB")
    ctype = {"Content-Type": manifest["mediaType"]}
    s, h, b = request("PUT", f"/v2/{repo}/manifests/big", body, ctype)
    check(s == 201, "a 4 MiB manifest is accepted", f"{s} {b[:300]!r}")
    uri = f"/v2/{repo}/manifests/big"
    for attempt in range(1, 6):
        answered = answers_logged(uri)
        try:
            s, h, b = request("GET", uri, headers={"Accept": manifest["mediaType"]}, timeout=30)
        except TimeoutError:
            deadline = time.time() + 5
            while answers_logged(uri) == answered and time.time() < deadline:
                time.sleep(0.2)
            check(answers_logged(uri) > answered,
                  f"GET {attempt} timed out after the function answered (emulator lost it)")
            continue
        check(s == 200 and b == body, f"the 4 MiB manifest reads back whole (GET {attempt})",
              f"{s} {len(b)} bytes")
        return
    check(False, "5 GETs of the 4 MiB manifest lost: more than the emulator's known defect")


def answers_logged(uri):
    """How many 200s the function has logged for GET uri."""
    with open(FUNCTION_LOG, errors="replace") as f:
        return sum(1 for line in f if f"method=GET uri=http://{BERTH.netloc}{uri} status=200" in line)


test_cap()
test_largest_manifest()
test_chunks_accumulate()
test_cancel_removes_everything()
test_direct()
test_presigned_urls()
print("edge tests passed")
