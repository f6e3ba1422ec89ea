//! The races of docs/gc.md, driven by hand: a request is stopped at one storage call (a hook in
//! the metadata store), a GC runs to completion there, then the request goes on. Each test ends
//! by pulling every image that got 201 and checking every digest.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http::{Method, StatusCode};

use super::*;
use crate::storage::{PutOutcome, StoredBlob, Versioned};
use crate::{Body, ByteStream, Config, MemoryBlobStore, MemoryMetaStore, RequestContext, Response};

const GRACE: u64 = 1000;
const SETTLE: u64 = 100;
const T0: u64 = 1_000_000;

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;
/// The op (`get`/`put`), the key prefix, and what to run.
type HookSlot = Arc<Mutex<Option<(&'static str, String, Hook)>>>;

/// A memory metadata store that runs a hook once, just before the first `get` or `put` of a key
/// starting with a given prefix.
#[derive(Clone)]
struct HookMeta {
    inner: MemoryMetaStore,
    hook: HookSlot,
}

impl HookMeta {
    async fn fire(&self, op: &'static str, key: &str) {
        let hook = {
            let mut slot = self.hook.lock().unwrap();
            match slot.as_ref() {
                Some((o, prefix, _)) if *o == op && key.starts_with(prefix.as_str()) => slot.take().map(|(_, _, h)| h),
                _ => None,
            }
        };
        if let Some(hook) = hook {
            hook().await;
        }
    }
}

#[async_trait::async_trait]
impl MetaStore for HookMeta {
    async fn get(&self, key: &str) -> crate::storage::StorageResult<Option<Versioned>> {
        self.fire("get", key).await;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> crate::storage::StorageResult<PutOutcome> {
        self.fire("put", key).await;
        self.inner.put(key, value, cond).await
    }
    async fn delete(&self, key: &str) -> crate::storage::StorageResult<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> crate::storage::StorageResult<Vec<String>> {
        self.inner.list(prefix, after, limit).await
    }
    async fn apply(&self, ops: Vec<crate::storage::BatchOp>) -> crate::storage::StorageResult<Vec<bool>> {
        self.inner.apply(ops).await
    }
}

type Gc = Registry<MemoryBlobStore, MemoryMetaStore>;

/// One registry that serves requests (through the hook) and one that collects, over the same
/// stores.
struct World {
    reg: Registry<MemoryBlobStore, HookMeta>,
    gc: Arc<Gc>,
    hook: HookSlot,
    blobs: MemoryBlobStore,
    meta: MemoryMetaStore,
}

fn config() -> Config {
    Config::new(vec![7; 32])
}

fn world() -> World {
    let blobs = MemoryBlobStore::new();
    let meta = MemoryMetaStore::new();
    let hook = Arc::new(Mutex::new(None));
    let reg = Registry::new(blobs.clone(), HookMeta { inner: meta.clone(), hook: hook.clone() }, config());
    let gc = Arc::new(Registry::new(blobs.clone(), meta.clone(), config()));
    World { reg, gc, hook, blobs, meta }
}

fn opts() -> GcOptions {
    GcOptions { grace_secs: GRACE, settle_secs: SETTLE, upload_idle_secs: GRACE, atomic_batches: true, page: 3, batch: 2, ..GcOptions::default() }
}

/// A whole run at `now` (a new run if the last one finished).
async fn collect(gc: &Gc, opts: &GcOptions, now: u64) -> GcReport {
    let clock = move || now;
    let opts = GcOptions { take_over: true, ..opts.clone() };
    gc.gc(&opts, &Budget { clock: &clock, deadline: None, max_steps: None }).await.expect("gc")
}

impl World {
    /// Runs a GC at `now` just before the next `op` on a key starting with `prefix`.
    fn gc_before(&self, op: &'static str, prefix: &str, opts: GcOptions, now: u64) {
        let gc = self.gc.clone();
        let hook: Hook = Box::new(move || {
            Box::pin(async move {
                collect(&gc, &opts, now).await;
            })
        });
        *self.hook.lock().unwrap() = Some((op, prefix.to_owned(), hook));
    }

    fn hook_fired(&self) -> bool {
        self.hook.lock().unwrap().is_none()
    }

    async fn call(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: &[u8], now: u64) -> Response {
        let stream: ByteStream = Box::pin(futures_util::stream::iter(
            (!body.is_empty()).then(|| Ok(Bytes::copy_from_slice(body))),
        ));
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        static N: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.reg.handle(req.body(stream).unwrap(), RequestContext { now, random: [n; 16] }).await
    }

    /// POST then PUT with the whole blob (the upload-completion path).
    async fn push_blob(&self, repo: &str, content: &[u8], now: u64) -> StatusCode {
        let digest = crate::hash::sha256_of(content);
        let start = self.call(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], b"", now).await;
        assert_eq!(start.status(), StatusCode::ACCEPTED);
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        self.call(Method::PUT, &format!("{location}?digest={digest}"), &[], content, now).await.status()
    }

    async fn push_manifest(&self, repo: &str, reference: &str, manifest: &[u8], media_type: &str, now: u64) -> Response {
        self.call(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), &[("content-type", media_type)], manifest, now).await
    }

    /// Pulls `reference` and everything it references, checking every digest. Err says what broke.
    fn pull<'a>(&'a self, repo: &'a str, reference: &'a str) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let resp = self.call(Method::GET, &format!("/v2/{repo}/manifests/{reference}"), &[], b"", T0).await;
            if resp.status() != StatusCode::OK {
                return Err(format!("manifest {reference}: {}", resp.status()));
            }
            let bytes = body_of(resp).await;
            if reference.starts_with("sha256:") && crate::hash::sha256_of(&bytes) != reference {
                return Err(format!("manifest {reference}: wrong digest"));
            }
            let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if let Some(children) = json["manifests"].as_array() {
                for child in children {
                    self.pull(repo, child["digest"].as_str().unwrap()).await?;
                }
                return Ok(());
            }
            let mut blobs = vec![json["config"]["digest"].as_str().unwrap().to_owned()];
            blobs.extend(json["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()));
            for digest in blobs {
                let resp = self.call(Method::GET, &format!("/v2/{repo}/blobs/{digest}"), &[], b"", T0).await;
                if resp.status() != StatusCode::OK {
                    return Err(format!("blob {digest}: {}", resp.status()));
                }
                if crate::hash::sha256_of(&body_of(resp).await) != digest {
                    return Err(format!("blob {digest}: wrong digest"));
                }
            }
            Ok(())
        })
    }

    /// Everything in both stores, to compare before and after.
    async fn snapshot(&self) -> (Vec<(String, Bytes)>, Vec<StoredBlob>, usize) {
        let mut records = Vec::new();
        for key in self.meta.list("", None, usize::MAX).await.unwrap() {
            let value = self.meta.get(&key).await.unwrap().unwrap().value;
            records.push((key, value));
        }
        (records, self.blobs.list_blobs(None, usize::MAX).await.unwrap(), self.blobs.uploads_in_progress())
    }

    async fn stored(&self, digest: &str) -> bool {
        self.blobs.stat(&parse_digest(digest).unwrap()).await.unwrap().is_some()
    }
}

async fn body_of(resp: Response) -> Vec<u8> {
    match resp.into_body() {
        Body::Empty => Vec::new(),
        Body::Full(b) => b.to_vec(),
        Body::Stream(mut s) => {
            let mut out = Vec::new();
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk.unwrap());
            }
            out
        }
    }
}

const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn image(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let d = |c: &[u8]| crate::hash::sha256_of(c);
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": IMAGE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(config), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(l), "size": l.len()})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn index(children: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": children.iter().map(|c| serde_json::json!({"mediaType": IMAGE, "digest": crate::hash::sha256_of(c), "size": c.len()})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
}

/// Blobs uploaded long ago (past grace), then a manifest PUT that checks them while a GC
/// condemns them between its check and its record. Returns the world, the PUT's status, and
/// the manifest.
async fn push_racing_gc(opts: GcOptions) -> (World, StatusCode, Vec<u8>) {
    let w = world();
    let (config, layer) = (b"config-1".as_slice(), b"layer-1".as_slice());
    assert_eq!(w.push_blob("r", config, T0).await, StatusCode::CREATED);
    assert_eq!(w.push_blob("r", layer, T0).await, StatusCode::CREATED);
    let manifest = image(config, &[layer]);
    let now = T0 + GRACE + 10;
    // The PUT has read its links; the GC runs before its record is written.
    w.gc_before("put", "manifests/", opts, now);
    let status = w.push_manifest("r", "v1", &manifest, IMAGE, now).await.status();
    assert!(w.hook_fired());
    (w, status, manifest)
}

#[test]
fn check_then_publish_keeps_the_image() {
    block_on(async {
        let (w, status, _) = push_racing_gc(opts()).await;
        assert_eq!(status, StatusCode::CREATED);
        // Later runs: past the settle window and far beyond.
        let r = collect(&w.gc, &opts(), T0 + GRACE + 10 + SETTLE).await;
        assert_eq!(r.links_revived, 2, "{r:?}");
        assert_eq!(r.links_killed, 0);
        collect(&w.gc, &opts(), T0 + 10 * GRACE).await;
        w.pull("r", "v1").await.unwrap();
    });
}

/// The same race against a plain mark-and-sweep: the image that got 201 is broken. This is what
/// the safety rule (condemned state, revive, settle window) prevents.
#[test]
fn without_the_safety_rule_a_racing_push_breaks() {
    block_on(async {
        let (w, status, _) = push_racing_gc(GcOptions { unsafe_sweep: true, ..opts() }).await;
        assert_eq!(status, StatusCode::CREATED);
        // The manifest's own bytes went too (its record was not written yet): 500 on the pull.
        let broken = w.pull("r", "v1").await.unwrap_err();
        assert!(broken.contains("404") || broken.contains("500"), "{broken}");
    });
}

/// A link condemned by an earlier run, referenced by a PUT (which revives it) while a GC past
/// the settle window tries to kill it: the kill loses.
#[test]
fn a_revive_beats_the_kill() {
    block_on(async {
        let w = world();
        let (config, layer) = (b"config-2".as_slice(), b"layer-2".as_slice());
        w.push_blob("r", config, T0).await;
        w.push_blob("r", layer, T0).await;
        let condemned_at = T0 + GRACE;
        assert_eq!(collect(&w.gc, &opts(), condemned_at).await.links_condemned, 2);
        // HEAD still says the blob is there (condemned links are present).
        let head = w.call(Method::HEAD, &format!("/v2/r/blobs/{}", crate::hash::sha256_of(layer)), &[], b"", condemned_at).await;
        assert_eq!(head.status(), StatusCode::OK);
        // The GC runs after the PUT revived the links, before its record: its kill must fail.
        w.gc_before("put", "manifests/", opts(), condemned_at + SETTLE);
        let put = w.push_manifest("r", "v1", &image(config, &[layer]), IMAGE, condemned_at + 1).await;
        assert_eq!(put.status(), StatusCode::CREATED);
        let r = w.gc.gc_report().await.unwrap().unwrap();
        assert_eq!(r.links_killed, 0, "{r:?}");
        collect(&w.gc, &opts(), condemned_at + 10 * GRACE).await;
        w.pull("r", "v1").await.unwrap();
    });
}

/// docker HEADs a blob (200), a GC kills its link before the manifest PUT: the PUT is refused
/// (400 MANIFEST_BLOB_UNKNOWN, nothing published), the client uploads again, and all is well.
#[test]
fn head_then_put_after_the_kill_is_refused_not_broken() {
    block_on(async {
        let w = world();
        let (config, layer) = (b"config-3".as_slice(), b"layer-3".as_slice());
        w.push_blob("r", config, T0).await;
        w.push_blob("r", layer, T0).await;
        collect(&w.gc, &opts(), T0 + GRACE).await;
        let layer_digest = crate::hash::sha256_of(layer);
        let head = w.call(Method::HEAD, &format!("/v2/r/blobs/{layer_digest}"), &[], b"", T0 + GRACE).await;
        assert_eq!(head.status(), StatusCode::OK);
        let r = collect(&w.gc, &opts(), T0 + GRACE + SETTLE).await;
        assert_eq!(r.links_killed, 2, "{r:?}");
        let now = T0 + GRACE + SETTLE + 1;
        let manifest = image(config, &[layer]);
        let put = w.push_manifest("r", "v1", &manifest, IMAGE, now).await;
        assert_eq!(put.status(), StatusCode::BAD_REQUEST);
        assert!(w.pull("r", "v1").await.is_err(), "a refused manifest is not visible");
        // The client pushes the blobs again (HEAD now says 404) and the manifest.
        let head = w.call(Method::HEAD, &format!("/v2/r/blobs/{layer_digest}"), &[], b"", now).await;
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
        assert_eq!(w.push_blob("r", config, now).await, StatusCode::CREATED);
        assert_eq!(w.push_blob("r", layer, now).await, StatusCode::CREATED);
        assert_eq!(w.push_manifest("r", "v1", &manifest, IMAGE, now).await.status(), StatusCode::CREATED);
        for later in [now + SETTLE, now + GRACE, now + 10 * GRACE] {
            collect(&w.gc, &opts(), later).await;
        }
        w.pull("r", "v1").await.unwrap();
    });
}

/// A mount reads a condemned source link; a GC kills the source link and condemns the content
/// before the mount writes the target link. The content stays; the image pushed on the mount
/// pulls.
#[test]
fn a_mount_racing_the_kill_of_its_source_keeps_the_content() {
    block_on(async {
        let w = world();
        let (config, layer) = (b"config-4".as_slice(), b"layer-4".as_slice());
        w.push_blob("src", config, T0).await;
        w.push_blob("src", layer, T0).await;
        let c = T0 + GRACE;
        collect(&w.gc, &opts(), c).await;
        let layer_digest = crate::hash::sha256_of(layer);
        // The GC runs after the mount read the source link, before it writes the target link.
        w.gc_before("put", "blobs/dst@", opts(), c + SETTLE);
        let mount = w.call(Method::POST, &format!("/v2/dst/blobs/uploads/?mount={layer_digest}&from=src"), &[], b"", c + SETTLE - 1).await;
        assert_eq!(mount.status(), StatusCode::CREATED);
        assert!(w.hook_fired());
        let r = w.gc.gc_report().await.unwrap().unwrap();
        assert!(r.links_killed >= 1 && r.content_condemned >= 1, "{r:?}");
        w.push_blob("dst", config, c + SETTLE).await;
        let manifest = image(config, &[layer]);
        assert_eq!(w.push_manifest("dst", "v1", &manifest, IMAGE, c + SETTLE).await.status(), StatusCode::CREATED);
        for later in [c + 2 * SETTLE, c + 3 * SETTLE, c + 10 * GRACE] {
            collect(&w.gc, &opts(), later).await;
        }
        w.pull("dst", "v1").await.unwrap();
        assert!(w.stored(&layer_digest).await);
    });
}

/// Content condemned (its only link deleted), then uploaded again while a GC dooms and deletes
/// it between the upload's commit and its link: the upload fails with a retryable error instead
/// of linking content that is gone; the retry works.
#[test]
fn the_same_digest_uploaded_while_gc_deletes_it() {
    block_on(async {
        let w = world();
        let layer = vec![9u8; 3000];
        let digest = crate::hash::sha256_of(&layer);
        w.push_blob("r", &layer, T0).await;
        let deleted = w.call(Method::DELETE, &format!("/v2/r/blobs/{digest}"), &[], b"", T0).await;
        assert_eq!(deleted.status(), StatusCode::ACCEPTED);
        let c = T0 + 1;
        assert_eq!(collect(&w.gc, &opts(), c).await.content_condemned, 1);
        w.gc_before("get", &format!("gc/content/{digest}"), opts(), c + SETTLE);
        let status = w.push_blob("r", &layer, c + SETTLE).await;
        assert!(w.hook_fired());
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(!w.stored(&digest).await, "GC deleted it after the commit");
        let head = w.call(Method::HEAD, &format!("/v2/r/blobs/{digest}"), &[], b"", c + SETTLE).await;
        assert_eq!(head.status(), StatusCode::NOT_FOUND, "no link to missing content");
        // The client retries.
        assert_eq!(w.push_blob("r", &layer, c + SETTLE + 1).await, StatusCode::CREATED);
        let config = b"config-5".as_slice();
        w.push_blob("r", config, c + SETTLE + 1).await;
        assert_eq!(w.push_manifest("r", "v1", &image(config, &[&layer]), IMAGE, c + SETTLE + 1).await.status(), StatusCode::CREATED);
        for later in [c + 2 * SETTLE, c + 3 * SETTLE, c + 10 * GRACE] {
            collect(&w.gc, &opts(), later).await;
        }
        w.pull("r", "v1").await.unwrap();
    });
}

/// The same, when the request reads the mark first: it revives it, and GC's doom loses.
#[test]
fn the_same_digest_uploaded_before_gc_dooms_it_revives_it() {
    block_on(async {
        let w = world();
        let layer = vec![8u8; 3000];
        let digest = crate::hash::sha256_of(&layer);
        w.push_blob("r", &layer, T0).await;
        w.call(Method::DELETE, &format!("/v2/r/blobs/{digest}"), &[], b"", T0).await;
        let c = T0 + 1;
        collect(&w.gc, &opts(), c).await;
        // The GC runs after the upload revived the mark, before its link.
        w.gc_before("put", "blobs/r@", opts(), c + SETTLE);
        assert_eq!(w.push_blob("r", &layer, c + SETTLE).await, StatusCode::CREATED);
        assert!(w.hook_fired());
        assert_eq!(w.gc.gc_report().await.unwrap().unwrap().content_deleted, 0);
        assert!(w.stored(&digest).await);
        let config = b"config-6".as_slice();
        w.push_blob("r", config, c + SETTLE).await;
        w.push_manifest("r", "v1", &image(config, &[&layer]), IMAGE, c + SETTLE).await;
        for later in [c + 2 * SETTLE, c + 10 * GRACE] {
            collect(&w.gc, &opts(), later).await;
        }
        w.pull("r", "v1").await.unwrap();
    });
}

/// A manifest PUT whose own bytes GC deletes right after it wrote them (a manifest deleted
/// long ago, pushed again): it writes them again, and the image pulls.
#[test]
fn a_manifest_pushed_again_while_gc_deletes_its_bytes() {
    block_on(async {
        let w = world();
        let config = b"config-7".as_slice();
        w.push_blob("r", config, T0).await;
        let manifest = image(config, &[]);
        let digest = crate::hash::sha256_of(&manifest);
        w.push_manifest("r", "v1", &manifest, IMAGE, T0).await;
        w.call(Method::DELETE, &format!("/v2/r/manifests/{digest}"), &[], b"", T0).await;
        // Keep the config linked (young), so only the manifest's bytes go.
        w.push_blob("r", config, T0 + 1).await;
        let c = T0 + 2;
        assert_eq!(collect(&w.gc, &opts(), c).await.content_condemned, 1);
        w.gc_before("get", &format!("gc/content/{digest}"), opts(), c + SETTLE);
        let put = w.push_manifest("r", "v1", &manifest, IMAGE, c + SETTLE).await;
        assert_eq!(put.status(), StatusCode::CREATED);
        assert_eq!(w.gc.gc_report().await.unwrap().unwrap().content_deleted, 1);
        w.pull("r", "v1").await.unwrap();
        collect(&w.gc, &opts(), c + 10 * GRACE).await;
        w.pull("r", "v1").await.unwrap();
    });
}

/// An index and its children in one repository: children untagged, only the index tagged. GC
/// keeps all of it; a policy condemning a child the index lists is refused.
#[test]
fn an_index_keeps_its_children() {
    block_on(async {
        let w = world();
        let (c1, c2, shared) = (b"config-a".as_slice(), b"config-b".as_slice(), b"layer-shared".as_slice());
        for blob in [c1, c2, shared] {
            w.push_blob("r", blob, T0).await;
        }
        let (m1, m2) = (image(c1, &[shared]), image(c2, &[shared]));
        for m in [&m1, &m2] {
            let put = w.push_manifest("r", &crate::hash::sha256_of(m), m, IMAGE, T0).await;
            assert_eq!(put.status(), StatusCode::CREATED);
        }
        let idx = index(&[&m1, &m2]);
        assert_eq!(w.push_manifest("r", "multi", &idx, INDEX, T0).await.status(), StatusCode::CREATED);
        let policy = GcOptions { condemned_manifests: vec![("r".into(), crate::hash::sha256_of(&m1))], ..opts() };
        let r = collect(&w.gc, &policy, T0 + GRACE).await;
        assert_eq!(r.manifests_deleted, 0);
        for later in [T0 + GRACE + SETTLE, T0 + 10 * GRACE] {
            let r = collect(&w.gc, &opts(), later).await;
            assert_eq!(r.links_condemned + r.content_condemned, 0, "{r:?}");
        }
        w.pull("r", "multi").await.unwrap();
        // A policy that condemns the index: it goes a settle window later; its children stay
        // (they are live manifests).
        let policy = GcOptions { condemned_manifests: vec![("r".into(), crate::hash::sha256_of(&idx))], ..opts() };
        let r = collect(&w.gc, &policy, T0 + 11 * GRACE).await;
        assert_eq!((r.manifests_condemned, r.manifests_deleted), (1, 0), "{r:?}");
        w.pull("r", "multi").await.unwrap();
        let r = collect(&w.gc, &opts(), T0 + 11 * GRACE + SETTLE).await;
        assert_eq!(r.manifests_deleted, 1, "{r:?}");
        assert!(w.pull("r", "multi").await.is_err(), "the tag went with the index");
        w.pull("r", &crate::hash::sha256_of(&m1)).await.unwrap();
        w.pull("r", &crate::hash::sha256_of(&m2)).await.unwrap();
    });
}

/// Sessions idle past `upload_idle_secs` (since their start or last write) are aborted with
/// their data; recent ones stay; a PATCH racing the abort never writes into aborted data.
#[test]
fn abandoned_uploads_are_aborted() {
    block_on(async {
        let w = world();
        let idle = GcOptions { upload_idle_secs: 500, ..opts() };
        let start = |now| w.call(Method::POST, "/v2/r/blobs/uploads/", &[], b"", now);
        let location = |r: &Response| r.headers()["location"].to_str().unwrap().to_owned();
        let old = location(&start(T0).await);
        let written = location(&start(T0).await);
        let patch = w.call(Method::PATCH, &written, &[("content-range", "0-4")], b"hello", T0 + 300).await;
        assert_eq!(patch.status(), StatusCode::ACCEPTED);
        let fresh = location(&start(T0 + 400).await);
        assert_eq!(w.blobs.uploads_in_progress(), 3);
        let r = collect(&w.gc, &idle, T0 + 600).await;
        assert_eq!(r.uploads_aborted, 1, "{r:?}");
        assert_eq!(w.blobs.uploads_in_progress(), 2);
        let gone = w.call(Method::GET, &old, &[], b"", T0 + 600).await;
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        // A PATCH loads the session; the GC aborts it before the PATCH's claim: the claim
        // fails and the PATCH is refused, never writing into discarded data.
        w.gc_before("put", "uploads/", idle.clone(), T0 + 2000);
        let patch = w.call(Method::PATCH, &fresh, &[("content-range", "0-4")], b"hello", T0 + 2000).await;
        assert!(w.hook_fired());
        assert_eq!(patch.status(), StatusCode::NOT_FOUND);
        assert_eq!(w.blobs.uploads_in_progress(), 0);
    });
}

/// Images sharing layers, some deleted, an abandoned upload: the state GC tests start from.
/// Returns the references that must keep pulling.
async fn garbage(w: &World) -> Vec<(&'static str, String)> {
    let shared = b"shared-layer".as_slice();
    let mut keep = Vec::new();
    for (repo, i) in [("a", 1u8), ("a", 2), ("b", 3), ("b", 4)] {
        let config = vec![i; 10 + i as usize];
        let own = vec![100 + i; 2000];
        for blob in [&config[..], &own[..], shared] {
            assert_eq!(w.push_blob(repo, blob, T0).await, StatusCode::CREATED);
        }
        let manifest = image(&config, &[&own, shared]);
        let tag = format!("t{i}");
        assert_eq!(w.push_manifest(repo, &tag, &manifest, IMAGE, T0).await.status(), StatusCode::CREATED);
        if i % 2 == 0 {
            let digest = crate::hash::sha256_of(&manifest);
            let del = w.call(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}"), &[], b"", T0).await;
            assert_eq!(del.status(), StatusCode::ACCEPTED);
        } else {
            keep.push((repo, tag));
        }
    }
    let upload = w.call(Method::POST, "/v2/a/blobs/uploads/", &[], b"", T0).await;
    let loc = upload.headers()["location"].to_str().unwrap().to_owned();
    w.call(Method::PATCH, &loc, &[("content-range", "0-2")], b"abc", T0).await;
    keep
}

async fn pulls(w: &World, keep: &[(&str, String)]) {
    for (repo, tag) in keep {
        w.pull(repo, tag).await.unwrap_or_else(|e| panic!("{repo}:{tag}: {e}"));
    }
}

/// Bytes of all stored content.
async fn reclaimable(w: &World) -> u64 {
    w.blobs.list_blobs(None, usize::MAX).await.unwrap().iter().map(|b| b.size).sum()
}

/// A dry run reports what the whole pipeline will free and changes nothing; the real runs then
/// free exactly that.
#[test]
fn a_dry_run_reports_and_changes_nothing() {
    block_on(async {
        let w = world();
        let keep = garbage(&w).await;
        let total = reclaimable(&w).await;
        let before = w.snapshot().await;
        let later = T0 + 10 * GRACE;
        let dry = collect(&w.gc, &GcOptions { dry_run: true, ..opts() }, later).await;
        assert!(dry.finished && dry.dry_run);
        assert_eq!(dry.uploads_aborted, 1);
        assert_eq!(dry.content_deleted, 6, "{dry:?}");
        assert!(dry.bytes_freed > 4000, "{dry:?}");
        assert!(w.snapshot().await == before, "a dry run wrote something");
        let mut freed = 0;
        for now in [later, later + SETTLE, later + 2 * SETTLE, later + 3 * SETTLE] {
            freed += collect(&w.gc, &opts(), now).await.bytes_freed;
        }
        assert_eq!(freed, dry.bytes_freed);
        assert_eq!(reclaimable(&w).await, total - freed);
        assert_eq!(w.blobs.uploads_in_progress(), 0);
        pulls(&w, &keep).await;
    });
}

/// A GC killed after any step (the invocation's time ran out, kill -9) leaves every image
/// complete, and later invocations finish the job.
#[test]
fn a_gc_killed_after_any_step_leaves_images_complete() {
    block_on(async {
        let later = T0 + 10 * GRACE;
        let mut total_steps = None;
        for kill_after in 0.. {
            let w = world();
            let keep = garbage(&w).await;
            let clock = move || later;
            let budget = Budget { clock: &clock, deadline: None, max_steps: Some(kill_after) };
            let report = w.gc.gc(&opts(), &budget).await.unwrap();
            pulls(&w, &keep).await;
            if report.finished {
                total_steps.get_or_insert(report.steps);
                break;
            }
            // A second GC inside the lease is refused; past it, it takes over and finishes.
            let busy = w.gc.gc(&opts(), &budget).await;
            assert!(busy.is_err(), "the lease did not hold");
            let past_lease = later + DEFAULT_LEASE_SECS + 1;
            let mut freed = 0;
            for now in [past_lease, past_lease + SETTLE, past_lease + 2 * SETTLE, past_lease + 3 * SETTLE] {
                let clock = move || now;
                let r = w.gc.gc(&opts(), &Budget { clock: &clock, deadline: None, max_steps: None }).await.unwrap();
                assert!(r.finished);
                freed += r.bytes_freed;
                pulls(&w, &keep).await;
            }
            assert!(freed > 4000, "kill after {kill_after}: freed {freed}");
            assert_eq!(w.blobs.uploads_in_progress(), 0);
        }
        assert!(total_steps.unwrap() > 5);
    });
}

/// Unreferenced blobs younger than the grace period stay.
#[test]
fn the_grace_period_keeps_fresh_uploads() {
    block_on(async {
        let w = world();
        let layer = b"fresh".as_slice();
        w.push_blob("r", layer, T0).await;
        for now in [T0 + 1, T0 + GRACE - 1] {
            let r = collect(&w.gc, &opts(), now).await;
            assert_eq!(r.links_condemned + r.content_condemned + r.content_deleted, 0, "{r:?}");
        }
        let head = w.call(Method::HEAD, &format!("/v2/r/blobs/{}", crate::hash::sha256_of(layer)), &[], b"", T0).await;
        assert_eq!(head.status(), StatusCode::OK);
    });
}

#[test]
fn options_from_settings() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    };
    let o = GcOptions::from_vars(vars(&[("BERTH_GC_GRACE", "2h"), ("BERTH_GC_DRY_RUN", "true")])).unwrap();
    assert_eq!((o.grace_secs, o.settle_secs, o.dry_run), (7200, DEFAULT_SETTLE_SECS, true));
    let err = GcOptions::from_vars(vars(&[("BERTH_GC_SETTLE", "1w")])).unwrap_err();
    assert!(err.starts_with("BERTH_GC_SETTLE"), "{err}");
    assert_eq!(parse_millis("250ms").unwrap(), 250);
    assert!(parse_duration("250ms").is_err());
    assert_eq!(parse_duration("7d").unwrap(), 7 * 86400);
}

/// A policy condemned an untagged manifest; an index listing it is pushed while a GC past the
/// settle window deletes condemned manifests: the index PUT revived the child first, so the
/// delete loses and the index pulls whole.
#[test]
fn an_index_push_revives_a_child_a_policy_condemned() {
    block_on(async {
        let w = world();
        let (config, layer) = (b"config-c".as_slice(), b"layer-c".as_slice());
        w.push_blob("r", config, T0).await;
        w.push_blob("r", layer, T0).await;
        let child = image(config, &[layer]);
        let child_digest = crate::hash::sha256_of(&child);
        w.push_manifest("r", &child_digest, &child, IMAGE, T0).await;
        let c = T0 + 10;
        let policy = GcOptions { condemned_manifests: vec![("r".into(), child_digest.clone())], ..opts() };
        assert_eq!(collect(&w.gc, &policy, c).await.manifests_condemned, 1);
        // The GC runs after the index PUT checked (and revived) its child, before its record.
        let idx = index(&[&child]);
        w.gc_before("put", &format!("manifests/r@{}", crate::hash::sha256_of(&idx)), opts(), c + SETTLE);
        let put = w.push_manifest("r", "multi", &idx, INDEX, c + SETTLE).await;
        assert_eq!(put.status(), StatusCode::CREATED);
        assert!(w.hook_fired());
        assert_eq!(w.gc.gc_report().await.unwrap().unwrap().manifests_deleted, 0);
        for later in [c + 2 * SETTLE, c + 10 * GRACE] {
            let r = collect(&w.gc, &opts(), later).await;
            assert_eq!(r.manifests_deleted, 0, "{r:?}");
        }
        w.pull("r", "multi").await.unwrap();
    });
}

/// The same push after the delete: refused (400 MANIFEST_BLOB_UNKNOWN names the child), never
/// an index with a deleted child.
#[test]
fn an_index_push_after_the_policy_delete_is_refused() {
    block_on(async {
        let w = world();
        let (config, layer) = (b"config-d".as_slice(), b"layer-d".as_slice());
        w.push_blob("r", config, T0).await;
        w.push_blob("r", layer, T0).await;
        let child = image(config, &[layer]);
        let child_digest = crate::hash::sha256_of(&child);
        w.push_manifest("r", &child_digest, &child, IMAGE, T0).await;
        let policy = GcOptions { condemned_manifests: vec![("r".into(), child_digest.clone())], ..opts() };
        collect(&w.gc, &policy, T0 + 10).await;
        assert_eq!(collect(&w.gc, &opts(), T0 + 10 + SETTLE).await.manifests_deleted, 1);
        let put = w.push_manifest("r", "multi", &index(&[&child]), INDEX, T0 + 11 + SETTLE).await;
        assert_eq!(put.status(), StatusCode::BAD_REQUEST);
        assert!(w.pull("r", "multi").await.is_err());
    });
}

mod retention;
mod bounded;
