//! The copy step against a destination that is a second in-memory `Registry` behind a fake
//! [`Upstream`] (as in the mirror's tests) asking for Basic auth.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::*;
use crate::memory::{MemoryBlobStore, MemoryMetaStore};
use crate::mirror::config::Secret;
use crate::mirror::{Upstream, UpstreamRequest, UpstreamResponse};
use crate::policy::{Policies, PolicyConfig};
use crate::storage::ByteStream;
use crate::{Body, Config, RequestContext};

type Reg = Registry<MemoryBlobStore, MemoryMetaStore>;
const BASE: &str = "http://dest.test";

struct Dest {
    reg: Reg,
    log: Mutex<Vec<String>>,
    down: std::sync::atomic::AtomicBool,
    /// Token auth (as Berth and Distribution's token servers: the challenge names what the
    /// request needs, pull for reads) instead of Basic.
    token: std::sync::atomic::AtomicBool,
}

/// The token auth of [`Dest::token`]: the token is the scope it grants. None: the request may
/// go on; Some: the answer (a token, or a 401 with its challenge).
fn token_auth(req: &UpstreamRequest, path: &str) -> Option<UpstreamResponse> {
    if let Some(query) = path.strip_prefix("/token?") {
        let scope = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "scope").map(|(_, v)| v.into_owned());
        let body = json!({ "token": format!("t:{}", scope.unwrap_or_default()), "expires_in": 300 }).to_string();
        return Some(UpstreamResponse { status: StatusCode::OK, headers: HeaderMap::new(), body: stream(body.into_bytes()) });
    }
    let repo = path.strip_prefix("/v2/")?.split("/manifests/").next()?.split("/blobs/").next()?;
    let needs = if req.method == http::Method::GET || req.method == http::Method::HEAD { "pull" } else { "pull,push" };
    let granted = req.headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer t:"));
    let wanted = format!("repository:{repo}:{needs}");
    if granted == Some(wanted.as_str()) || granted == Some(format!("repository:{repo}:pull,push").as_str()) {
        return None;
    }
    let mut h = HeaderMap::new();
    let challenge = format!(r#"Bearer realm="{BASE}/token",service="dest",scope="{wanted}""#);
    h.insert("www-authenticate", HeaderValue::from_str(&challenge).unwrap());
    Some(UpstreamResponse { status: StatusCode::UNAUTHORIZED, headers: h, body: stream(Vec::new()) })
}

struct FakeHttp(Arc<Dest>);

fn ctx(now: u64) -> RequestContext {
    RequestContext { now, random: [now as u8; 16] }
}

fn memory() -> Reg {
    Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(b"secret".to_vec()))
}

fn stream(bytes: Vec<u8>) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(Bytes::from(bytes))]))
}

async fn collect(body: Body) -> Vec<u8> {
    match body {
        Body::Empty => Vec::new(),
        Body::Full(b) => b.to_vec(),
        Body::Stream(s) => crate::body::read_limited(s, 1 << 24).await.unwrap().to_vec(),
    }
}

#[async_trait::async_trait]
impl Upstream for FakeHttp {
    async fn send(&self, req: UpstreamRequest) -> std::result::Result<UpstreamResponse, String> {
        let dest = &self.0;
        if dest.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("connection refused".into());
        }
        let path = req.url.strip_prefix(BASE).ok_or("unknown host")?.to_owned();
        dest.log.lock().unwrap().push(format!("{} {path}", req.method));
        if dest.token.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(answer) = token_auth(&req, &path) {
                return Ok(answer);
            }
        // user:pass
        } else if req.headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Basic dXNlcjpwYXNz") {
            let mut h = HeaderMap::new();
            h.insert("www-authenticate", HeaderValue::from_static(r#"Basic realm="dest""#));
            return Ok(UpstreamResponse { status: StatusCode::UNAUTHORIZED, headers: h, body: stream(Vec::new()) });
        }
        let mut builder = http::Request::builder().method(req.method.clone()).uri(&path);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let body = req.body.unwrap_or_else(crate::body::empty_stream);
        let response = dest.reg.handle(builder.body(body).unwrap(), ctx(1)).await;
        let (parts, body) = response.into_parts();
        Ok(UpstreamResponse { status: parts.status, headers: parts.headers, body: stream(collect(body).await) })
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn send(reg: &Reg, method: &str, uri: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let req = http::Request::builder().method(method).uri(uri).header("content-type", content_type).body(stream(body)).unwrap();
    // Fresh random bytes per request, as a runtime gives: outbox ids come from them.
    static N: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    let mut c = ctx(1);
    c.random[0] = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (parts, body) = reg.handle(req, c).await.into_parts();
    (parts.status, parts.headers, collect(body).await)
}

async fn push_blob(reg: &Reg, repo: &str, bytes: &[u8]) -> serde_json::Value {
    let d = digest_of(bytes);
    let (s, _, b) = send(reg, "POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), "application/octet-stream", bytes.to_vec()).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": bytes.len() })
}

async fn push_manifest(reg: &Reg, repo: &str, reference: Option<&str>, manifest: serde_json::Value) -> serde_json::Value {
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let d = digest_of(&bytes);
    let mt = manifest["mediaType"].as_str().unwrap().to_owned();
    let (s, _, b) = send(reg, "PUT", &format!("/v2/{repo}/manifests/{}", reference.unwrap_or(&d)), &mt, bytes.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    json!({ "mediaType": mt, "digest": d, "size": bytes.len() })
}

async fn image(reg: &Reg, repo: &str, layer: &[u8], tag: Option<&str>) -> serde_json::Value {
    let mut config = push_blob(reg, repo, format!("{{\"layer\":{}}}", layer.len()).as_bytes()).await;
    config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let layer = push_blob(reg, repo, layer).await;
    push_manifest(reg, repo, tag, json!({
        "schemaVersion": 2, "mediaType": crate::manifests::OCI_MANIFEST, "config": config, "layers": [layer]
    }))
    .await
}

fn rule() -> ReplicationRule {
    ReplicationRule {
        name: "dr".into(),
        repositories: vec!["app/**".into()],
        tags: vec!["*".into()],
        destination: BASE.into(),
        username: Some("user".into()),
        password: Some(Secret("pass".into())),
        prefix: "copy".into(),
        deletes: true,
        on_push: true,
        max_attempts: config::DEFAULT_MAX_ATTEMPTS,
        retry_base_secs: config::DEFAULT_RETRY_BASE_SECS,
    }
}

fn setup() -> (Arc<Dest>, Reg, UpstreamClient) {
    let dest = Arc::new(Dest { reg: memory(), log: Mutex::new(Vec::new()), down: Default::default(), token: Default::default() });
    let policies = Policies::new(&PolicyConfig { replication: vec![rule()], ..Default::default() }).unwrap();
    let client = UpstreamClient::new(Arc::new(FakeHttp(dest.clone())));
    (dest, memory().with_policies(policies), client)
}

async fn dest_digest(dest: &Dest, repo: &str, reference: &str) -> Option<String> {
    digest_at(&dest.reg, repo, reference).await
}

/// The digest `repo:reference` names in `reg` (a HEAD), if any.
async fn digest_at(reg: &Reg, repo: &str, reference: &str) -> Option<String> {
    let req = http::Request::builder()
        .method("HEAD")
        .uri(format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", format!("{},{}", crate::manifests::OCI_INDEX, crate::manifests::OCI_MANIFEST))
        .body(crate::body::empty_stream())
        .unwrap();
    let r = reg.handle(req, ctx(1)).await;
    (r.status() == StatusCode::OK).then(|| r.headers()["docker-content-digest"].to_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_index_its_children_and_a_referrer_arrive_with_their_digests() {
    let (dest, src, client) = setup();
    let amd = image(&src, "app/web", b"amd64 layer", None).await;
    let arm = image(&src, "app/web", b"arm64 v8 layer", None).await;
    let index = push_manifest(&src, "app/web", Some("v1"), json!({
        "schemaVersion": 2, "mediaType": crate::manifests::OCI_INDEX, "manifests": [amd, arm]
    }))
    .await;
    let mut empty = push_blob(&src, "app/web", b"{}").await;
    empty["mediaType"] = json!("application/vnd.oci.empty.v1+json");
    let signature = push_manifest(&src, "app/web", None, json!({
        "schemaVersion": 2, "mediaType": crate::manifests::OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": empty, "layers": [empty], "subject": index
    }))
    .await;

    let report = src.replicate(&client, &rule(), "app/web", "v1", 10).await.unwrap();
    assert_eq!(dest_digest(&dest, "copy/app/web", "v1").await.as_deref(), index["digest"].as_str());
    for m in [&amd, &arm, &signature] {
        let d = m["digest"].as_str().unwrap();
        assert_eq!(dest_digest(&dest, "copy/app/web", d).await.as_deref(), Some(d));
    }
    assert_eq!(report.manifests, 4, "{report:?}");
    assert_eq!(report.blobs_uploaded, 5, "2 configs, 2 layers, the empty blob: {report:?}");
    // The index went after its children; the referrer after its subject.
    let log = dest.log.lock().unwrap().clone();
    let put = |d: &serde_json::Value| log.iter().position(|l| l.starts_with("PUT") && l.ends_with(d["digest"].as_str().unwrap()));
    let put_index = log.iter().position(|l| l == "PUT /v2/copy/app/web/manifests/v1").unwrap();
    assert!(put(&amd).unwrap() < put_index && put(&arm).unwrap() < put_index && put_index < put(&signature).unwrap());

    // Again: everything is there; only the tag is put again.
    let again = src.replicate(&client, &rule(), "app/web", "v1", 11).await.unwrap();
    assert_eq!((again.manifests, again.blobs_uploaded, again.manifests_present), (1, 0, 3), "{again:?}");
    let status = statuses(src.meta_store()).await.unwrap();
    assert_eq!((status.len(), status[0].ok, status[0].at), (1, true, 11));

    // Delete replication.
    src.delete_at(&client, &rule(), "app/web", signature["digest"].as_str().unwrap(), 12).await.unwrap();
    assert_eq!(dest_digest(&dest, "copy/app/web", signature["digest"].as_str().unwrap()).await, None);
}

#[tokio::test]
async fn a_blob_put_in_another_repository_is_mounted_and_a_down_destination_is_an_error_kept_as_status() {
    let (dest, src, client) = setup();
    image(&src, "app/a", b"shared layer", Some("v1")).await;
    image(&src, "app/b", b"shared layer", Some("v1")).await;
    src.replicate(&client, &rule(), "app/a", "v1", 10).await.unwrap();
    let report = src.replicate(&client, &rule(), "app/b", "v1", 10).await.unwrap();
    assert_eq!((report.blobs_mounted, report.blobs_uploaded), (2, 0), "{report:?}");
    assert!(dest.log.lock().unwrap().iter().any(|l| l.contains("mount=") && l.contains("from=copy%2Fapp%2Fa")));
    assert!(dest_digest(&dest, "copy/app/b", "v1").await.is_some());

    dest.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = src.replicate(&client, &rule(), "app/a", "v1", 20).await.unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_GATEWAY);
    assert!(err.message.contains("connection refused"), "{}", err.message);
    let status = statuses(src.meta_store()).await.unwrap();
    assert!(!status[0].ok && status[0].error.as_deref().unwrap().contains("connection refused"));
    let targets = src.replication_targets(&rule()).await.unwrap();
    assert_eq!(targets, vec![("app/a".to_owned(), "v1".to_owned()), ("app/b".to_owned(), "v1".to_owned())]);
}

#[tokio::test]
async fn a_push_is_replicated_through_the_outbox_after_the_destination_comes_back() {
    use crate::webhooks::outbox::{failed_in, redeliver_all_in};
    let (dest, src, client) = setup();
    dest.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let pushed = image(&src, "app/web", b"layer", Some("v1")).await;
    image(&src, "other/x", b"layer", Some("v1")).await; // no rule covers it
    let due = src.meta_store().list(outbox::QUEUE.due, None, 10).await.unwrap();
    assert_eq!(due.len(), 1, "one entry per (rule, manifest pushed): {due:?}");

    let r = src.replicate_due(&client, 10, 10).await.unwrap();
    assert_eq!((r.copied, r.retrying), (0, 1));
    // Not due again before its backoff.
    assert_eq!(src.replicate_due(&client, 11, 10).await.unwrap(), outbox::DueReport::default());
    dest.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = src.replicate_due(&client, 10 + rule().backoff(1), 10).await.unwrap();
    assert_eq!((r.copied, r.retrying), (1, 0));
    assert_eq!(dest_digest(&dest, "copy/app/web", "v1").await.as_deref(), pushed["digest"].as_str());
    assert!(src.meta_store().list(outbox::QUEUE.due, None, 10).await.unwrap().is_empty());

    // A delete replicates (the rule says so); after the last attempt an entry is kept as
    // failed, and an admin puts it back.
    let (s, _, _) = send(&src, "DELETE", &format!("/v2/app/web/manifests/{}", pushed["digest"].as_str().unwrap()), "", vec![]).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    dest.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut now = 100;
    for _ in 0..rule().max_attempts {
        src.replicate_due(&client, now, 10).await.unwrap();
        now += rule().backoff(rule().max_attempts);
    }
    let failed = failed_in(src.meta_store(), outbox::QUEUE, None, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].last_error.as_deref().unwrap().contains("connection refused"));
    dest.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(redeliver_all_in(src.meta_store(), outbox::QUEUE, now).await.unwrap(), 1);
    assert_eq!(src.replicate_due(&client, now, 10).await.unwrap().copied, 1);
    assert_eq!(dest_digest(&dest, "copy/app/web", "v1").await, None, "deleted at the destination too");
}

/// The source with webhooks asking for replication outcomes (both formats), and a rule that
/// gives up after two attempts, one second apart.
fn setup_with_hooks() -> (Arc<Dest>, Reg, UpstreamClient) {
    let (dest, src, client) = setup();
    let quick = ReplicationRule { max_attempts: 2, retry_base_secs: 1, ..rule() };
    let policies = Policies::new(&PolicyConfig { replication: vec![quick], ..Default::default() }).unwrap();
    let text = r#"
        [[webhooks.endpoints]]
        name = "ops"
        url = "https://hooks.example/a"
        secret = "0123456789abcdef-secret"
        events = ["replication_done", "replication_failed"]
        [[webhooks.endpoints]]
        name = "ce"
        url = "https://hooks.example/b"
        secret = "0123456789abcdef-secret"
        events = ["replication_failed"]
        format = "cloudevents"
    "#;
    let hooks = crate::webhooks::Webhooks::from_settings(None, Some(text), "https://src.example").unwrap();
    (dest, src.with_policies(policies).with_webhooks(hooks), client)
}

/// The webhook outbox's entries, in key order.
async fn hook_entries(reg: &Reg) -> Vec<crate::webhooks::Delivery> {
    let mut out = Vec::new();
    for key in reg.meta_store().list(crate::webhooks::outbox::DUE, None, 100).await.unwrap() {
        let v = reg.meta_store().get(&key).await.unwrap().unwrap();
        out.push(serde_json::from_slice(&v.value).unwrap());
    }
    out
}

#[tokio::test]
async fn a_final_outcome_is_a_webhook_event_written_with_it_and_a_retried_attempt_is_not() {
    use crate::webhooks::{Format, HookKind};
    let (dest, src, client) = setup_with_hooks();
    let pushed = image(&src, "app/web", b"layer", Some("v1")).await;
    let r = src.replicate_due(&client, 10, 10).await.unwrap();
    assert_eq!((r.copied, r.rules["dr"].copied), (1, 1), "{r:?}");
    let events = hook_entries(&src).await;
    assert_eq!(events.len(), 1, "replication_done goes to the endpoint that asked for it only: {events:?}");
    let e = &events[0].event;
    assert_eq!((e.kind, events[0].endpoint.as_str(), e.at), (HookKind::ReplicationDone, "ops", 10));
    assert_eq!((e.repository.as_deref(), e.tag.as_deref(), e.digest.as_ref()), (Some("app/web"), Some("v1"), pushed["digest"].as_str().map(str::to_owned).as_ref()));
    let detail = e.detail.as_ref().unwrap();
    assert_eq!(detail["rule"], "dr");
    assert_eq!(detail["destination"], BASE);
    assert_eq!(detail["destinationRepository"], "copy/app/web");
    assert_eq!(detail["attempts"], 1);
    assert_eq!(detail["report"]["manifests"], 1);
    let body: serde_json::Value = serde_json::from_slice(&e.body(Format::Distribution, "https://src.example")).unwrap();
    assert_eq!(body["events"][0]["action"], "replication_done");
    assert_eq!(body["events"][0]["target"]["repository"], "app/web");

    // The destination is down: the first failure is retried (no event), the second is the
    // last (max_attempts = 2): one replication_failed to each endpoint that asked for it.
    dest.down.store(true, std::sync::atomic::Ordering::SeqCst);
    image(&src, "app/web", b"layer two", Some("v2")).await;
    let before = hook_entries(&src).await.len();
    let r = src.replicate_due(&client, 20, 10).await.unwrap();
    assert_eq!((r.retrying, r.rules["dr"].retrying), (1, 1));
    assert_eq!(hook_entries(&src).await.len(), before, "a failure that will be retried is no event");
    let r = src.replicate_due(&client, 20 + 1, 10).await.unwrap();
    assert_eq!((r.failed, r.rules["dr"].failed), (1, 1), "{r:?}");
    let failed: Vec<_> = hook_entries(&src).await.into_iter().filter(|d| d.event.kind == HookKind::ReplicationFailed).collect();
    assert_eq!(failed.iter().map(|d| d.endpoint.as_str()).collect::<Vec<_>>(), ["ce", "ops"]);
    assert_eq!(failed[0].event.id, failed[1].event.id, "one event, the same id for every endpoint");
    let detail = failed[0].event.detail.as_ref().unwrap();
    assert_eq!(detail["attempts"], 2);
    assert!(detail["error"].as_str().unwrap().contains("connection refused"), "{detail}");
    let ce: serde_json::Value = serde_json::from_slice(&failed[0].event.body(Format::Cloudevents, "https://src.example")).unwrap();
    assert_eq!(ce["type"], "io.berth.registry.replication_failed");
    assert_eq!(ce["subject"], "app/web:v2");
    assert_eq!(ce["data"]["detail"]["rule"], "dr");
    // The outcome and the entry's move were one batch: the entry is in the failed list.
    let kept = crate::webhooks::outbox::failed_in(src.meta_store(), outbox::QUEUE, None, 10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(statuses(src.meta_store()).await.unwrap()[0].ok, false);
}

#[tokio::test]
async fn a_worker_that_died_before_recording_the_outcome_leaves_it_to_the_next_with_the_same_event_id() {
    let (_dest, src, client) = setup_with_hooks();
    image(&src, "app/web", b"layer", Some("v1")).await;
    let key = src.meta_store().list(outbox::QUEUE.due, None, 10).await.unwrap().remove(0);
    // A worker claims the entry, copies, and dies before its batch: nothing is recorded...
    crate::webhooks::outbox::claim(src.meta_store(), &key, 10, outbox::LEASE_SECS).await.unwrap().unwrap();
    assert_eq!(src.replicate_due(&client, 11, 10).await.unwrap().skipped, 1);
    assert!(hook_entries(&src).await.is_empty());
    // ...until its lease lapses and another worker runs the entry and records the event.
    let later = 10 + outbox::LEASE_SECS + 1;
    assert_eq!(src.replicate_due(&client, later, 10).await.unwrap().copied, 1);
    let events = hook_entries(&src).await;
    assert_eq!(events.len(), 1);
    // A repeat of the same attempt (the entry still there after a crash between the event and
    // the entry's removal, on a store without transactions) derives the same id. (The entry
    // was due at 1, the time of the push.)
    let again = super::events::outcome_id(1, &key, crate::webhooks::HookKind::ReplicationDone);
    assert_eq!(events[0].event.id, again);
    assert_ne!(again, super::events::outcome_id(1, &key, crate::webhooks::HookKind::ReplicationFailed));
}

/// Pull mode against the same fake remote.
mod sync;

/// A push that only replication wants still marks its response, so a runtime that delivers
/// from a queue (the Worker, Lambda) wakes its consumer.
#[tokio::test]
async fn a_push_with_replication_entries_asks_for_a_wake_up() {
    let (_dest, src, _client) = setup();
    let config = push_blob(&src, "app/web", b"{}").await;
    let manifest = json!({ "schemaVersion": 2, "mediaType": crate::manifests::OCI_MANIFEST, "config": config, "layers": [] });
    let put = |repo: &str| {
        http::Request::builder()
            .method("PUT")
            .uri(format!("/v2/{repo}/manifests/v1"))
            .header("content-type", crate::manifests::OCI_MANIFEST)
            .body(stream(serde_json::to_vec(&manifest).unwrap()))
            .unwrap()
    };
    let response = src.handle(put("app/web"), ctx(2)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.extensions().get::<crate::webhooks::Enqueued>(), Some(&crate::webhooks::Enqueued(1)));
    push_blob(&src, "lib/x", b"{}").await;
    let response = src.handle(put("lib/x"), ctx(3)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.extensions().get::<crate::webhooks::Enqueued>(), None, "no rule covers lib/x");
}

/// The event-driven runtimes' step: due entries within a budget, and full runs on a schedule
/// enqueued once per period (one invocation wins each rule's run).
#[tokio::test]
async fn scheduled_full_runs_go_through_the_outbox_once_per_period() {
    let (dest, src, client) = setup();
    let a = image(&src, "app/a", b"layer a", Some("v1")).await;
    let b = image(&src, "app/b", b"layer b", Some("v2")).await;
    image(&src, "lib/c", b"layer c", Some("v1")).await;
    let clock = || 10u64;
    let budget = crate::gc::Budget { clock: &clock, deadline: Some(10), max_steps: None };
    let r = src.replicate_for(&client, 1, &budget).await.unwrap();
    assert_eq!(r.copied, 1, "the deadline stops it after a batch: {r:?}");
    let budget = crate::gc::Budget { clock: &clock, deadline: Some(11), max_steps: None };
    let r = src.replicate_for(&client, 1, &budget).await.unwrap();
    assert_eq!(r.copied, 1, "the next invocation continues: {r:?}");
    assert_eq!(dest_digest(&dest, "copy/app/b", "v2").await.as_deref(), b["digest"].as_str());

    // Gone at the destination: only a full run copies it again.
    src.delete_at(&client, &rule(), "app/a", "v1", 12).await.unwrap();
    src.delete_at(&client, &rule(), "app/a", a["digest"].as_str().unwrap(), 12).await.unwrap();
    assert_eq!(dest_digest(&dest, "copy/app/a", "v1").await, None);
    assert_eq!(src.enqueue_full_runs(100, 0).await.unwrap(), 0, "0 is off");
    assert_eq!(src.enqueue_full_runs(100, 60).await.unwrap(), 2, "the first run: every covered tag");
    assert_eq!(src.enqueue_full_runs(100, 60).await.unwrap(), 0, "a second invocation in the period: nothing");
    assert_eq!(src.enqueue_full_runs(159, 60).await.unwrap(), 0, "not due yet");
    let clock = || 150u64;
    let budget = crate::gc::Budget { clock: &clock, deadline: None, max_steps: None };
    let r = src.replicate_for(&client, 16, &budget).await.unwrap();
    assert_eq!((r.copied, r.retrying, r.failed), (2, 0, 0), "{r:?}");
    assert_eq!(dest_digest(&dest, "copy/app/a", "v1").await.as_deref(), a["digest"].as_str());
    assert_eq!(src.enqueue_full_runs(160, 60).await.unwrap(), 2, "due again");
    assert_eq!(src.meta_store().list(outbox::QUEUE.due, None, 10).await.unwrap().len(), 2);
}

/// Entries another worker holds (a long copy, or the claim of an invocation that was killed)
/// stay first in the outbox: a round looks past them instead of finding nothing to do.
#[tokio::test]
async fn entries_held_elsewhere_do_not_stop_a_round() {
    use crate::webhooks::outbox::claim;
    let (dest, src, client) = setup();
    for repo in ["app/a", "app/b", "app/c"] {
        image(&src, repo, repo.as_bytes(), Some("v1")).await;
    }
    let due = src.meta_store().list(outbox::QUEUE.due, None, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    for key in &due[..2] {
        assert!(claim(src.meta_store(), key, 10, outbox::LEASE_SECS).await.unwrap().is_some());
    }
    let r = src.replicate_due(&client, 10, 2).await.unwrap();
    assert_eq!((r.copied, r.skipped), (1, 2), "{r:?}");
    let mut at_dest = 0;
    for repo in ["copy/app/a", "copy/app/b", "copy/app/c"] {
        at_dest += dest_digest(&dest, repo, "v1").await.is_some() as usize;
    }
    assert_eq!(at_dest, 1, "the entry nobody held");
}

/// A destination with token auth whose challenges name only `pull` for reads: a copy that only
/// HEADs before its manifest PUT (everything there already, a new tag) must still get a push
/// token first, as that PUT cannot be sent twice. Failed before the client asked for its own
/// scope: "the upstream asked again (auth or redirect) after the body was sent".
#[tokio::test]
async fn a_new_tag_of_a_copied_image_gets_a_push_token_from_a_fresh_client() {
    let (dest, src, client) = setup();
    dest.token.store(true, std::sync::atomic::Ordering::SeqCst);
    let pushed = image(&src, "app/web", b"layer", Some("v1")).await;
    src.replicate(&client, &rule(), "app/web", "v1", 10).await.unwrap();
    let d = pushed["digest"].as_str().unwrap();
    // The same manifest under a second tag, copied by a client with no token yet.
    let (s, _, m) = send(&src, "GET", &format!("/v2/app/web/manifests/{d}"), "", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(&src, "PUT", "/v2/app/web/manifests/v2", crate::manifests::OCI_MANIFEST, m).await;
    assert_eq!(s, StatusCode::CREATED);
    let fresh = UpstreamClient::new(Arc::new(FakeHttp(dest.clone())));
    let report = src.replicate(&fresh, &rule(), "app/web", "v2", 11).await.unwrap();
    assert_eq!((report.manifests, report.blobs_uploaded, report.blobs_present), (1, 0, 2), "{report:?}");
    assert_eq!(dest_digest(&dest, "copy/app/web", "v2").await.as_deref(), Some(d));
}
