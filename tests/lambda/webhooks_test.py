#!/usr/bin/env python3
"""Webhooks on the Lambda function through its SQS wake-up (docs/webhooks.md), with real parts:
the function binary behind `cargo lambda watch`, its [webhooks] endpoint a local receiver
(allow_private), BERTH_WEBHOOK_QUEUE_URL a queue in moto (BERTH_SQS_ENDPOINT).

Run by tests/lambda/run.sh (step `webhooks`). Pushes a tagged image; checks nothing is
delivered yet (no schedule fires, nothing consumes the queue), that the push left exactly one
small wake-up message in the queue, then invokes the function with an SQS event holding that
message (what the event source mapping does) through the emulator's Invoke API: the answer
reports no failed item, and the receiver gets the push and tag events, each signed with the
endpoint's secret (HMAC-SHA256 of "<t>.<body>", checked here), for the pushed repository and
tag. A pull (an event the endpoint did not ask for) sends no message.

Environment: BERTH_URL (the shim in front of the emulator), INVOKE_URL (the emulator's
/2015-03-31/functions/<name>/invocations), SQS_ENDPOINT and QUEUE_URL (moto), RECEIVER_PORT and
WEBHOOK_SECRET (the endpoint in the function's BERTH_POLICY_CONFIG).
"""

import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

import boto3

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from gc_checks import digest  # noqa: E402

base = os.environ["BERTH_URL"]
invoke_url = os.environ["INVOKE_URL"]
queue_url = os.environ["QUEUE_URL"]
secret = os.environ["WEBHOOK_SECRET"].encode()
sqs = boto3.client("sqs", endpoint_url=os.environ["SQS_ENDPOINT"], region_name=os.environ.get("AWS_REGION", "us-east-1"))
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

received = []  # (headers, body) of every delivery
lock = threading.Lock()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with lock:
            received.append((dict((k.lower(), v) for k, v in self.headers.items()), body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["RECEIVER_PORT"])), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()


def call(method, url, body=None, headers=None):
    req = urllib.request.Request(url if url.startswith("http") else base + url, data=body, method=method,
                                 headers=headers or {})
    try:
        with opener.open(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def push_image(repo, tag):
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    layer = os.urandom(1024)
    for blob in (config, layer):
        status, body = call("POST", f"/v2/{repo}/blobs/uploads/?digest={digest(blob)}", blob,
                            {"content-type": "application/octet-stream"})
        assert status == 201, (status, body)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer), "size": len(layer)}],
    }).encode()
    status, body = call("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                        {"content-type": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 201, (status, body)
    return manifest


def messages():
    """Every message in the queue now (received, so hidden from the next receive)."""
    found = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not got:
            return found
        found += got


def sqs_event(msgs):
    """The event an SQS event source mapping invokes the function with."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
        "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:berth-webhooks", "awsRegion": "us-east-1",
    } for m in msgs]}


def verify(headers, body):
    """docs/webhooks.md: berth-signature is t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    fields = dict(part.split("=", 1) for part in headers["berth-signature"].split(","))
    expected = hmac.new(secret, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"]), ("bad signature", headers)
    assert abs(time.time() - int(fields["t"])) < 300, ("stale signature time", headers)


repo, tag = "hooks/app", "v1"
manifest = push_image(repo, tag)

# The push wrote two outbox entries (push, tag) and sent one wake-up for them.
wakeups = messages()
assert len(wakeups) == 1, ("one wake-up per request that wrote entries", wakeups)
assert json.loads(wakeups[0]["Body"]) == {"webhooks": 2}, wakeups[0]["Body"]
time.sleep(1)
assert not received, ("delivered before any invocation", received)
print("ok: the push sent one wake-up to the queue, nothing delivered yet")

status, out = call("POST", invoke_url, json.dumps(sqs_event(wakeups)).encode(), {"content-type": "application/json"})
assert status == 200, (status, out)
assert json.loads(out) == {"batchItemFailures": []}, out
# The invocation delivers before it answers; the mapping then deletes the messages.
for m in wakeups:
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
deadline = time.time() + 10
while time.time() < deadline and len(received) < 2:
    time.sleep(0.1)
with lock:
    got = list(received)
kinds = sorted(h["berth-event"] for h, _ in got)
assert kinds == ["push", "tag"], kinds
for headers, body in got:
    verify(headers, body)
    event = json.loads(body)["events"][0]
    assert event["target"]["repository"] == repo, event
    assert event["target"]["digest"] == digest(manifest), event
    if headers["berth-event"] == "tag":
        assert event["target"]["tag"] == tag, event
assert len({h["berth-event-id"] for h, _ in got}) == 2, "one id per event"
print("ok: the SQS event delivered the push and tag events, signatures verified")

# A pull is not an event this endpoint asked for: no outbox entry, so no message.
status, _ = call("GET", f"/v2/{repo}/manifests/{tag}", headers={"accept": "application/vnd.oci.image.manifest.v1+json"})
assert status == 200, status
assert messages() == [], "a request that wrote no outbox entry sent a wake-up"
assert len(received) == 2, ("more deliveries than events", received)
print("ok: a pull sent no wake-up")
server.shutdown()
print("webhooks over SQS on Lambda: all checks passed")
