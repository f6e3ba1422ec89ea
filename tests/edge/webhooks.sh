#!/usr/bin/env bash
# Webhooks on the Worker (docs/webhooks.md): `wrangler dev --test-scheduled` with local R2, the
# local webhook queue of wrangler.toml, and a POLICY_CONFIG whose [webhooks] endpoint is a
# receiver this script runs on 127.0.0.1.
#   1. Prompt delivery through the queue: a tagged push to hooks/now (a push and a tag event go
#      to the outbox with the request, and the Worker sends a wake-up to WEBHOOK_QUEUE) reaches
#      the receiver within 15 s with no Cron Trigger fired.
#   2. Retries through the schedule: a tagged push to hooks/app is attempted at once through the
#      queue and the receiver answers 500 to each event's first attempt; the Cron Trigger at
#      /__scheduled after the backoff (1 s) delivers both; a second trigger sends nothing more.
# Checks every signature, and that the attempts of an event share its id.
#
#   bash infra/edge-build.sh && bash tests/edge/webhooks.sh
# The bundle must be built (edge/build); wrangler runs in its own session, stopped by PID.
set -uo pipefail
EDGE_NAME=webhooks
# shellcheck source=tests/edge/lib.sh
. "$(dirname "$0")/lib.sh"

receiver=$(bash tests/free-port.sh)
secret="edge-webhooks-$RANDOM$RANDOM-secret"
config="[webhooks]
retry_base_secs = 1
max_attempts = 5
[[webhooks.endpoints]]
name = \"rx\"
url = \"http://127.0.0.1:$receiver/hook\"
secret = \"$secret\"
allow_private = true
events = [\"push\", \"tag\"]"
work=$(mktemp -d /tmp/berth-edge-webhooks.XXXXXX)
trap 'stop_worker_and_clean "$work"' EXIT
printf '%s\n' "$config" >"$work/policies.toml"
policy=$(worker_config "$work/policies.toml") || exit 1
start_worker "$work" --var "POLICY_CONFIG:$policy"

timeout 120 python3 - "$EDGE_PORT" "$receiver" "$secret" "$work/wrangler.log" <<'PY'
import hashlib, hmac, http.server, json, os, re, sys, threading, time, urllib.request, urllib.error
port, receiver, secret, log = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4]
base = f"http://127.0.0.1:{port}"
got, lock = [], threading.Lock()

class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        event_id = self.headers.get("berth-event-id", "")
        repository = json.loads(body)["events"][0]["target"]["repository"]
        with lock:
            first = not any(g[0] == event_id for g in got)
            got.append((event_id, self.headers.get("berth-signature", ""), body))
        self.send_response(500 if first and repository == "hooks/app" else 200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", receiver), Receiver)
threading.Thread(target=server.serve_forever, daemon=True).start()

def call(method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

def push_image(repo, tag):
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    status, body = call("POST", f"/v2/{repo}/blobs/uploads/?digest={digest(config)}", config,
                        {"content-type": "application/octet-stream"})
    assert status == 201, (status, body)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
        "layers": [],
    }).encode()
    status, body = call("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                        {"content-type": "application/vnd.oci.image.manifest.v1+json"})
    assert status == 201, (status, body)
    return digest(manifest)

def scheduled():
    before = open(log, errors="replace").read().count("webhook deliveries:")
    status, _ = call("GET", "/__scheduled?cron=17+*+*+*+*")
    assert status == 200, status
    for _ in range(100):
        reports = re.findall(r"berth: webhook deliveries: (\{.*\})", open(log, errors="replace").read())
        if len(reports) > before:
            return json.loads(reports[-1])
        time.sleep(0.1)
    raise SystemExit("no webhook delivery report in the Worker's log")

def verified(signature, body):
    parts = dict(p.split("=", 1) for p in signature.split(",") if "=" in p)
    t, v1 = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > 300:
        return False
    return hmac.compare_digest(hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest(), v1)

def attempts_for(repo, n, within):
    """The receiver's attempts for `repo` once there are n of them (None after `within` s)."""
    deadline = time.time() + within
    while time.time() < deadline:
        with lock:
            mine = [g for g in got if json.loads(g[2])["events"][0]["target"]["repository"] == repo]
        if len(mine) >= n:
            return mine
        time.sleep(0.1)
    return None

def check(attempts, repo, pushed):
    for event_id, signature, body in attempts:
        assert verified(signature, body), (event_id, signature)
        event = json.loads(body)["events"][0]
        assert event["id"] == event_id and event["target"]["digest"] == pushed, event
        assert event["target"]["repository"] == repo, event
    kinds = sorted(json.loads(b)["events"][0]["berth"]["kind"] for _, _, b in attempts)
    return kinds

def cron_reports():
    return len(re.findall(r"berth: webhook deliveries: \{", open(log, errors="replace").read()))

# 1. The queue delivers at once, no Cron Trigger fired.
started = time.time()
now = push_image("hooks/now", "v1")
prompt = attempts_for("hooks/now", 2, 15)
assert prompt is not None, "no delivery through the queue within 15 s"
took = time.time() - started
assert cron_reports() == 0, "the Cron Trigger ran"
assert check(prompt, "hooks/now", now) == ["push", "tag"], prompt
assert len({g[0] for g in prompt}) == 2, prompt

# 2. A failed first attempt (through the queue) is retried by the Cron Trigger.
pushed = push_image("hooks/app", "v1")
assert attempts_for("hooks/app", 2, 15) is not None, "no first attempt through the queue within 15 s"
for _ in range(50):  # the queue run's report: its retries are recorded
    if re.search(r'webhook deliveries \(queue\): \{[^}]*"retrying":2', open(log, errors="replace").read()):
        break
    time.sleep(0.1)
time.sleep(1.2)
second = scheduled()
assert second["delivered"] == 2, second
third = scheduled()
assert third["delivered"] + third["retrying"] + third["failed"] == 0, third
attempts = attempts_for("hooks/app", 4, 1)
assert attempts is not None and len(attempts) == 4, attempts
assert len({g[0] for g in attempts}) == 2, attempts
assert check(attempts, "hooks/app", pushed) == ["push", "push", "tag", "tag"], attempts
with lock:
    assert len(got) == 6, got
print(f"edge webhooks: ok (a push delivered through the queue in {took:.1f} s without the Cron Trigger; "
      "2 events failed once through the queue then delivered by the Cron Trigger; signatures verified)")
PY
