//! The events a recording sink sees for whole requests through `Registry::handle`, and the times
//! records get, on the in-memory stores.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::StatusCode;

use super::*;
use crate::auth::{key_pair_from_seed, Auth, AuthConfig, ClientAddr};
use crate::manifests::OCI_MANIFEST;
use crate::names::{parse_digest, RepoName};
use crate::records::{blob_key, manifest_key, tag_key, BlobLink, ManifestRecord, TagRecord};
use crate::memory::{MemoryBlobStore, MemoryMetaStore};
use crate::storage::{ByteStream, MetaStore};
use crate::{Config, Registry, RequestContext};

fn stream_of(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(bytes)]))
}

// --- A sink that keeps what it hears, and helpers ---

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl EventSink for Recorder {
    fn emit(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The one event since the last call.
    fn one(&self) -> Event {
        let mut events = self.take();
        assert_eq!(events.len(), 1, "{events:#?}");
        events.pop().unwrap()
    }
}

struct Harness {
    registry: Registry<MemoryBlobStore, MemoryMetaStore>,
    events: Arc<Recorder>,
    now: AtomicU64,
    random: AtomicU8,
}

const T0: u64 = 1_700_000_000;

fn harness() -> Harness {
    let events = Arc::new(Recorder::default());
    let registry = Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(b"secret".to_vec()))
        .with_event_sink(events.clone());
    Harness { registry, events, now: AtomicU64::new(T0), random: AtomicU8::new(0) }
}

impl Harness {
    async fn send(&self, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> crate::Response {
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(stream_of(Bytes::copy_from_slice(body))).unwrap();
        req.extensions_mut().insert(ClientAddr("192.0.2.7".into()));
        let random = [self.random.fetch_add(1, Ordering::Relaxed); 16];
        let ctx = RequestContext { now: self.now.load(Ordering::Relaxed), random };
        self.registry.handle(req, ctx).await
    }

    /// Pushes a blob in one POST; returns its digest.
    async fn push_blob(&self, repo: &str, content: &[u8]) -> String {
        let digest = crate::hash::sha256_of(content);
        let response = self.send("POST", &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), &[], content).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        digest
    }

    /// Pushes an image manifest naming `config` under `reference`; returns its bytes.
    async fn push_manifest(&self, repo: &str, reference: &str, config: &str, size: usize) -> Vec<u8> {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": size },
            "layers": [],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let uri = format!("/v2/{repo}/manifests/{reference}");
        let response = self.send("PUT", &uri, &[("content-type", OCI_MANIFEST)], &bytes).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        bytes
    }

    async fn record<T: serde::de::DeserializeOwned>(&self, key: &str) -> T {
        self.registry.get_record::<T>(key).await.unwrap().expect(key)
    }
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

// --- Events ---

#[tokio::test]
async fn a_manifest_push_by_tag_reports_digest_media_type_and_size() {
    let h = harness();
    let config = h.push_blob("team/app", b"{}").await;
    h.events.take();
    let bytes = h.push_manifest("team/app", "v1", &config, 2).await;
    let digest = crate::hash::sha256_of(&bytes);
    let event = h.events.one();
    assert_eq!(event.action, EventAction::Push);
    assert_eq!(event.endpoint, "manifest_put");
    assert_eq!(event.repository.as_deref(), Some("team/app"));
    assert_eq!(event.target.kind, TargetKind::Manifest);
    assert_eq!(event.target.reference.as_deref(), Some("v1"));
    assert_eq!(event.target.tag(), Some("v1"));
    assert_eq!(event.target.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(event.target.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(event.target.size, Some(bytes.len() as u64));
    assert_eq!((event.subject.as_str(), event.client.as_str()), ("-", "192.0.2.7"));
    assert_eq!((event.at, event.status, event.outcome), (T0, 201, Outcome::Ok));

    // A successful pull is an event too (the audit log skips it; metrics and webhooks want it).
    let response = h.send("GET", "/v2/team/app/manifests/v1", &[], b"").await;
    assert_eq!(response.status(), StatusCode::OK);
    let pull = h.events.one();
    assert_eq!((pull.action, pull.target.tag()), (EventAction::Pull, Some("v1")));
    assert_eq!(pull.target.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(pull.target.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(pull.target.size, Some(bytes.len() as u64));

    // Push by digest with ?tag=: the applied tags are in the event.
    let response = h
        .send("PUT", &format!("/v2/team/app/manifests/{digest}?tag=a&tag=b"), &[("content-type", OCI_MANIFEST)], &bytes)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let by_digest = h.events.one();
    assert_eq!(by_digest.target.reference.as_deref(), Some(digest.as_str()));
    assert_eq!(by_digest.target.tags, ["a", "b"]);

    // The serialized form is what webhooks and replication get.
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["action"], "push");
    assert_eq!(json["target"]["media_type"], OCI_MANIFEST);
    assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
}

#[tokio::test]
async fn a_chunked_blob_upload_completes_as_a_push_with_digest_and_size() {
    let h = harness();
    let response = h.send("POST", "/v2/a/blobs/uploads/", &[], b"").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    let start = h.events.one();
    assert_eq!((start.action, start.target.kind), (EventAction::UploadStart, TargetKind::Upload));

    let response = h.send("PATCH", &location, &[], b"hello ").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let chunk = h.events.one();
    assert_eq!((chunk.action, chunk.target.upload.as_deref()), (EventAction::UploadChunk, Some(id.as_str())));

    let digest = crate::hash::sha256_of(b"hello world");
    let response = h.send("PUT", &format!("{location}?digest={digest}"), &[], b"world").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let push = h.events.one();
    assert_eq!((push.action, push.target.kind), (EventAction::Push, TargetKind::Blob));
    assert_eq!(push.target.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(push.target.size, Some(11));
    assert_eq!(push.target.upload.as_deref(), Some(id.as_str()));
    assert_eq!(push.target.media_type, None);
    assert_eq!(push.outcome, Outcome::Ok);
}

#[tokio::test]
async fn a_mount_names_its_source_and_the_blob() {
    let h = harness();
    let digest = h.push_blob("src/repo", b"layer").await;
    let push = h.events.one();
    assert_eq!((push.action, push.target.size), (EventAction::Push, Some(5)));

    let uri = format!("/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo");
    assert_eq!(h.send("POST", &uri, &[], b"").await.status(), StatusCode::CREATED);
    let mount = h.events.one();
    assert_eq!(mount.action, EventAction::Mount);
    assert_eq!((mount.repository.as_deref(), mount.from.as_deref()), (Some("dst/repo"), Some("src/repo")));
    assert_eq!(mount.target.digest.as_deref(), Some(digest.as_str()));
    assert_eq!((mount.target.size, mount.outcome), (Some(5), Outcome::Ok));

    // Nothing to mount: the spec's fallback, a plain upload session.
    let uri = format!("/v2/dst/repo/blobs/uploads/?mount={}&from=nowhere", crate::hash::sha256_of(b"x"));
    assert_eq!(h.send("POST", &uri, &[], b"").await.status(), StatusCode::ACCEPTED);
    let fallback = h.events.one();
    assert_eq!((fallback.action, fallback.outcome, fallback.target.size), (EventAction::Mount, Outcome::NotMounted, None));
}

#[tokio::test]
async fn deletes_report_what_was_deleted() {
    let h = harness();
    let config = h.push_blob("a", b"{}").await;
    let bytes = h.push_manifest("a", "v1", &config, 2).await;
    let digest = crate::hash::sha256_of(&bytes);
    h.events.take();

    assert_eq!(h.send("DELETE", "/v2/a/manifests/v1", &[], b"").await.status(), StatusCode::ACCEPTED);
    let untag = h.events.one();
    assert_eq!((untag.action, untag.target.tag()), (EventAction::Delete, Some("v1")));
    assert_eq!(untag.target.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(untag.target.media_type.as_deref(), Some(OCI_MANIFEST));

    let uri = format!("/v2/a/manifests/{digest}");
    assert_eq!(h.send("DELETE", &uri, &[], b"").await.status(), StatusCode::ACCEPTED);
    let delete = h.events.one();
    assert_eq!((delete.action, delete.target.kind), (EventAction::Delete, TargetKind::Manifest));
    assert_eq!(delete.target.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(delete.target.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(delete.target.size, Some(bytes.len() as u64));

    assert_eq!(h.send("DELETE", &format!("/v2/a/blobs/{config}"), &[], b"").await.status(), StatusCode::ACCEPTED);
    let blob = h.events.one();
    assert_eq!((blob.action, blob.target.kind, blob.target.size), (EventAction::Delete, TargetKind::Blob, Some(2)));
    assert_eq!(blob.target.digest.as_deref(), Some(config.as_str()));

    // Deleting it again: an event with the request's reference and nothing found.
    assert_eq!(h.send("DELETE", &uri, &[], b"").await.status(), StatusCode::NOT_FOUND);
    let again = h.events.one();
    assert_eq!((again.outcome, again.status, again.target.media_type), (Outcome::Refused, 404, None));
    assert_eq!(again.target.reference.as_deref(), Some(digest.as_str()));
}

#[tokio::test]
async fn a_refused_request_is_a_refused_event_and_changes_nothing() {
    let (private, _) = key_pair_from_seed(&[5; 32]).unwrap();
    let config = AuthConfig::from_toml(&format!(
        "[token]\n[[token.keys]]\nkid = \"k\"\nprivate_key = \"{private}\"\n"
    ))
    .unwrap();
    let events = Arc::new(Recorder::default());
    let registry = Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(b"s".to_vec()))
        .with_auth(Auth::new(&config).unwrap())
        .with_event_sink(events.clone());
    let req = http::Request::builder()
        .method("PUT")
        .uri("/v2/a/manifests/v1")
        .body(stream_of(Bytes::from_static(b"{}")))
        .unwrap();
    let response = registry.handle(req, RequestContext { now: T0, random: [0; 16] }).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let refused = events.one();
    assert_eq!((refused.action, refused.outcome, refused.status), (EventAction::Push, Outcome::Refused, 401));
    assert_eq!((refused.subject.as_str(), refused.target.tag()), ("anonymous", Some("v1")));
    assert_eq!((refused.target.digest.as_ref(), refused.target.media_type.as_ref()), (None, None));
    assert!(registry.meta_store().list("", None, 10).await.unwrap().is_empty());

    // `/v2/` is the login flow, not an event.
    let req = http::Request::builder().uri("/v2/").body(crate::body::empty_stream()).unwrap();
    assert_eq!(registry.handle(req, RequestContext { now: T0, random: [0; 16] }).await.status(), StatusCode::UNAUTHORIZED);
    assert!(events.take().is_empty());
}

#[tokio::test]
async fn a_client_fault_is_a_refused_event_without_a_target_found() {
    let h = harness();
    let response = h.send("PUT", "/v2/a/manifests/v1", &[("content-type", OCI_MANIFEST)], b"not json").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let event = h.events.one();
    assert_eq!((event.action, event.outcome, event.status), (EventAction::Push, Outcome::Refused, 400));
    assert_eq!((event.target.digest, event.target.size), (None, None));
}

// --- Times on records ---

#[tokio::test]
async fn records_carry_when_they_were_linked_pushed_and_tagged() {
    let h = harness();
    let config = h.push_blob("a", b"{}").await;
    let bytes = h.push_manifest("a", "v1", &config, 2).await;
    let first = parse_digest(&crate::hash::sha256_of(&bytes)).unwrap();
    let link: BlobLink = h.record(&blob_key(&repo("a"), &parse_digest(&config).unwrap())).await;
    assert_eq!(link.linked_at, T0);
    let manifest: ManifestRecord = h.record(&manifest_key(&repo("a"), &first)).await;
    assert_eq!(manifest.pushed_at, T0);
    let tag: TagRecord = h.record(&tag_key(&repo("a"), "v1")).await;
    assert_eq!((tag.digest.as_str(), tag.tagged_at), (first.to_string().as_str(), T0));

    // A day later the tag moves to another manifest, and the blob is mounted elsewhere.
    let t1 = T0 + 86_400;
    h.now.store(t1, Ordering::Relaxed);
    let other = h.push_blob("a", b"{\"x\":1}").await;
    let bytes = h.push_manifest("a", "v1", &other, 7).await;
    let second = parse_digest(&crate::hash::sha256_of(&bytes)).unwrap();
    let tag: TagRecord = h.record(&tag_key(&repo("a"), "v1")).await;
    assert_eq!((tag.digest, tag.tagged_at), (second.to_string(), t1));
    let manifest: ManifestRecord = h.record(&manifest_key(&repo("a"), &second)).await;
    assert_eq!(manifest.pushed_at, t1);
    let untouched: ManifestRecord = h.record(&manifest_key(&repo("a"), &first)).await;
    assert_eq!(untouched.pushed_at, T0);
    let uri = format!("/v2/b/blobs/uploads/?mount={config}&from=a");
    assert_eq!(h.send("POST", &uri, &[], b"").await.status(), StatusCode::CREATED);
    let mounted: BlobLink = h.record(&blob_key(&repo("b"), &parse_digest(&config).unwrap())).await;
    assert_eq!(mounted.linked_at, t1);

    // A delete's tombstone keeps the time of the last push.
    assert_eq!(h.send("DELETE", &format!("/v2/a/manifests/{first}"), &[], b"").await.status(), StatusCode::ACCEPTED);
    let tombstone: ManifestRecord = h.record(&manifest_key(&repo("a"), &first)).await;
    assert!(tombstone.deleted);
    assert_eq!(tombstone.pushed_at, T0);
}

#[test]
fn records_written_before_the_times_still_read() {
    let link: BlobLink = serde_json::from_str(r#"{"size":3}"#).unwrap();
    assert_eq!((link.size, link.linked_at), (3, 0));
    let tag: TagRecord = serde_json::from_str(r#"{"digest":"sha256:00"}"#).unwrap();
    assert_eq!(tag.tagged_at, 0);
    let manifest: ManifestRecord = serde_json::from_str(r#"{"media_type":"x","size":1,"generation":2}"#).unwrap();
    assert_eq!((manifest.generation, manifest.pushed_at), (2, 0));
}
