//! Memory does not grow with a repository (docs/gc.md, "A run"): the links phase takes one page
//! of a repository's links per step, and a repository whose condemned manifests span pages
//! still loses them all, parents first, in one run.

use std::collections::HashSet;

use super::*;

type OnGet = Box<dyn Fn(&str) + Send + Sync>;
type OnPut = Box<dyn Fn(&str, &Bytes) + Send + Sync>;

/// A memory metadata store that calls `on_get` before each `get` and `on_put` before each
/// `put`: what a test watches GC do.
#[derive(Clone)]
struct Watch {
    inner: MemoryMetaStore,
    on_get: Arc<OnGet>,
    on_put: Arc<OnPut>,
}

#[async_trait::async_trait]
impl MetaStore for Watch {
    async fn get(&self, key: &str) -> crate::storage::StorageResult<Option<Versioned>> {
        (self.on_get)(key);
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> crate::storage::StorageResult<PutOutcome> {
        (self.on_put)(key, &value);
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

/// A repository with 14 links (four images of three blobs, two deleted, and two loose blobs),
/// collected with pages of 3: no step reads more than a page of its links, and the run still
/// removes exactly the garbage (the kept images pull). Before the links phase went page by
/// page, one step read all 14.
#[test]
fn the_links_phase_holds_one_page_of_a_repository() {
    block_on(async {
        let w = world();
        let mut manifests = Vec::new();
        for i in 0..4u8 {
            let (config, a, b) = (vec![i; 11], vec![i + 100; 12], vec![i + 200; 13]);
            for blob in [&config, &a, &b] {
                assert_eq!(w.push_blob("big", blob, T0).await, StatusCode::CREATED);
            }
            let m = image(&config, &[&a, &b]);
            assert_eq!(w.push_manifest("big", &format!("t{i}"), &m, IMAGE, T0).await.status(), StatusCode::CREATED);
            manifests.push((crate::hash::sha256_of(&m), vec![config, a, b]));
        }
        for loose in [b"loose-1".as_slice(), b"loose-2".as_slice()] {
            w.push_blob("big", loose, T0).await;
        }
        for (digest, _) in &manifests[..2] {
            let resp = w.call(Method::DELETE, &format!("/v2/big/manifests/{digest}"), &[], b"", T0).await;
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
        }
        // The distinct links read since the last checkpoint put (a step ends with one), and the
        // most any step read: what a step holds as candidates.
        let step: Arc<Mutex<HashSet<String>>> = Default::default();
        let most = Arc::new(Mutex::new(0));
        let (s, m) = (step.clone(), most.clone());
        let on_get: OnGet = Box::new(move |key| {
            if key.starts_with("blobs/") {
                let mut s = s.lock().unwrap();
                s.insert(key.to_owned());
                let mut m = m.lock().unwrap();
                *m = (*m).max(s.len());
            }
        });
        let on_put: OnPut = Box::new(move |key, _| {
            if key == CHECKPOINT_KEY {
                step.lock().unwrap().clear();
            }
        });
        let watch = Watch { inner: w.meta.clone(), on_get: Arc::new(on_get), on_put: Arc::new(on_put) };
        let gc = Registry::new(w.blobs.clone(), watch, config());
        let o = GcOptions { grace_secs: 0, settle_secs: 0, take_over: true, ..opts() };
        let clock = || T0 + 10;
        let report = gc.gc(&o, &Budget { clock: &clock, deadline: None, max_steps: None }).await.unwrap();
        assert!(report.finished, "{report:?}");
        // 2 images' blobs and the 2 loose ones; manifests' own bytes too.
        assert_eq!((report.links_killed, report.content_deleted), (8, 10), "{report:?}");
        let most = *most.lock().unwrap();
        assert!(most <= o.page, "a step read {most} links of one repository (page {})", o.page);
        for i in 2..4 {
            w.pull("big", &format!("t{i}")).await.unwrap();
        }
        for (_, blobs) in &manifests[..2] {
            for blob in blobs {
                assert!(!w.stored(&crate::hash::sha256_of(blob)).await);
            }
        }
    });
}

/// An index tagged `old` and its five children, condemned by retention (keep_last = 1, a newer
/// tag), spread over pages of 3 manifest keys (in whichever order their digests sort): one run
/// past the settle window deletes all six, every child after the index (a child in an earlier
/// page waits, and the pass runs again).
#[test]
fn condemned_manifests_across_pages_go_in_one_run_parents_first() {
    block_on(async {
        let w = super::retention::world_with("[[policies.retention]]\nrepositories = [\"r\"]\nkeep_last = 1\n");
        let mut children = Vec::new();
        for i in 0..5u8 {
            let (config, layer) = (vec![i + 30; 20], vec![i + 60; 21]);
            w.push_blob("r", &config, T0).await;
            w.push_blob("r", &layer, T0).await;
            let m = image(&config, &[&layer]);
            let d = crate::hash::sha256_of(&m);
            assert_eq!(w.push_manifest("r", &d, &m, IMAGE, T0).await.status(), StatusCode::CREATED);
            children.push(m);
        }
        let refs: Vec<&[u8]> = children.iter().map(Vec::as_slice).collect();
        let idx = index(&refs);
        let idx_digest = crate::hash::sha256_of(&idx);
        assert_eq!(w.push_manifest("r", "old", &idx, INDEX, T0).await.status(), StatusCode::CREATED);
        let (new_config, new_layer) = (b"new-config".as_slice(), b"new-layer".as_slice());
        w.push_blob("r", new_config, T0 + 5).await;
        w.push_blob("r", new_layer, T0 + 5).await;
        assert_eq!(w.push_manifest("r", "new", &image(new_config, &[new_layer]), IMAGE, T0 + 5).await.status(), StatusCode::CREATED);
        let c = T0 + 10;
        let first = collect(&w.gc, &opts(), c).await;
        assert_eq!((first.tags_deleted, first.manifests_condemned), (1, 6), "{first:?}");

        // Every child's tombstone finds the index's already written.
        let index_key = format!("manifests/r@{idx_digest}");
        let checks = Arc::new(Mutex::new(0));
        let (meta, seen) = (w.meta.clone(), checks.clone());
        let on_put: OnPut = Box::new(move |key, value| {
            let tombstone = serde_json::from_slice::<serde_json::Value>(value).is_ok_and(|v| v["deleted"] == true);
            if tombstone && key.starts_with("manifests/r@") && key != index_key {
                // The memory store answers at once: its future needs no runtime.
                let index = futures_util::FutureExt::now_or_never(meta.get(&index_key)).unwrap().unwrap().unwrap();
                let index: serde_json::Value = serde_json::from_slice(&index.value).unwrap();
                assert_eq!(index["deleted"], true, "a child went before its index");
                *seen.lock().unwrap() += 1;
            }
        });
        let watch = Watch { inner: w.meta.clone(), on_get: Arc::new(Box::new(|_| {})), on_put: Arc::new(on_put) };
        let gc = Registry::new(w.blobs.clone(), watch, config()).with_policies(w.gc.policies.clone());
        let clock = || c + SETTLE;
        let o = GcOptions { take_over: true, ..opts() };
        let third = gc.gc(&o, &Budget { clock: &clock, deadline: None, max_steps: None }).await.unwrap();
        assert_eq!(third.manifests_deleted, 6, "{third:?}");
        w.pull("r", "new").await.unwrap();
        assert_eq!(*checks.lock().unwrap(), 5, "not every child's delete was seen");
        for m in children.iter().chain([&idx]) {
            let d = crate::hash::sha256_of(m);
            assert_eq!(w.call(Method::GET, &format!("/v2/r/manifests/{d}"), &[], b"", T0).await.status(), StatusCode::NOT_FOUND);
        }
    });
}
