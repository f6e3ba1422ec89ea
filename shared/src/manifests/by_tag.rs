//! GET and HEAD by tag read the tag record alone (it carries the manifest; see `TagRecord`):
//! counted metadata reads, inline and not inline bytes, records from before the change, and the
//! moves and deletes that must still show through.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::StatusCode;

use crate::memory::{MemoryBlobStore, MemoryMetaStore};
use crate::names::{parse_digest, RepoName};
use crate::records::{tag_key, TagRecord, INLINE_MANIFEST_BYTES};
use crate::storage::{
    BatchOp, BlobStore, ByteStream, MetaStore, Precondition, PutOutcome, StorageResult, Versioned,
};
use crate::{Body, Config, Registry, RequestContext};

use super::OCI_MANIFEST;

/// The in-memory metadata store, counting reads.
#[derive(Default)]
struct Counting {
    inner: MemoryMetaStore,
    gets: AtomicUsize,
}

#[async_trait::async_trait]
impl MetaStore for Counting {
    async fn get(&self, key: &str) -> StorageResult<Option<Versioned>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> StorageResult<PutOutcome> {
        self.inner.put(key, value, cond).await
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        self.inner.list(prefix, after, limit).await
    }
    async fn apply(&self, ops: Vec<BatchOp>) -> StorageResult<Vec<bool>> {
        self.inner.apply(ops).await
    }
}

type Reg = Registry<MemoryBlobStore, Counting>;

fn registry() -> Reg {
    Registry::new(MemoryBlobStore::new(), Counting::default(), Config::new(b"secret".to_vec()))
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

async fn send(reg: &Reg, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let stream: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::copy_from_slice(body))]));
    let response = reg.handle(req.body(stream).unwrap(), RequestContext { now: 1, random: [3; 16] }).await;
    let (parts, body) = response.into_parts();
    let body = match body {
        Body::Empty => Vec::new(),
        Body::Full(b) => b.to_vec(),
        Body::Stream(mut s) => {
            let mut out = Vec::new();
            while let Some(chunk) = futures_util::StreamExt::next(&mut s).await {
                out.extend_from_slice(&chunk.unwrap());
            }
            out
        }
    };
    Answer { status: parts.status, headers: parts.headers, body }
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// A manifest of about `padding` bytes more than the bare minimum, naming a config blob it
/// pushes first; pushed as `repo:tag`. Returns its bytes and digest.
async fn push(reg: &Reg, repo: &str, tag: &str, padding: usize) -> (Vec<u8>, String) {
    let config = br#"{"architecture":"amd64"}"#;
    let config_digest = crate::hash::sha256_of(config);
    let uri = format!("/v2/{repo}/blobs/uploads/?digest={config_digest}");
    assert_eq!(send(reg, "POST", &uri, &[], config).await.status, StatusCode::CREATED);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [],
        "annotations": { "padding": "x".repeat(padding) },
    });
    // A trailing newline, as many clients write: the bytes must come back exactly.
    let mut bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    bytes.push(b'\n');
    let uri = format!("/v2/{repo}/manifests/{tag}");
    let r = send(reg, "PUT", &uri, &[("content-type", OCI_MANIFEST)], &bytes).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let digest = crate::hash::sha256_of(&bytes);
    (bytes, digest)
}

/// GET (or HEAD) by tag, with the number of metadata reads it made.
async fn pull(reg: &Reg, method: &str, repo: &str, reference: &str) -> (Answer, usize) {
    let before = reg.meta.gets.load(Ordering::Relaxed);
    let a = send(reg, method, &format!("/v2/{repo}/manifests/{reference}"), &[("accept", OCI_MANIFEST)], b"").await;
    (a, reg.meta.gets.load(Ordering::Relaxed) - before)
}

#[track_caller]
fn assert_manifest(a: &Answer, bytes: &[u8], digest: &str, head: bool) {
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(header(a, "content-type"), OCI_MANIFEST);
    assert_eq!(header(a, "docker-content-digest"), digest);
    assert_eq!(header(a, "etag"), format!("\"{digest}\""));
    assert_eq!(header(a, "content-length"), bytes.len().to_string());
    assert_eq!(header(a, "cache-control"), "no-cache");
    assert_eq!(a.body, if head { &[][..] } else { bytes });
}

async fn tag_record(reg: &Reg, repo: &str, tag: &str) -> TagRecord {
    reg.get_record(&tag_key(&RepoName::parse(repo).unwrap(), tag)).await.unwrap().unwrap()
}

#[tokio::test]
async fn small_manifest_by_tag_is_one_read_with_its_bytes_inline() {
    let reg = registry();
    let (bytes, digest) = push(&reg, "a", "v1", 10).await;
    let record = tag_record(&reg, "a", "v1").await;
    assert_eq!(record.manifest.as_deref().map(str::as_bytes), Some(&bytes[..]));
    assert_eq!((record.media_type.as_deref(), record.size), (Some(OCI_MANIFEST), Some(bytes.len() as u64)));

    let (get, reads) = pull(&reg, "GET", "a", "v1").await;
    assert_manifest(&get, &bytes, &digest, false);
    assert_eq!(reads, 1, "GET by tag reads the tag record only");
    let (head, reads) = pull(&reg, "HEAD", "a", "v1").await;
    assert_manifest(&head, &bytes, &digest, true);
    assert_eq!(reads, 1, "HEAD by tag reads the tag record only");

    // The bytes come from the record: with the stored content gone, the tag still answers.
    reg.blobs.delete(&parse_digest(&digest).unwrap()).await.unwrap();
    let (get, _) = pull(&reg, "GET", "a", "v1").await;
    assert_manifest(&get, &bytes, &digest, false);
}

#[tokio::test]
async fn manifest_over_the_inline_bound_is_read_from_the_blob_store() {
    let reg = registry();
    let (bytes, digest) = push(&reg, "a", "big", INLINE_MANIFEST_BYTES).await;
    assert!(bytes.len() > INLINE_MANIFEST_BYTES);
    let record = tag_record(&reg, "a", "big").await;
    assert!(record.manifest.is_none(), "a manifest over the bound is not copied into its tag");
    assert_eq!(record.size, Some(bytes.len() as u64));

    let (get, reads) = pull(&reg, "GET", "a", "big").await;
    assert_manifest(&get, &bytes, &digest, false);
    assert_eq!(reads, 1, "the tag record has the media type and size; the bytes come from the blob store");
    let (head, reads) = pull(&reg, "HEAD", "a", "big").await;
    assert_manifest(&head, &bytes, &digest, true);
    assert_eq!(reads, 1);

    reg.blobs.delete(&parse_digest(&digest).unwrap()).await.unwrap();
    let (get, _) = pull(&reg, "GET", "a", "big").await;
    assert_eq!(get.status, StatusCode::INTERNAL_SERVER_ERROR, "the content is read, not the record");

    // Exactly at the bound is still inline.
    let at_bound = vec![b' '; INLINE_MANIFEST_BYTES];
    assert!(TagRecord::new(&parse_digest(&digest).unwrap(), OCI_MANIFEST, &at_bound, 0).manifest.is_some());
    let over = vec![b' '; INLINE_MANIFEST_BYTES + 1];
    assert!(TagRecord::new(&parse_digest(&digest).unwrap(), OCI_MANIFEST, &over, 0).manifest.is_none());
}

#[test]
fn bytes_that_are_not_utf8_are_not_inlined() {
    let digest = parse_digest(&crate::hash::sha256_of(b"x")).unwrap();
    let record = TagRecord::new(&digest, OCI_MANIFEST, b"{\"a\":\"\xff\"}", 0);
    assert!(record.manifest.is_none());
    assert_eq!(record.size, Some(9));
}

/// A tag record as written before tags carried the manifest (digest and time only).
async fn write_old_record(reg: &Reg, repo: &str, tag: &str, digest: &str) {
    let key = tag_key(&RepoName::parse(repo).unwrap(), tag);
    let old = format!(r#"{{"digest":"{digest}","tagged_at":1}}"#);
    reg.meta.put(&key, Bytes::from(old), Precondition::None).await.unwrap();
}

#[tokio::test]
async fn tag_record_from_before_the_change_is_still_served() {
    let reg = registry();
    let (bytes, digest) = push(&reg, "a", "v1", 10).await;
    write_old_record(&reg, "a", "v1", &digest).await;
    assert!(tag_record(&reg, "a", "v1").await.media_type.is_none());

    let (get, reads) = pull(&reg, "GET", "a", "v1").await;
    assert_manifest(&get, &bytes, &digest, false);
    assert_eq!(reads, 2, "the tag, then the manifest record");
    let (head, _) = pull(&reg, "HEAD", "a", "v1").await;
    assert_manifest(&head, &bytes, &digest, true);

    // The manifest record still decides for such a tag: a tombstone is not served.
    let (_, other) = push(&reg, "a", "v2", 20).await;
    write_old_record(&reg, "a", "v2", &other).await;
    let d = send(&reg, "DELETE", &format!("/v2/a/manifests/{other}"), &[], b"").await;
    assert_eq!(d.status, StatusCode::ACCEPTED);
    write_old_record(&reg, "a", "stale", &other).await;
    let (get, _) = pull(&reg, "GET", "a", "stale").await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);

    // A delete by tag of an old record works too.
    let d = send(&reg, "DELETE", "/v2/a/manifests/v1", &[], b"").await;
    assert_eq!(d.status, StatusCode::ACCEPTED);
    assert_eq!(pull(&reg, "GET", "a", "v1").await.0.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn moves_and_deletes_show_through_the_one_read() {
    let reg = registry();
    let (first, first_digest) = push(&reg, "a", "v1", 1).await;
    let (second, second_digest) = push(&reg, "a", "v1", 2).await;
    assert_manifest(&pull(&reg, "GET", "a", "v1").await.0, &second, &second_digest, false);

    // Push the first again under two tags, then delete it by digest: both tags go, v1 stays.
    push(&reg, "a", "x", 1).await;
    push(&reg, "a", "y", 1).await;
    assert_manifest(&pull(&reg, "GET", "a", "x").await.0, &first, &first_digest, false);
    let d = send(&reg, "DELETE", &format!("/v2/a/manifests/{first_digest}"), &[], b"").await;
    assert_eq!(d.status, StatusCode::ACCEPTED);
    for tag in ["x", "y"] {
        assert_eq!(pull(&reg, "GET", "a", tag).await.0.status, StatusCode::NOT_FOUND);
        assert_eq!(pull(&reg, "HEAD", "a", tag).await.0.status, StatusCode::NOT_FOUND);
    }
    assert_manifest(&pull(&reg, "GET", "a", "v1").await.0, &second, &second_digest, false);

    // A delete by tag removes the tag only.
    let d = send(&reg, "DELETE", "/v2/a/manifests/v1", &[], b"").await;
    assert_eq!(d.status, StatusCode::ACCEPTED);
    assert_eq!(pull(&reg, "GET", "a", "v1").await.0.status, StatusCode::NOT_FOUND);
    assert_manifest_by_digest(&reg, &second, &second_digest).await;

    // Accept still decides from the media type in the record.
    let a = send(&reg, "GET", "/v2/a/manifests/x", &[], b"").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    push(&reg, "a", "z", 3).await;
    let refused = send(&reg, "GET", "/v2/a/manifests/z", &[("accept", super::OCI_INDEX)], b"").await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
}

async fn assert_manifest_by_digest(reg: &Reg, bytes: &[u8], digest: &str) {
    let a = send(reg, "GET", &format!("/v2/a/manifests/{digest}"), &[], b"").await;
    assert_eq!((a.status, &a.body[..]), (StatusCode::OK, bytes));
}
