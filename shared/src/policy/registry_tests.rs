//! Tag policies through `Registry::handle` on the in-memory stores: pushes over an immutable
//! tag, refused tags, deletes, and concurrent pushes racing for one immutable tag.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use crate::manifests::OCI_MANIFEST;
use crate::memory::{MemoryBlobStore, MemoryMetaStore};
use crate::storage::{BatchOp, ByteStream, MetaStore, Precondition, PutOutcome, StorageResult, Versioned};
use crate::{Config, Registry, RequestContext};

use super::Policies;

const POLICIES: &str = r#"
[[policies.immutable_tags]]
repositories = ["prod/**"]
tags = ["v*"]
[[policies.refused_tags]]
repositories = ["prod/**"]
tags = ["latest"]
message = "push a version tag"
"#;

/// A metadata store that yields to the scheduler before every operation, so requests joined
/// on one task interleave at every storage call, as concurrent requests on a real store do.
struct Yielding(MemoryMetaStore);

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl MetaStore for Yielding {
    async fn get(&self, key: &str) -> StorageResult<Option<Versioned>> {
        tokio::task::yield_now().await;
        self.0.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> StorageResult<PutOutcome> {
        tokio::task::yield_now().await;
        self.0.put(key, value, cond).await
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        tokio::task::yield_now().await;
        self.0.delete(key).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        tokio::task::yield_now().await;
        self.0.list(prefix, after, limit).await
    }
    async fn apply(&self, ops: Vec<BatchOp>) -> StorageResult<Vec<bool>> {
        tokio::task::yield_now().await;
        self.0.apply(ops).await
    }
}

struct Harness {
    registry: Registry<MemoryBlobStore, Yielding>,
    random: AtomicU8,
}

fn harness(policies: &str) -> Harness {
    let registry = Registry::new(MemoryBlobStore::new(), Yielding(MemoryMetaStore::new()), Config::new(b"s".to_vec()))
        .with_policies(Arc::new(Policies::from_policy_file(policies).unwrap()));
    Harness { registry, random: AtomicU8::new(0) }
}

fn stream_of(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(bytes)]))
}

impl Harness {
    async fn send(&self, method: &str, uri: &str, body: &[u8]) -> (StatusCode, String) {
        self.send_at(method, uri, body, 1_700_000_000).await
    }

    async fn send_at(&self, method: &str, uri: &str, body: &[u8], now: u64) -> (StatusCode, String) {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", OCI_MANIFEST)
            .body(stream_of(Bytes::copy_from_slice(body)))
            .unwrap();
        let random = [self.random.fetch_add(1, Ordering::Relaxed); 16];
        let response = self.registry.handle(req, RequestContext { now, random }).await;
        let status = response.status();
        let body = match response.into_body() {
            crate::Body::Full(b) => String::from_utf8_lossy(&b).into_owned(),
            _ => String::new(),
        };
        (status, body)
    }

    /// A distinct image manifest (its config blob is pushed first); returns (bytes, digest).
    async fn image(&self, repo: &str, n: u32) -> (Vec<u8>, String) {
        let config = format!("{{\"n\":{n}}}");
        let digest = crate::hash::sha256_of(config.as_bytes());
        let (status, _) = self.send("POST", &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), config.as_bytes()).await;
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

    async fn put(&self, repo: &str, reference: &str, bytes: &[u8]) -> (StatusCode, String) {
        self.send("PUT", &format!("/v2/{repo}/manifests/{reference}"), bytes).await
    }

    async fn tag_digest(&self, repo: &str, tag: &str) -> Option<String> {
        let key = crate::records::tag_key(&crate::names::RepoName::parse(repo).unwrap(), tag);
        self.registry.get_record::<crate::records::TagRecord>(&key).await.unwrap().map(|t| t.digest)
    }
}

#[tokio::test]
async fn an_immutable_tag_never_moves_and_a_retry_of_the_same_digest_succeeds() {
    let h = harness(POLICIES);
    let (one, d1) = h.image("prod/app", 1).await;
    let (two, d2) = h.image("prod/app", 2).await;
    assert_eq!(h.put("prod/app", "v1", &one).await.0, StatusCode::CREATED);
    assert_eq!(h.put("prod/app", "v1", &one).await.0, StatusCode::CREATED, "CI retry of the same digest");
    let (status, body) = h.put("prod/app", "v1", &two).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("\"DENIED\"") && body.contains("immutable") && body.contains(&d1), "{body}");
    // Refused before anything was written: the second manifest is not in the repository.
    assert_eq!(h.send("GET", &format!("/v2/prod/app/manifests/{d2}"), b"").await.0, StatusCode::NOT_FOUND);
    // By digest with ?tag= too.
    let (status, _) = h.put("prod/app", &format!("{d2}?tag=v1"), &two).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(h.tag_digest("prod/app", "v1").await.as_deref(), Some(d1.as_str()));
    // Mutable tags in the same repository move freely; other repositories are not covered.
    assert_eq!(h.put("prod/app", "main", &one).await.0, StatusCode::CREATED);
    assert_eq!(h.put("prod/app", "main", &two).await.0, StatusCode::CREATED);
    let (one_dev, _) = h.image("dev/app", 1).await;
    let (two_dev, _) = h.image("dev/app", 2).await;
    assert_eq!(h.put("dev/app", "v1", &one_dev).await.0, StatusCode::CREATED);
    assert_eq!(h.put("dev/app", "v1", &two_dev).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn an_immutable_tag_and_its_manifest_cannot_be_deleted() {
    let h = harness(POLICIES);
    let (one, d1) = h.image("prod/app", 1).await;
    assert_eq!(h.put("prod/app", "v1", &one).await.0, StatusCode::CREATED);
    let (status, body) = h.send("DELETE", "/v2/prod/app/manifests/v1", b"").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = h.send("DELETE", &format!("/v2/prod/app/manifests/{d1}"), b"").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("immutable tag v1 points at it"), "{body}");
    assert_eq!(h.send("GET", "/v2/prod/app/manifests/v1", b"").await.0, StatusCode::OK);
    // A manifest only mutable tags point at is deleted as before.
    let (two, d2) = h.image("prod/app", 2).await;
    assert_eq!(h.put("prod/app", "main", &two).await.0, StatusCode::CREATED);
    assert_eq!(h.send("DELETE", &format!("/v2/prod/app/manifests/{d2}"), b"").await.0, StatusCode::ACCEPTED);
    // An unknown immutable-looking tag is still 404, not 403.
    assert_eq!(h.send("DELETE", "/v2/prod/app/manifests/v9", b"").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_refused_tag_is_never_created() {
    let h = harness(POLICIES);
    let (one, d1) = h.image("prod/app", 1).await;
    let (status, body) = h.put("prod/app", "latest", &one).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("tag latest is not allowed in prod/app") && body.contains("push a version tag"), "{body}");
    assert_eq!(h.send("GET", &format!("/v2/prod/app/manifests/{d1}"), b"").await.0, StatusCode::NOT_FOUND);
    // One refused tag among several: none is applied.
    let (status, _) = h.put("prod/app", &format!("{d1}?tag=v1&tag=latest"), &one).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(h.tag_digest("prod/app", "v1").await, None);
    let (one_dev, _) = h.image("dev/app", 1).await;
    assert_eq!(h.put("dev/app", "latest", &one_dev).await.0, StatusCode::CREATED);
}

/// Several pushes of different manifests to one new immutable tag at once: exactly one wins,
/// the others get 403, and the tag points at the winner. Every storage call yields, so the
/// pushes' reads and conditional writes interleave. Fails without the check inside `set_tag`
/// (the pre-check alone lets every push read "no tag yet").
#[tokio::test]
async fn racing_pushes_to_a_new_immutable_tag_leave_exactly_one_winner() {
    for round in 0..20u32 {
        let h = harness(POLICIES);
        let mut images = Vec::new();
        for n in 0..4 {
            images.push(h.image("prod/app", round * 10 + n).await);
        }
        let results = futures_util::future::join_all(images.iter().map(|(bytes, _)| h.put("prod/app", "v1", bytes))).await;
        let winners: Vec<usize> = (0..4).filter(|i| results[*i].0 == StatusCode::CREATED).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results.iter().all(|(s, _)| *s == StatusCode::CREATED || *s == StatusCode::FORBIDDEN), "{results:?}");
        let tagged = h.tag_digest("prod/app", "v1").await.unwrap();
        assert_eq!(tagged, images[winners[0]].1, "round {round}");
    }
}

/// A delete by digest racing pushes of the same manifest under an immutable tag: whatever the
/// interleaving, the tag (once it exists) names a live manifest, and a refused delete is 403.
#[tokio::test]
async fn a_delete_racing_a_push_of_an_immutable_tag_never_leaves_it_dangling() {
    let mut outcomes = std::collections::BTreeSet::new();
    for round in 0..40u32 {
        let h = harness(POLICIES);
        let (bytes, digest) = h.image("prod/app", round).await;
        assert_eq!(h.put("prod/app", "main", &bytes).await.0, StatusCode::CREATED);
        let uri = format!("/v2/prod/app/manifests/{digest}");
        // The delete starts `round` scheduling steps after the push: each round interleaves
        // the two differently.
        let delete = async {
            for _ in 0..round {
                tokio::task::yield_now().await;
            }
            h.send("DELETE", &uri, b"").await
        };
        let (pushed, deleted) = tokio::join!(h.put("prod/app", "v1", &bytes), delete);
        outcomes.insert(deleted.0.as_u16());
        assert_eq!(pushed.0, StatusCode::CREATED, "round {round}: {pushed:?}");
        assert!(
            [StatusCode::ACCEPTED, StatusCode::FORBIDDEN, StatusCode::NOT_FOUND].contains(&deleted.0),
            "round {round}: {deleted:?}"
        );
        assert_eq!(h.tag_digest("prod/app", "v1").await.as_deref(), Some(digest.as_str()), "round {round}");
        let (status, body) = h.send("GET", "/v2/prod/app/manifests/v1", b"").await;
        assert_eq!(status, StatusCode::OK, "round {round}: the immutable tag dangles after {deleted:?}: {body}");
    }
    // Both sides of the race were reached: deletes that won (and were undone) and refused ones.
    assert_eq!(outcomes.into_iter().collect::<Vec<_>>(), [202, 403]);
}

// --- Quotas ---

const QUOTA: &str = r#"
[[policies.quotas]]
name = "team"
repositories = ["team/**"]
limit = 1000
"#;

impl Harness {
    async fn blob(&self, repo: &str, content: &[u8]) -> (StatusCode, String) {
        let digest = crate::hash::sha256_of(content);
        self.send("POST", &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), content).await
    }

    async fn has_blob(&self, repo: &str, content: &[u8]) -> bool {
        let digest = crate::hash::sha256_of(content);
        self.send("HEAD", &format!("/v2/{repo}/blobs/{digest}"), b"").await.0 == StatusCode::OK
    }

    async fn used(&self) -> u64 {
        self.registry.quota_usage().await.unwrap()[0].used
    }
}

#[tokio::test]
async fn a_push_over_quota_is_refused_and_leaves_nothing_visible() {
    let h = harness(QUOTA);
    assert_eq!(h.blob("team/a", &[1; 600]).await.0, StatusCode::CREATED);
    assert_eq!(h.used().await, 600);
    let (status, body) = h.blob("team/a", &[2; 500]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("\"DENIED\"") && body.contains("quota team exceeded"), "{body}");
    assert!(body.contains("600 bytes") && body.contains("1000 bytes") && body.contains("500 bytes"), "{body}");
    assert!(!h.has_blob("team/a", &[2; 500]).await, "the refused blob is not in the repository");
    assert_eq!(h.used().await, 600);
    // What fits still goes in; repositories outside the namespace are not limited.
    assert_eq!(h.blob("team/b", &[3; 400]).await.0, StatusCode::CREATED);
    assert_eq!(h.used().await, 1000);
    assert_eq!(h.blob("other/x", &[4; 5000]).await.0, StatusCode::CREATED);
    // A manifest counts too: its config blob fits, the manifest does not.
    let h = harness(QUOTA);
    assert_eq!(h.blob("team/m", &[5; 950]).await.0, StatusCode::CREATED);
    let (manifest, digest) = h.image("team/m", 1).await;
    let (status, body) = h.put("team/m", "v1", &manifest).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(h.send("GET", &format!("/v2/team/m/manifests/{digest}"), b"").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.send("GET", "/v2/team/m/manifests/v1", b"").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_blob_is_counted_once_per_namespace() {
    let h = harness(QUOTA);
    let layer = [7u8; 700];
    assert_eq!(h.blob("team/a", &layer).await.0, StatusCode::CREATED);
    // The same blob in a second repository of the namespace, pushed again and mounted.
    assert_eq!(h.blob("team/b", &layer).await.0, StatusCode::CREATED);
    let digest = crate::hash::sha256_of(&layer);
    let (status, _) = h.send("POST", &format!("/v2/team/c/blobs/uploads/?mount={digest}&from=team/a"), b"").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(h.blob("team/a", &layer).await.0, StatusCode::CREATED, "a retry");
    assert_eq!(h.used().await, 700);
    let (status, body) = h.send("GET", "/v2/_berth/quotas", b"").await;
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, serde_json::json!({"quotas": [{"name": "team", "repositories": ["team/**"], "limit": 1000, "used": 700}]}));
}

/// Ten pushes of different 300-byte blobs at once into a 1000-byte quota: exactly three fit,
/// whatever the interleaving, and the usage is the sum of what was linked. Concurrent pushes
/// of one blob into two repositories count it once.
#[tokio::test]
async fn concurrent_pushes_never_exceed_the_quota() {
    for round in 0..10u8 {
        let h = harness(QUOTA);
        let blobs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![round * 16 + i; 300]).collect();
        let h = &h;
        let results = futures_util::future::join_all(blobs.iter().enumerate().map(|(i, b)| {
            let repo = format!("team/r{}", i % 3);
            async move { h.blob(&repo, b).await.0 }
        }))
        .await;
        let created = results.iter().filter(|s| **s == StatusCode::CREATED).count();
        assert_eq!(created, 3, "round {round}: {results:?}");
        assert!(results.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::FORBIDDEN), "{results:?}");
        assert_eq!(h.used().await, 900, "round {round}");

        let h = harness(QUOTA);
        // 400 bytes: both reservations fit at once, one of them is given back.
        let same = vec![round; 400];
        let (a, b) = tokio::join!(h.blob("team/a", &same), h.blob("team/b", &same));
        assert_eq!((a.0, b.0), (StatusCode::CREATED, StatusCode::CREATED), "round {round}");
        assert_eq!(h.used().await, 400, "round {round}: counted once");
    }
}

const LATER: u64 = 1_700_000_000 + 3600;

#[tokio::test]
async fn a_recount_frees_what_no_repository_holds() {
    let h = harness(QUOTA);
    assert_eq!(h.blob("team/a", &[1; 300]).await.0, StatusCode::CREATED);
    assert_eq!(h.blob("team/b", &[1; 300]).await.0, StatusCode::CREATED);
    assert_eq!(h.blob("team/a", &[2; 400]).await.0, StatusCode::CREATED);
    assert_eq!(h.used().await, 700);
    let two = crate::hash::sha256_of(&[2; 400]);
    assert_eq!(h.send("DELETE", &format!("/v2/team/a/blobs/{two}"), b"").await.0, StatusCode::ACCEPTED);
    // Within the grace period nothing is dropped (a push may be linking it right now).
    assert_eq!(h.registry.recount_quota("team", LATER, 7200).await.unwrap().used, 700);
    assert_eq!(h.registry.recount_quota("team", LATER, 900).await.unwrap().used, 300);
    // Still held by team/b: unlinking it from team/a frees nothing.
    let one = crate::hash::sha256_of(&[1; 300]);
    assert_eq!(h.send("DELETE", &format!("/v2/team/a/blobs/{one}"), b"").await.0, StatusCode::ACCEPTED);
    assert_eq!(h.registry.recount_quota("team", LATER, 900).await.unwrap().used, 300);
    // The freed room takes new pushes; the dropped digest is charged again when it comes back.
    assert_eq!(h.blob("team/c", &[2; 400]).await.0, StatusCode::CREATED);
    assert_eq!(h.used().await, 700);
    assert!(h.registry.recount_quota("nope", LATER, 900).await.is_err());
}

#[tokio::test]
async fn a_recount_counts_content_from_before_the_quota() {
    let h = harness("");
    assert_eq!(h.blob("team/a", &[1; 300]).await.0, StatusCode::CREATED);
    let (manifest, _) = h.image("team/a", 1).await;
    assert_eq!(h.put("team/a", "v1", &manifest).await.0, StatusCode::CREATED);
    let h = Harness {
        registry: Registry { policies: Arc::new(Policies::from_policy_file(QUOTA).unwrap()), ..h.registry },
        random: AtomicU8::new(100),
    };
    assert_eq!(h.used().await, 0);
    let report = h.registry.recount_quota("team", LATER, 900).await.unwrap();
    assert_eq!(report.used, 300 + 7 + manifest.len() as u64);
    // Counted now: pushing it again into another repository charges nothing.
    assert_eq!(h.blob("team/b", &[1; 300]).await.0, StatusCode::CREATED);
    assert_eq!(h.used().await, report.used);
}

/// A recount racing a push that links a counted digest no repository holds any more (the
/// membership is old, the link is not written yet when the recount scans): in every
/// interleaving the digest stays counted, so usage never falls below what is held.
#[tokio::test]
async fn a_recount_racing_a_push_never_under_counts() {
    let mut reached = std::collections::BTreeSet::new();
    for round in 0..40u32 {
        let h = harness(QUOTA);
        let layer = [9u8; 500];
        let digest = crate::hash::sha256_of(&layer);
        assert_eq!(h.blob("team/a", &layer).await.0, StatusCode::CREATED);
        assert_eq!(h.send("DELETE", &format!("/v2/team/a/blobs/{digest}"), b"").await.0, StatusCode::ACCEPTED);
        let push = async {
            for _ in 0..round {
                tokio::task::yield_now().await;
            }
            // Later than the recount's grace, so only the touch can protect the membership.
            let random = [200; 16];
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("/v2/team/b/blobs/uploads/?digest={digest}"))
                .body(stream_of(Bytes::copy_from_slice(&layer)))
                .unwrap();
            h.registry.handle(req, RequestContext { now: LATER, random }).await.status()
        };
        let (status, recount) = tokio::join!(push, h.registry.recount_quota("team", LATER + 10, 900));
        assert_eq!(status, StatusCode::CREATED, "round {round}");
        let after = recount.map(|r| r.used);
        reached.insert(format!("{after:?}"));
        assert_eq!(h.used().await, 500, "round {round}: the linked layer is counted (recount said {after:?})");
    }
    // Both sides: recounts that dropped the digest before the push re-charged it, and
    // recounts that kept it because the push had touched it.
    assert!(reached.len() >= 2, "{reached:?}");
}

// --- Pull times (retention's "pulled within") ---

#[tokio::test]
async fn pull_times_are_written_at_most_hourly_and_survive_a_push() {
    // Pull times are recorded only where a retention rule reads them.
    let h = harness("[[policies.retention]]\nrepositories = [\"team/*\"]\nkeep_within_days = 30\n");
    let (bytes, digest) = h.image("team/app", 1).await;
    assert_eq!(h.put("team/app", "v1", &bytes).await.0, StatusCode::CREATED);
    let key = crate::records::manifest_key(&crate::names::RepoName::parse("team/app").unwrap(), &crate::names::parse_digest(&digest).unwrap());
    let record = || async { h.registry.get_versioned::<crate::records::ManifestRecord>(&key).await.unwrap().unwrap() };
    // Within the hour of the push: nothing to write (retention asks "pushed or pulled").
    assert_eq!(h.send_at("GET", "/v2/team/app/manifests/v1", b"", 1_700_000_100).await.0, StatusCode::OK);
    assert_eq!(record().await.0.pulled_at, None);
    let t0 = 1_700_000_000 + 7200;
    // A HEAD is no pull (clients probe with it).
    assert_eq!(h.send_at("HEAD", "/v2/team/app/manifests/v1", b"", t0).await.0, StatusCode::OK);
    assert_eq!(record().await.0.pulled_at, None);
    assert_eq!(h.send_at("GET", "/v2/team/app/manifests/v1", b"", t0).await.0, StatusCode::OK);
    let (first, version) = record().await;
    assert_eq!(first.pulled_at, Some(t0));
    // Within the hour: no write at all.
    assert_eq!(h.send_at("GET", &format!("/v2/team/app/manifests/{digest}"), b"", t0 + 3599).await.0, StatusCode::OK);
    assert_eq!(record().await.1, version, "a pull within the hour writes nothing");
    assert_eq!(h.send_at("GET", "/v2/team/app/manifests/v1", b"", t0 + 3600).await.0, StatusCode::OK);
    let (later, _) = record().await;
    assert_eq!(later.pulled_at, Some(t0 + 3600));
    assert!(later.generation > first.generation, "every write of the record raises its generation");
    // A push of the same manifest keeps the pull time; a delete still works after pulls.
    assert_eq!(h.put("team/app", "v2", &bytes).await.0, StatusCode::CREATED);
    assert_eq!(record().await.0.pulled_at, Some(t0 + 3600));
    assert_eq!(h.send("DELETE", &format!("/v2/team/app/manifests/{digest}"), b"").await.0, StatusCode::ACCEPTED);
    assert_eq!(h.send_at("GET", "/v2/team/app/manifests/v1", b"", t0 + 9000).await.0, StatusCode::NOT_FOUND);
    assert!(record().await.0.deleted, "a pull never revives a tombstone");
}

/// Without a retention rule that reads pull times, a GET by tag stays one metadata read and
/// writes nothing, however long since the push.
#[tokio::test]
async fn pulls_write_nothing_where_no_retention_rule_reads_them() {
    let h = harness("[[policies.retention]]\nrepositories = [\"team/*\"]\nkeep_last = 3\n");
    let (bytes, digest) = h.image("team/app", 1).await;
    assert_eq!(h.put("team/app", "v1", &bytes).await.0, StatusCode::CREATED);
    let key = crate::records::manifest_key(&crate::names::RepoName::parse("team/app").unwrap(), &crate::names::parse_digest(&digest).unwrap());
    let before = h.registry.get_versioned::<crate::records::ManifestRecord>(&key).await.unwrap().unwrap();
    assert_eq!(h.send_at("GET", "/v2/team/app/manifests/v1", b"", 1_700_000_000 + 86_400).await.0, StatusCode::OK);
    let after = h.registry.get_versioned::<crate::records::ManifestRecord>(&key).await.unwrap().unwrap();
    assert_eq!(after.1, before.1, "no write");
    assert_eq!(after.0.pulled_at, None);
}
