//! Webhooks in the core: the outbox written through `Registry::handle` on the memory stores,
//! `deliver` with a fake sender, the signature, and the URL checks.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use http::StatusCode;

use super::outbox::{Delivery, DUE, FAILED};
use super::target::{check_url, host_of, Host};
use super::*;
use crate::manifests::OCI_MANIFEST;
use crate::memory::{MemoryBlobStore, MemoryMetaStore};
use crate::storage::{BatchOp, ByteStream, Precondition, PutOutcome, Versioned};
use crate::{Config, Registry};

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "0123456789abcdef-secret";

fn config(extra: &str) -> String {
    format!(
        r#"
[webhooks]
retry_base_secs = 10
max_attempts = 3
[[webhooks.endpoints]]
name = "ci"
url = "http://127.0.0.1:9/hook"
secret = "{SECRET}"
allow_private = true
repositories = ["team/**"]
events = ["push", "tag", "delete", "tag_moved", "quota_exceeded"]
{extra}
"#
    )
}

fn hooks(text: &str) -> Webhooks {
    Webhooks::from_settings(None, Some(text), "https://registry.example").unwrap()
}

/// A metadata store whose outbox writes can be made to fail.
#[derive(Default)]
struct Store {
    inner: MemoryMetaStore,
    break_outbox: AtomicBool,
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl MetaStore for Store {
    async fn get(&self, key: &str) -> StorageResult<Option<Versioned>> {
        tokio::task::yield_now().await;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> StorageResult<PutOutcome> {
        tokio::task::yield_now().await;
        self.inner.put(key, value, cond).await
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        tokio::task::yield_now().await;
        self.inner.list(prefix, after, limit).await
    }
    async fn apply(&self, ops: Vec<BatchOp>) -> StorageResult<Vec<bool>> {
        tokio::task::yield_now().await;
        if self.break_outbox.load(Ordering::Relaxed) && ops.iter().any(|o| o.key().starts_with("webhooks/")) {
            return Err(crate::StorageError::new("outbox unavailable"));
        }
        self.inner.apply(ops).await
    }
}

struct Harness {
    registry: Registry<MemoryBlobStore, Store>,
    random: AtomicU8,
}

fn harness(text: &str) -> Harness {
    let policies = crate::policy::Policies::from_policy_file(text).unwrap();
    let registry = Registry::new(MemoryBlobStore::new(), Store::default(), Config::new(b"s".to_vec()))
        .with_policies(policies)
        .with_webhooks(hooks(text));
    Harness { registry, random: AtomicU8::new(1) }
}

fn stream_of(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(bytes)]))
}

impl Harness {
    async fn send(&self, method: &str, uri: &str, body: &[u8]) -> StatusCode {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", OCI_MANIFEST)
            .header("user-agent", "test-client")
            .body(stream_of(Bytes::copy_from_slice(body)))
            .unwrap();
        let random = [self.random.fetch_add(1, Ordering::Relaxed); 16];
        self.registry.handle(req, crate::RequestContext { now: NOW, random }).await.status()
    }

    async fn image(&self, repo: &str, n: u32) -> (Vec<u8>, String) {
        let config = format!("{{\"n\":{n}}}");
        let digest = crate::hash::sha256_of(config.as_bytes());
        let status = self.send("POST", &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), config.as_bytes()).await;
        assert_eq!(status, StatusCode::CREATED);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len() },
            "layers": [],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = crate::hash::sha256_of(&bytes);
        (bytes, digest)
    }

    async fn outbox(&self) -> Vec<Delivery> {
        let meta = self.registry.meta_store();
        let mut out = Vec::new();
        for key in meta.list(DUE, None, 1000).await.unwrap() {
            let v = meta.get(&key).await.unwrap().unwrap();
            out.push(serde_json::from_slice(&v.value).unwrap());
        }
        out
    }

    async fn kinds(&self) -> Vec<(HookKind, Option<String>)> {
        let mut kinds: Vec<_> = self.outbox().await.into_iter().map(|d| (d.event.kind, d.event.tag)).collect();
        kinds.sort_by_key(|(k, t)| (k.as_str(), t.clone()));
        kinds
    }
}

#[tokio::test]
async fn the_outbox_is_written_for_successful_writes_only() {
    let h = harness(&config(""));
    let (bytes, digest) = h.image("team/app", 1).await;
    // A manifest naming a blob the repository lacks is refused: no event.
    let (_, missing) = h.image("other/app", 2).await;
    let bad = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": missing, "size": 1 },
    });
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/bad", &serde_json::to_vec(&bad).unwrap()).await, StatusCode::BAD_REQUEST);
    assert_eq!(h.send("DELETE", "/v2/team/app/manifests/nope", b"").await, StatusCode::NOT_FOUND);
    assert!(h.outbox().await.is_empty(), "blob pushes and refused writes make no webhook event");

    assert_eq!(h.send("PUT", "/v2/team/app/manifests/v1", &bytes).await, StatusCode::CREATED);
    assert_eq!(h.kinds().await, [(HookKind::Push, None), (HookKind::Tag, Some("v1".into()))]);
    let push = h.outbox().await.into_iter().find(|d| d.event.kind == HookKind::Push).unwrap();
    assert_eq!(push.event.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(push.event.repository.as_deref(), Some("team/app"));
    assert_eq!(push.event.request.as_ref().unwrap().useragent, "test-client");
    assert_eq!((push.attempts, push.next_at, push.endpoint.as_str()), (0, NOW, "ci"));

    // A repository no endpoint watches, and pulls nobody asked for: nothing more.
    let (other, _) = h.image("other/app", 3).await;
    assert_eq!(h.send("PUT", "/v2/other/app/manifests/v1", &other).await, StatusCode::CREATED);
    assert_eq!(h.send("GET", "/v2/team/app/manifests/v1", b"").await, StatusCode::OK);
    assert_eq!(h.outbox().await.len(), 2);

    assert_eq!(h.send("DELETE", &format!("/v2/team/app/manifests/{digest}"), b"").await, StatusCode::ACCEPTED);
    assert!(h.kinds().await.contains(&(HookKind::Delete, None)));
}

/// Every status the registry's sinks were told.
#[derive(Default)]
struct Statuses(Mutex<Vec<u16>>);

impl crate::EventSink for Statuses {
    fn emit(&self, event: &crate::Event) {
        self.0.lock().unwrap().push(event.status);
    }
}

#[tokio::test]
async fn a_write_whose_event_cannot_be_recorded_is_not_answered_as_a_success() {
    let statuses = std::sync::Arc::new(Statuses::default());
    let mut h = harness(&config(""));
    h.registry = h.registry.with_event_sink(statuses.clone());
    let (bytes, _) = h.image("team/app", 1).await;
    h.registry.meta_store().break_outbox.store(true, Ordering::Relaxed);
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/v1", &bytes).await, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(statuses.0.lock().unwrap().last(), Some(&500), "the sinks (audit log, metrics) hear the answer given");
    // The client's retry, once the store is back, records it.
    h.registry.meta_store().break_outbox.store(false, Ordering::Relaxed);
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/v1", &bytes).await, StatusCode::CREATED);
    assert_eq!(h.outbox().await.len(), 2);
}

#[tokio::test]
async fn moving_a_tag_names_the_digest_it_left() {
    let h = harness(&config(""));
    let (one, d1) = h.image("team/app", 1).await;
    let (two, d2) = h.image("team/app", 2).await;
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/latest", &one).await, StatusCode::CREATED);
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/latest", &one).await, StatusCode::CREATED);
    assert!(!h.kinds().await.iter().any(|(k, _)| *k == HookKind::TagMoved), "same digest again: not moved");
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/latest", &two).await, StatusCode::CREATED);
    let moved: Vec<_> = h.outbox().await.into_iter().filter(|d| d.event.kind == HookKind::TagMoved).collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].event.previous_digest.as_deref(), Some(d1.as_str()));
    assert_eq!(moved[0].event.digest.as_deref(), Some(d2.as_str()));
}

#[tokio::test]
async fn pulls_are_events_only_when_asked_for_and_head_is_not_a_pull() {
    let h = harness(&config("").replace("events = [\"push\",", "events = [\"pull\", \"push\","));
    let (bytes, _) = h.image("team/app", 1).await;
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/v1", &bytes).await, StatusCode::CREATED);
    assert_eq!(h.send("HEAD", "/v2/team/app/manifests/v1", b"").await, StatusCode::OK);
    assert_eq!(h.send("GET", "/v2/team/app/manifests/nope", b"").await, StatusCode::NOT_FOUND);
    let etag = format!("\"{}\"", crate::hash::sha256_of(&bytes));
    let req = http::Request::get("/v2/team/app/manifests/v1").header("if-none-match", etag).body(stream_of(Bytes::new())).unwrap();
    let response = h.registry.handle(req, crate::RequestContext { now: NOW, random: [99; 16] }).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert!(!h.kinds().await.iter().any(|(k, _)| *k == HookKind::Pull));
    assert_eq!(h.send("GET", "/v2/team/app/manifests/v1", b"").await, StatusCode::OK);
    assert_eq!(h.kinds().await.iter().filter(|(k, _)| *k == HookKind::Pull).count(), 1);
}

/// A runtime that delivers from a queue wakes its consumer only after a request that wrote
/// outbox entries: the response says how many (`Enqueued`), and nothing when there were none.
#[tokio::test]
async fn a_response_tells_the_runtime_when_its_request_wrote_outbox_entries() {
    let h = harness(&config(""));
    let respond = |method: &str, uri: &str, body: &[u8], n: u8| {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", OCI_MANIFEST)
            .body(stream_of(Bytes::copy_from_slice(body)))
            .unwrap();
        h.registry.handle(req, crate::RequestContext { now: NOW, random: [n; 16] })
    };
    let (bytes, _) = h.image("team/app", 1).await;
    let push = respond("PUT", "/v2/team/app/manifests/v1", &bytes, 200).await;
    assert_eq!(push.status(), StatusCode::CREATED);
    // push + tag, to the one endpoint.
    assert_eq!(push.extensions().get::<Enqueued>(), Some(&Enqueued(2)));
    let pull = respond("GET", "/v2/team/app/manifests/v1", b"", 201).await;
    assert_eq!(pull.status(), StatusCode::OK);
    assert_eq!(pull.extensions().get::<Enqueued>(), None, "pulls were not asked for");
    let (other, _) = h.image("other/app", 2).await;
    let elsewhere = respond("PUT", "/v2/other/app/manifests/v1", &other, 202).await;
    assert_eq!(elsewhere.status(), StatusCode::CREATED);
    assert_eq!(elsewhere.extensions().get::<Enqueued>(), None, "no endpoint wants other/**");
}

#[tokio::test]
async fn buffered_pulls_are_written_by_the_flush_and_bounded() {
    let text = config("").replace("events = [\"push\",", "events = [\"pull\", \"push\",");
    let policies = crate::policy::Policies::from_policy_file(&text).unwrap();
    let registry = Registry::new(MemoryBlobStore::new(), Store::default(), Config::new(b"s".to_vec()))
        .with_policies(policies)
        .with_webhooks(hooks(&text).buffer_pulls(2));
    let h = Harness { registry, random: AtomicU8::new(1) };
    let (bytes, _) = h.image("team/app", 1).await;
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/v1", &bytes).await, StatusCode::CREATED);
    // The push is written by its request; the pulls wait in memory, and past two are dropped.
    for _ in 0..3 {
        assert_eq!(h.send("GET", "/v2/team/app/manifests/v1", b"").await, StatusCode::OK);
    }
    let pulls = |kinds: Vec<(HookKind, Option<String>)>| kinds.iter().filter(|(k, _)| *k == HookKind::Pull).count();
    assert!(h.kinds().await.iter().any(|(k, _)| *k == HookKind::Push));
    assert_eq!(pulls(h.kinds().await), 0);
    let hooks = h.registry.webhooks().unwrap();
    assert_eq!(hooks.pulls_dropped(), 1);
    // A failed flush keeps them for the next one.
    h.registry.meta_store().break_outbox.store(true, Ordering::Relaxed);
    assert!(hooks.flush_pulls(h.registry.meta_store()).await.is_err());
    h.registry.meta_store().break_outbox.store(false, Ordering::Relaxed);
    assert_eq!(hooks.flush_pulls(h.registry.meta_store()).await.unwrap(), 2);
    // Both in one entry (one POST).
    assert_eq!(pulls(h.kinds().await), 1);
    let batch = h.outbox().await.into_iter().find(|d| d.event.kind == HookKind::Pull).unwrap();
    assert_eq!(batch.events().filter(|e| e.kind == HookKind::Pull).count(), 2);
    assert_eq!(hooks.flush_pulls(h.registry.meta_store()).await.unwrap(), 0);
}

#[tokio::test]
async fn buffered_pulls_go_out_a_hundred_to_a_post_per_endpoint() {
    let extra = "[[webhooks.endpoints]]\nname = \"ce\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"0123456789abcdef-other\"\n\
                 allow_private = true\nformat = \"cloudevents\"\nevents = [\"pull\"]\n";
    let text = config(extra).replace("events = [\"push\",", "events = [\"pull\", \"push\",");
    let policies = crate::policy::Policies::from_policy_file(&text).unwrap();
    let registry = Registry::new(MemoryBlobStore::new(), Store::default(), Config::new(b"s".to_vec()))
        .with_policies(policies)
        .with_webhooks(hooks(&text).buffer_pulls(1000));
    let h = Harness { registry, random: AtomicU8::new(1) };
    let (bytes, _) = h.image("team/app", 1).await;
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/v1", &bytes).await, StatusCode::CREATED);
    for _ in 0..250 {
        assert_eq!(h.send("GET", "/v2/team/app/manifests/v1", b"").await, StatusCode::OK);
    }
    let hooks = h.registry.webhooks().unwrap();
    let meta = h.registry.meta_store();
    assert_eq!(hooks.flush_pulls(meta).await.unwrap(), 500, "250 pulls for each of two endpoints");
    let rx = Receiver::default();
    let r = hooks.deliver(meta, &rx, NOW + 10, 100, 4).await.unwrap();
    // ci: the push and the tag (two entries) and 3 batches of pulls; ce: 3 batches.
    assert_eq!((r.delivered, r.retrying, r.failed), (2 + 3 + 3, 0, 0));
    assert!(h.outbox().await.is_empty());
    let got = rx.got.lock().unwrap();
    let mut sizes = (Vec::new(), Vec::new());
    let mut ids = std::collections::HashSet::new();
    for (headers, body) in got.iter() {
        let content_type = &headers.iter().find(|(k, _)| k == "content-type").unwrap().1;
        let sig = &headers.iter().find(|(k, _)| k == payload::SIGNATURE_HEADER).unwrap().1;
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        if content_type == payload::DISTRIBUTION_MEDIA_TYPE {
            assert!(payload::verify(SECRET.as_bytes(), sig, body, NOW + 10, 300), "signed with ci's secret");
            let events = v["events"].as_array().unwrap();
            if events[0]["action"] == "pull" {
                sizes.0.push(events.len());
                ids.extend(events.iter().map(|e| format!("ci {}", e["id"])));
            }
        } else {
            assert_eq!(content_type, payload::CLOUDEVENTS_BATCH_MEDIA_TYPE);
            assert!(payload::verify(b"0123456789abcdef-other", sig, body, NOW + 10, 300), "signed with ce's secret");
            let events = v.as_array().unwrap();
            assert!(events.iter().all(|e| e["type"] == "io.berth.registry.pull" && e["specversion"] == "1.0"));
            sizes.1.push(events.len());
            ids.extend(events.iter().map(|e| format!("ce {}", e["id"])));
        }
    }
    sizes.0.sort();
    sizes.1.sort();
    assert_eq!(sizes, (vec![50, 100, 100], vec![50, 100, 100]));
    assert_eq!(ids.len(), 500, "every pull once per endpoint, each with its own id");
}

#[tokio::test]
async fn a_push_over_quota_is_a_quota_exceeded_event() {
    let text = config("\n[[policies.quotas]]\nname = \"team\"\nrepositories = [\"team/**\"]\nlimit = 1000\n");
    let h = harness(&text);
    let blob = |b: u8, n: usize| vec![b; n];
    let digest = crate::hash::sha256_of(&blob(1, 1500));
    let status = h.send("POST", &format!("/v2/team/app/blobs/uploads/?digest={digest}"), &blob(1, 1500)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let events = h.outbox().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.kind, HookKind::QuotaExceeded);
    assert_eq!(events[0].event.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(events[0].event.detail.as_ref().unwrap()["quota"]["quota"], "team");
}

/// Answers with the statuses given, in turn (then 200), and records what it was sent.
#[derive(Default)]
struct Receiver {
    statuses: Mutex<Vec<Result<u16, String>>>,
    got: Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>,
}

#[async_trait::async_trait]
impl HttpPost for Receiver {
    async fn post(&self, url: &str, allow_private: bool, headers: Vec<(String, String)>, body: Vec<u8>) -> Result<u16, String> {
        assert_eq!((url, allow_private), ("http://127.0.0.1:9/hook", true));
        tokio::task::yield_now().await;
        self.got.lock().unwrap().push((headers, body));
        let mut s = self.statuses.lock().unwrap();
        if s.is_empty() { Ok(200) } else { s.remove(0) }
    }
}

impl Receiver {
    fn failing(statuses: Vec<Result<u16, String>>) -> Self {
        Receiver { statuses: Mutex::new(statuses), ..Receiver::default() }
    }
    fn ids(&self) -> Vec<String> {
        let got = self.got.lock().unwrap();
        got.iter().map(|(h, _)| h.iter().find(|(k, _)| k == payload::EVENT_ID_HEADER).unwrap().1.clone()).collect()
    }
}

async fn one_push(h: &Harness) {
    let (bytes, _) = h.image("team/app", 1).await;
    assert_eq!(h.send("PUT", &format!("/v2/team/app/manifests/sha256:{}", &crate::hash::sha256_of(&bytes)[7..]), &bytes).await, StatusCode::CREATED);
    assert_eq!(h.outbox().await.len(), 1, "a push by digest: one push event");
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_backoff_then_kept_as_failed_and_redelivered() {
    let h = harness(&config(""));
    one_push(&h).await;
    let hooks = h.registry.webhooks().unwrap();
    let meta = h.registry.meta_store();
    let rx = Receiver::failing(vec![Ok(500), Err("connection refused".into()), Ok(503), Ok(502)]);

    let r = hooks.deliver(meta, &rx, NOW, 10, 4).await.unwrap();
    assert_eq!((r.delivered, r.retrying, r.failed), (0, 1, 0));
    let d = &h.outbox().await[0];
    assert_eq!((d.attempts, d.next_at), (1, NOW + 10));
    assert_eq!(d.last_error.as_deref(), Some("the receiver answered 500"));
    // Not due yet: nothing is sent.
    assert_eq!(hooks.deliver(meta, &rx, NOW + 9, 10, 4).await.unwrap(), DeliverReport::default());
    assert_eq!(hooks.deliver(meta, &rx, NOW + 10, 10, 4).await.unwrap().retrying, 1);
    let d = &h.outbox().await[0];
    assert_eq!((d.attempts, d.next_at), (2, NOW + 10 + 20), "the wait doubles");
    // The third attempt is the last (max_attempts = 3): kept as failed.
    assert_eq!(hooks.deliver(meta, &rx, NOW + 30, 10, 4).await.unwrap().failed, 1);
    assert!(h.outbox().await.is_empty());
    let failed = failed(meta, None, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 3);

    // Redelivered: due now, attempts from zero; one more failure then success.
    assert!(redeliver(meta, &failed[0].id(), NOW + 100).await.unwrap());
    assert!(!redeliver(meta, "no-such-id.ci", NOW + 100).await.unwrap());
    assert!(super::failed(meta, None, 10).await.unwrap().is_empty());
    assert_eq!(hooks.deliver(meta, &rx, NOW + 100, 10, 4).await.unwrap().retrying, 1);
    assert_eq!(hooks.deliver(meta, &rx, NOW + 110, 10, 4).await.unwrap().delivered, 1);
    assert!(h.outbox().await.is_empty());
    let ids = rx.ids();
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().all(|id| *id == ids[0]), "every attempt carries the event's one id: {ids:?}");
}

#[tokio::test]
async fn redeliver_all_moves_every_failed_delivery_back() {
    let h = harness(&config("").replace("max_attempts = 3", "max_attempts = 1"));
    let (bytes, _) = h.image("team/app", 1).await;
    assert_eq!(h.send("PUT", "/v2/team/app/manifests/a", &bytes).await, StatusCode::CREATED);
    let rx = Receiver::failing(vec![Ok(500), Ok(500)]);
    let (hooks, meta) = (h.registry.webhooks().unwrap(), h.registry.meta_store());
    assert_eq!(hooks.deliver(meta, &rx, NOW, 10, 4).await.unwrap().failed, 2);
    assert_eq!(redeliver_all(meta, NOW + 5).await.unwrap(), 2);
    assert_eq!(hooks.deliver(meta, &rx, NOW + 5, 10, 4).await.unwrap().delivered, 2);
    assert!(meta.list(FAILED, None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_entry_is_claimed_by_one_worker_at_a_time() {
    let h = harness(&config(""));
    for n in 0..5 {
        let (bytes, _) = h.image("team/app", n).await;
        assert_eq!(h.send("PUT", &format!("/v2/team/app/manifests/t{n}"), &bytes).await, StatusCode::CREATED);
    }
    let (hooks, meta) = (h.registry.webhooks().unwrap(), h.registry.meta_store());
    let rx = Receiver::default();
    // Three workers at once over the same store (the store yields at every call, so they
    // interleave): every entry is sent exactly once.
    let (a, b, c) = tokio::join!(
        hooks.deliver(meta, &rx, NOW, 100, 3),
        hooks.deliver(meta, &rx, NOW, 100, 3),
        hooks.deliver(meta, &rx, NOW, 100, 3)
    );
    let delivered = a.unwrap().delivered + b.unwrap().delivered + c.unwrap().delivered;
    assert_eq!(delivered, 10);
    let mut ids = rx.ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "no entry went twice");
    assert!(h.outbox().await.is_empty());
}

#[tokio::test]
async fn a_lapsed_lease_lets_another_worker_send_the_entry_again() {
    let h = harness(&config(""));
    one_push(&h).await;
    let meta = h.registry.meta_store();
    let key = meta.list(DUE, None, 1).await.unwrap().remove(0);
    // A worker claims the entry and dies without an answer.
    let v = meta.get(&key).await.unwrap().unwrap();
    let mut d: Delivery = serde_json::from_slice(&v.value).unwrap();
    d.lease_until = NOW + outbox::LEASE_SECS;
    meta.put(&key, Bytes::from(serde_json::to_vec(&d).unwrap()), Precondition::Version(v.version)).await.unwrap();
    let rx = Receiver::default();
    let hooks = h.registry.webhooks().unwrap();
    assert_eq!(hooks.deliver(meta, &rx, NOW + 1, 10, 1).await.unwrap().skipped, 1, "held by the first worker");
    assert_eq!(hooks.deliver(meta, &rx, NOW + outbox::LEASE_SECS, 10, 1).await.unwrap().delivered, 1, "lease lapsed");
}

#[tokio::test]
async fn an_unreadable_outbox_entry_does_not_hold_up_the_others() {
    let h = harness(&config(""));
    one_push(&h).await;
    let meta = h.registry.meta_store();
    meta.put(&format!("{DUE}000000000001-garbage.ci"), Bytes::from_static(b"not json"), Precondition::None).await.unwrap();
    meta.put(&format!("{DUE}not-a-time"), Bytes::from_static(b"{}"), Precondition::None).await.unwrap();
    let rx = Receiver::default();
    let r = h.registry.webhooks().unwrap().deliver(meta, &rx, NOW, 10, 2).await.unwrap();
    assert_eq!((r.delivered, r.skipped), (1, 1));
}

#[tokio::test]
async fn claims_left_by_a_dead_process_can_be_released_at_start() {
    let h = harness(&config(""));
    one_push(&h).await;
    let meta = h.registry.meta_store();
    let key = meta.list(DUE, None, 1).await.unwrap().remove(0);
    let v = meta.get(&key).await.unwrap().unwrap();
    let mut d: Delivery = serde_json::from_slice(&v.value).unwrap();
    d.lease_until = NOW + outbox::LEASE_SECS;
    meta.put(&key, Bytes::from(serde_json::to_vec(&d).unwrap()), Precondition::Version(v.version)).await.unwrap();
    assert_eq!(release_claims(meta).await.unwrap(), 1);
    assert_eq!(release_claims(meta).await.unwrap(), 0);
    let rx = Receiver::default();
    assert_eq!(h.registry.webhooks().unwrap().deliver(meta, &rx, NOW + 1, 10, 1).await.unwrap().delivered, 1);
}

#[tokio::test]
async fn an_entry_for_an_endpoint_no_longer_configured_is_kept_as_failed() {
    let h = harness(&config(""));
    one_push(&h).await;
    let renamed = hooks(&config("").replace("name = \"ci\"", "name = \"cd\""));
    let rx = Receiver::default();
    assert_eq!(renamed.deliver(h.registry.meta_store(), &rx, NOW, 10, 1).await.unwrap().failed, 1);
    assert!(rx.ids().is_empty());
}

#[tokio::test]
async fn deliveries_are_signed_and_the_body_is_the_format_asked_for() {
    let h = harness(&config(""));
    one_push(&h).await;
    let rx = Receiver::default();
    h.registry.webhooks().unwrap().deliver(h.registry.meta_store(), &rx, NOW + 3, 10, 1).await.unwrap();
    let (headers, body) = rx.got.lock().unwrap().remove(0);
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(header("content-type"), payload::DISTRIBUTION_MEDIA_TYPE);
    let signature = header(payload::SIGNATURE_HEADER);
    assert!(signature.starts_with(&format!("t={},v1=", NOW + 3)), "{signature}");
    assert!(payload::verify(SECRET.as_bytes(), &signature, &body, NOW + 5, 300));
    assert!(!payload::verify(b"another secret!!", &signature, &body, NOW + 5, 300));
    let mut tampered = body.clone();
    tampered.push(b' ');
    assert!(!payload::verify(SECRET.as_bytes(), &signature, &tampered, NOW + 5, 300));
    assert!(!payload::verify(SECRET.as_bytes(), &signature, &body, NOW + 1000, 300), "too old: a replay");

    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let e = &v["events"][0];
    assert_eq!(e["id"], header(payload::EVENT_ID_HEADER));
    assert_eq!(e["action"], "push");
    assert_eq!(e["timestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(e["target"]["mediaType"], OCI_MANIFEST);
    assert_eq!(e["target"]["repository"], "team/app");
    assert_eq!(e["target"]["size"], e["target"]["length"]);
    let digest = e["target"]["digest"].as_str().unwrap();
    assert_eq!(e["target"]["url"], format!("https://registry.example/v2/team/app/manifests/{digest}"));
    assert_eq!(e["request"]["method"], "PUT");
    assert_eq!(e["request"]["useragent"], "test-client");
    assert_eq!(e["actor"]["name"], "-");
    assert_eq!(e["source"]["addr"], "https://registry.example");

    let d = h.image("team/app", 1).await.1;
    let event = HookEvent { tag: Some("v1".into()), digest: Some(d.clone()), ..gc_finished(NOW, &Default::default()) };
    let event = HookEvent { kind: HookKind::Tag, repository: Some("team/app".into()), id: "x".into(), detail: None, ..event };
    let ce: serde_json::Value = serde_json::from_slice(&event.body(Format::Cloudevents, "https://r.example")).unwrap();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["type"], "io.berth.registry.tag");
    assert_eq!(ce["source"], "https://r.example");
    assert_eq!(ce["subject"], "team/app:v1");
    assert_eq!(ce["id"], "x");
    assert_eq!(ce["data"]["target"]["digest"], d);
    assert_eq!(payload::content_type(Format::Cloudevents), "application/cloudevents+json");
}

#[tokio::test]
async fn gc_finished_goes_to_endpoints_that_ask_whatever_their_repositories() {
    let h = harness(&config("").replace("\"quota_exceeded\"]", "\"quota_exceeded\", \"gc_finished\"]"));
    let hooks = h.registry.webhooks().unwrap();
    let report = crate::GcReport { tags_deleted: 3, ..Default::default() };
    hooks.enqueue(h.registry.meta_store(), gc_finished(NOW, &report), [7; 16], 0).await.unwrap();
    let out = h.outbox().await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].event.detail.as_ref().unwrap()["tags_deleted"], 3);
    assert!(out[0].event.id.starts_with(&NOW.to_string()));
}

#[test]
fn webhook_urls_to_internal_addresses_are_refused() {
    for url in [
        "http://127.0.0.1/hook",
        "http://127.8.9.10:8080/",
        "http://localhost/x",
        "http://api.localhost./x",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0x0a.0.0.1/",
        "HTTP://LOCALHOST/",
    ] {
        let err = check_url(url, false).expect_err(url);
        assert!(err.contains("internal services"), "{url}: {err}");
        assert!(check_url(url, true).is_ok(), "{url} with allow_private");
    }
    for url in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://x/",
        "http://user:pw@example.com/",
        "http://example.com@127.0.0.1/",
        "http:/example.com",
        "http://",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://[::1/",
        "http://999.1.1.1/",
        "http://exa mple.com/",
    ] {
        assert!(check_url(url, false).is_err(), "{url}");
        assert!(check_url(url, true).is_err(), "{url} is malformed whatever the setting");
    }
    for url in ["https://hooks.example.com/x?y=1", "http://8.8.8.8:8080/", "https://[2606:4700::1111]/", "http://1e100.net/"] {
        assert!(check_url(url, false).is_ok(), "{url}");
    }
    assert_eq!(host_of("http://0x7f.1/").unwrap(), Host::Ip("127.0.0.1".parse().unwrap()));
    assert!(target::is_forbidden_ip("::ffff:10.0.0.1".parse().unwrap()));
    assert!(!target::is_forbidden_ip("93.184.216.34".parse().unwrap()));
}

#[test]
fn the_config_is_checked_at_load() {
    let bad = |from: &str, to: &str, says: &str| {
        let text = config("").replacen(from, to, 1);
        let err = Webhooks::from_settings(None, Some(&text), "").expect_err(to);
        assert!(err.contains(says), "{to}: {err}");
    };
    bad("url = \"http://127.0.0.1:9/hook\"\nsecret", "url = \"ftp://example.com/\"\nsecret", "only http");
    bad("allow_private = true", "allow_private = false", "127.0.0.1 is a loopback");
    bad(SECRET, "short", "at least 16");
    bad("name = \"ci\"", "name = \"CI!\"", "name must be");
    bad("events = [\"push\", \"tag\", \"delete\", \"tag_moved\", \"quota_exceeded\"]", "events = []", "events is empty");
    bad("events = [\"push\",", "events = [\"pushed\",", "unknown variant");
    bad("repositories = [\"team/**\"]", "repositories = [\"Team/*\"]", "repository");
    bad("max_attempts = 3", "max_attempts = 0", "max_attempts");
    let twice = format!("{}\n{}", config(""), config("").replace("[webhooks]\nretry_base_secs = 10\nmax_attempts = 3\n", ""));
    assert!(Webhooks::from_settings(None, Some(&twice), "").unwrap_err().contains("another endpoint has this name"));
    // In the auth config, or the policy file; not both.
    let auth = crate::auth::AuthConfig::from_toml(&config("")).unwrap();
    assert_eq!(Webhooks::from_settings(Some(&auth), None, "").unwrap().config().endpoints.len(), 1);
    assert!(Webhooks::from_settings(Some(&auth), Some(&config("")), "").unwrap_err().contains("twice"));
    assert!(Webhooks::from_settings(None, None, "").unwrap().is_empty());
    assert_eq!(WebhookConfig { retry_base_secs: 10, retry_max_secs: 60, ..Default::default() }.backoff(10), 60);
}
