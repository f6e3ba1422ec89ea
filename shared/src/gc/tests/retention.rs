//! Retention inside a GC run (docs/gc.md, "Retention"), on the memory stores: what a rule
//! lets go is deleted through GC's safe path, the rest pulls, a dry run writes nothing, an
//! interrupted run finishes, and quotas shrink afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::policy::Policies;

const DAY: u64 = 86_400;

pub(super) fn world_with(policy: &str) -> World {
    let policies = Arc::new(Policies::from_policy_file(policy).expect("policy"));
    let blobs = MemoryBlobStore::new();
    let meta = MemoryMetaStore::new();
    let hook = Arc::new(Mutex::new(None));
    let reg = Registry::new(blobs.clone(), HookMeta { inner: meta.clone(), hook: hook.clone() }, config())
        .with_policies(policies.clone());
    let gc = Arc::new(Registry::new(blobs.clone(), meta.clone(), config()).with_policies(policies));
    World { reg, gc, hook, blobs, meta }
}

/// As `berth gc` on a stopped server: no settle window, no grace, so one run removes all.
fn at_once() -> GcOptions {
    GcOptions { grace_secs: 0, settle_secs: 0, ..opts() }
}

const KEEP_LAST_2: &str = "[[policies.retention]]\nrepositories = [\"r\", \"s\"]\nkeep_last = 2\n";

/// An image of its own (config and layer from `seed`), pushed as `reference` at `now`.
/// Returns its manifest's digest and its layer's digest.
async fn push_image(w: &World, repo: &str, reference: &str, seed: u8, now: u64) -> (String, String) {
    let (config, layer) = (vec![seed; 10 + seed as usize], vec![seed; 1500]);
    assert_eq!(w.push_blob(repo, &config, now).await, StatusCode::CREATED);
    assert_eq!(w.push_blob(repo, &layer, now).await, StatusCode::CREATED);
    let manifest = image(&config, &[&layer]);
    let digest = crate::hash::sha256_of(&manifest);
    let reference = if reference.is_empty() { digest.as_str() } else { reference };
    assert_eq!(w.push_manifest(repo, reference, &manifest, IMAGE, now).await.status(), StatusCode::CREATED);
    (digest, crate::hash::sha256_of(&layer))
}

async fn tags(w: &World, repo: &str) -> Vec<String> {
    let resp = w.call(Method::GET, &format!("/v2/{repo}/tags/list"), &[], b"", T0).await;
    let json: serde_json::Value = serde_json::from_slice(&body_of(resp).await).unwrap();
    json["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect()
}

async fn manifest_status(w: &World, repo: &str, digest: &str) -> StatusCode {
    w.call(Method::GET, &format!("/v2/{repo}/manifests/{digest}"), &[], b"", T0).await.status()
}

/// Four tags t1..t4 pushed a second apart into `repo`; their (manifest, layer) digests.
async fn four_tags(w: &World, repo: &str, seed: u8) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 1..=4u8 {
        out.push(push_image(w, repo, &format!("t{i}"), seed + i, T0 + u64::from(i)).await);
    }
    out
}

/// After retention with keep_last = 2: t1 and t2 are gone with their manifests and content,
/// t3 and t4 pull.
async fn only_the_newest_two_left(w: &World, repo: &str, images: &[(String, String)]) {
    assert_eq!(tags(w, repo).await, ["t3", "t4"]);
    for (manifest, layer) in &images[..2] {
        assert_eq!(manifest_status(w, repo, manifest).await, StatusCode::NOT_FOUND);
        assert!(!w.stored(manifest).await && !w.stored(layer).await, "content of {manifest} left");
    }
    for tag in ["t3", "t4"] {
        w.pull(repo, tag).await.unwrap_or_else(|e| panic!("{repo}:{tag}: {e}"));
    }
}

/// keep_last = 2 over four tags: the two oldest tags go at once; their manifests are condemned
/// (still pulling) and deleted a settle window later, their content after that.
#[test]
fn keep_last_two_of_four_deletes_the_two_oldest_and_their_manifests() {
    block_on(async {
        let w = world_with(KEEP_LAST_2);
        let images = four_tags(&w, "r", 0).await;
        let first = collect(&w.gc, &opts(), T0 + 100).await;
        assert_eq!((first.retention_repositories, first.tags_deleted, first.manifests_condemned), (1, 2, 2), "{first:?}");
        assert_eq!(first.manifests_deleted, 0, "deleted inside the settle window: {first:?}");
        assert_eq!(tags(&w, "r").await, ["t3", "t4"]);
        for (manifest, _) in &images[..2] {
            assert_eq!(manifest_status(&w, "r", manifest).await, StatusCode::OK, "condemned is still live");
        }
        let second = collect(&w.gc, &opts(), T0 + 100 + SETTLE).await;
        assert_eq!((second.tags_deleted, second.manifests_deleted), (0, 2), "{second:?}");
        for (manifest, _) in &images[..2] {
            assert_eq!(manifest_status(&w, "r", manifest).await, StatusCode::NOT_FOUND);
        }
        for now in [T0 + 10 * GRACE, T0 + 10 * GRACE + SETTLE, T0 + 10 * GRACE + 2 * SETTLE] {
            collect(&w.gc, &opts(), now).await;
        }
        only_the_newest_two_left(&w, "r", &images).await;
        // Stable: the next run deletes nothing more.
        let again = collect(&w.gc, &opts(), T0 + 20 * GRACE).await;
        assert_eq!((again.tags_deleted, again.manifests_condemned), (0, 0), "{again:?}");
    });
}

/// A `keep_tags` pattern keeps a tag that `keep_last` would let go.
#[test]
fn a_keep_tags_pattern_wins_over_keep_last() {
    block_on(async {
        let policy = "[[policies.retention]]\nrepositories = [\"r\"]\nkeep_last = 1\nkeep_tags = [\"v*\"]\n";
        let w = world_with(policy);
        let mut images = Vec::new();
        for (i, tag) in ["v1", "a", "b", "c"].into_iter().enumerate() {
            images.push(push_image(&w, "r", tag, 10 + i as u8, T0 + i as u64).await);
        }
        let r = collect(&w.gc, &at_once(), T0 + 100).await;
        assert_eq!((r.tags_deleted, r.manifests_deleted), (2, 2), "{r:?}");
        assert_eq!(tags(&w, "r").await, ["c", "v1"]);
        w.pull("r", "v1").await.unwrap();
        w.pull("r", "c").await.unwrap();
        for (manifest, layer) in &images[1..3] {
            assert_eq!(manifest_status(&w, "r", manifest).await, StatusCode::NOT_FOUND);
            assert!(!w.stored(layer).await);
        }
    });
}

/// A manifest with `subject` pointing at `subject_manifest`, whose digest sorts before
/// `below` (so a delete in key order would take it before its subject).
async fn push_referrer(w: &World, subject_manifest: &[u8], below: &str, now: u64) -> String {
    let config = b"{}".as_slice();
    let layer = b"signature".as_slice();
    w.push_blob("r", config, now).await;
    w.push_blob("r", layer, now).await;
    for n in 0.. {
        let mut m: serde_json::Value = serde_json::from_slice(&image(config, &[layer])).unwrap();
        m["subject"] = serde_json::json!({
            "mediaType": IMAGE, "digest": crate::hash::sha256_of(subject_manifest), "size": subject_manifest.len()
        });
        m["annotations"] = serde_json::json!({ "n": n.to_string() });
        let bytes = serde_json::to_vec(&m).unwrap();
        let digest = crate::hash::sha256_of(&bytes);
        if digest.as_str() < below {
            let put = w.push_manifest("r", &digest, &bytes, IMAGE, now).await;
            assert_eq!(put.status(), StatusCode::CREATED);
            return digest;
        }
    }
    unreachable!()
}

/// A referrer goes with its subject, and never before it: when GC writes the referrer's
/// tombstone, the subject's is already written (the referrer's digest sorts first, so a delete
/// in key order fails this).
#[test]
fn referrers_go_with_their_subject_never_before_it() {
    block_on(async {
        let policy = "[[policies.retention]]\nrepositories = [\"r\"]\nkeep_last = 1\n";
        let w = world_with(policy);
        let (config, layer) = (b"old-config".as_slice(), b"old-layer".as_slice());
        w.push_blob("r", config, T0).await;
        w.push_blob("r", layer, T0).await;
        let subject = image(config, &[layer]);
        let subject_digest = crate::hash::sha256_of(&subject);
        w.push_manifest("r", "old", &subject, IMAGE, T0).await;
        let referrer = push_referrer(&w, &subject, &subject_digest, T0 + 1).await;
        let (new, _) = push_image(&w, "r", "new", 40, T0 + 5).await;
        let new_bytes = image(&[40; 50], &[&[40; 1500]]);
        let kept_referrer = push_referrer(&w, &new_bytes, "sha256:g", T0 + 6).await;

        let first = collect(&w.gc, &opts(), T0 + 100).await;
        assert_eq!((first.tags_deleted, first.manifests_condemned), (1, 2), "{first:?}");
        // The referrer's tombstone is the first write of its record from now on.
        let meta = w.meta.clone();
        let subject_key = format!("manifests/r@{subject_digest}");
        let hook: Hook = Box::new(move || {
            Box::pin(async move {
                let record = meta.get(&subject_key).await.unwrap().unwrap();
                let record: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
                assert_eq!(record["deleted"], true, "the referrer went before its subject");
            })
        });
        *w.hook.lock().unwrap() = Some(("put", format!("manifests/r@{referrer}"), hook));
        let clock = || T0 + 100 + SETTLE;
        let gc_opts = GcOptions { take_over: true, ..opts() };
        let second = w.reg.gc(&gc_opts, &Budget { clock: &clock, deadline: None, max_steps: None }).await.unwrap();
        assert!(w.hook_fired(), "the referrer was not deleted");
        assert_eq!(second.manifests_deleted, 2, "{second:?}");
        for gone in [&subject_digest, &referrer] {
            assert_eq!(manifest_status(&w, "r", gone).await, StatusCode::NOT_FOUND);
        }
        for kept in [&new, &kept_referrer] {
            w.pull("r", kept).await.unwrap();
        }
        let listed = w.call(Method::GET, &format!("/v2/r/referrers/{subject_digest}"), &[], b"", T0).await;
        let listed: serde_json::Value = serde_json::from_slice(&body_of(listed).await).unwrap();
        assert_eq!(listed["manifests"].as_array().map(Vec::len), Some(0), "{listed}");
    });
}

/// `delete_untagged_after_days`: an untagged manifest neither pushed nor pulled for D days
/// goes; a younger one, one pulled recently and a tagged one stay; no tag is touched.
#[test]
fn an_untagged_manifest_older_than_the_days_goes() {
    block_on(async {
        let policy = "[[policies.retention]]\nrepositories = [\"r\"]\ndelete_untagged_after_days = 7\n";
        let w = world_with(policy);
        let (old, old_layer) = push_image(&w, "r", "", 1, T0).await;
        let (pulled, _) = push_image(&w, "r", "", 2, T0).await;
        let (young, _) = push_image(&w, "r", "", 3, T0 + 8 * DAY).await;
        push_image(&w, "r", "tagged", 4, T0).await;
        let get = w.call(Method::GET, &format!("/v2/r/manifests/{pulled}"), &[], b"", T0 + 3 * DAY).await;
        assert_eq!(get.status(), StatusCode::OK);
        let r = collect(&w.gc, &at_once(), T0 + 8 * DAY + 100).await;
        assert_eq!((r.tags_deleted, r.manifests_deleted), (0, 1), "{r:?}");
        assert_eq!(manifest_status(&w, "r", &old).await, StatusCode::NOT_FOUND);
        assert!(!w.stored(&old_layer).await);
        for kept in [&pulled, &young] {
            w.pull("r", kept).await.unwrap();
        }
        w.pull("r", "tagged").await.unwrap();
    });
}

/// An immutable tag survives retention, and so does the manifest it names, even when a
/// mutable tag of the same manifest goes.
#[test]
fn an_immutable_tag_survives() {
    block_on(async {
        let policy = "[[policies.immutable_tags]]\nrepositories = [\"r\"]\ntags = [\"v*\"]\n\
                      [[policies.retention]]\nrepositories = [\"r\"]\nkeep_last = 1\n";
        let w = world_with(policy);
        push_image(&w, "r", "v1", 1, T0).await;
        let (shared, _) = push_image(&w, "r", "x", 2, T0 + 1).await;
        push_image(&w, "r", "v2", 2, T0 + 1).await;
        let (old, _) = push_image(&w, "r", "z", 3, T0).await;
        push_image(&w, "r", "y", 4, T0 + 2).await;
        let r = collect(&w.gc, &at_once(), T0 + 100).await;
        assert_eq!((r.tags_deleted, r.manifests_deleted), (2, 1), "{r:?}");
        assert_eq!(tags(&w, "r").await, ["v1", "v2", "y"]);
        assert_eq!(manifest_status(&w, "r", &old).await, StatusCode::NOT_FOUND);
        assert_eq!(manifest_status(&w, "r", &shared).await, StatusCode::OK);
        for tag in ["v1", "v2", "y"] {
            w.pull("r", tag).await.unwrap();
        }
    });
}

/// A dry run reports what retention and the sweep would remove, and writes nothing; the real
/// run then does exactly that.
#[test]
fn a_retention_dry_run_writes_nothing() {
    block_on(async {
        let w = world_with(KEEP_LAST_2);
        let images = four_tags(&w, "r", 0).await;
        let before = w.snapshot().await;
        let dry = collect(&w.gc, &GcOptions { dry_run: true, ..at_once() }, T0 + 100).await;
        assert!(dry.finished && dry.dry_run);
        assert_eq!((dry.tags_deleted, dry.manifests_condemned, dry.manifests_deleted), (2, 2, 2), "{dry:?}");
        assert!(dry.bytes_freed > 3000, "{dry:?}");
        assert!(w.snapshot().await == before, "a dry run wrote something");
        let real = collect(&w.gc, &at_once(), T0 + 100).await;
        assert_eq!((real.tags_deleted, real.manifests_deleted, real.bytes_freed), (2, 2, dry.bytes_freed), "{real:?}");
        only_the_newest_two_left(&w, "r", &images).await;
    });
}

/// A run stopped after any step (an invocation's time limit) leaves every kept image whole,
/// and the next invocation finishes the job.
#[test]
fn a_retention_run_interrupted_between_steps_resumes_and_finishes() {
    block_on(async {
        let now = T0 + 100;
        for stop_after in 0.. {
            let w = world_with(KEEP_LAST_2);
            let r = four_tags(&w, "r", 0).await;
            let s = four_tags(&w, "s", 20).await;
            let clock = move || now;
            let budget = Budget { clock: &clock, deadline: None, max_steps: Some(stop_after) };
            let first = w.gc.gc(&at_once(), &budget).await.unwrap();
            for repo in ["r", "s"] {
                w.pull(repo, "t3").await.unwrap();
                w.pull(repo, "t4").await.unwrap();
            }
            if first.finished {
                assert!(stop_after > 3, "too few steps to interrupt: {first:?}");
                only_the_newest_two_left(&w, "r", &r).await;
                only_the_newest_two_left(&w, "s", &s).await;
                break;
            }
            let rest = collect(&w.gc, &at_once(), now + DEFAULT_LEASE_SECS + 1).await;
            assert!(rest.finished);
            assert_eq!(rest.tags_deleted, 4, "stopped after {stop_after}: {rest:?}");
            only_the_newest_two_left(&w, "r", &r).await;
            only_the_newest_two_left(&w, "s", &s).await;
        }
    });
}

/// A metadata store whose writes fail after a number of them: a GC killed in the middle of a
/// step.
#[derive(Clone)]
struct FailingMeta {
    inner: MemoryMetaStore,
    writes_left: Arc<AtomicUsize>,
}

impl FailingMeta {
    fn write(&self) -> crate::storage::StorageResult<()> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(crate::StorageError::new("killed"));
        }
        self.writes_left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait::async_trait]
impl MetaStore for FailingMeta {
    async fn get(&self, key: &str) -> crate::storage::StorageResult<Option<Versioned>> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> crate::storage::StorageResult<PutOutcome> {
        self.write()?;
        self.inner.put(key, value, cond).await
    }
    async fn delete(&self, key: &str) -> crate::storage::StorageResult<()> {
        self.write()?;
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> crate::storage::StorageResult<Vec<String>> {
        self.inner.list(prefix, after, limit).await
    }
    async fn apply(&self, ops: Vec<crate::storage::BatchOp>) -> crate::storage::StorageResult<Vec<bool>> {
        self.write()?;
        self.inner.apply(ops).await
    }
}

/// A GC killed at any write, in the middle of a step, then run again: retention still deletes
/// exactly the two oldest images (so a step repeated after a crash makes the same plan: the
/// manifests are condemned before their tags go) and every kept image pulls throughout.
#[test]
fn a_retention_run_killed_at_any_write_finishes_on_the_next() {
    block_on(async {
        let now = T0 + 100;
        for writes in 0.. {
            let w = world_with(KEEP_LAST_2);
            let images = four_tags(&w, "r", 0).await;
            let failing = FailingMeta { inner: w.meta.clone(), writes_left: Arc::new(AtomicUsize::new(writes)) };
            let killed = Registry::new(w.blobs.clone(), failing, config()).with_policies(w.gc.policies.clone());
            let clock = move || now;
            let budget = Budget { clock: &clock, deadline: None, max_steps: None };
            let outcome = killed.gc(&GcOptions { take_over: true, ..at_once() }, &budget).await;
            w.pull("r", "t3").await.unwrap();
            w.pull("r", "t4").await.unwrap();
            if outcome.is_ok() {
                assert!(writes > 10, "too few writes to kill: {outcome:?}");
                only_the_newest_two_left(&w, "r", &images).await;
                break;
            }
            // The next run continues; a crash inside a manifest's delete can leave its tags
            // (resolving to nothing) for the run after, whose retention removes them.
            collect(&w.gc, &at_once(), now + 1).await;
            collect(&w.gc, &at_once(), now + 2).await;
            only_the_newest_two_left(&w, "r", &images).await;
        }
    });
}

/// After the sweep the run recounts quotas: usage is what the kept images hold, no more (the
/// links GC has just made dead count for nothing).
#[test]
fn quota_usage_shrinks_after_retention() {
    block_on(async {
        let policy = format!("{KEEP_LAST_2}[[policies.quotas]]\nname = \"team\"\nrepositories = [\"r\"]\nlimit = \"1 GiB\"\n");
        let w = world_with(&policy);
        four_tags(&w, "r", 0).await;
        let used = |w: &World| {
            let gc = w.gc.clone();
            async move { gc.quota_usage().await.unwrap()[0].used }
        };
        let before = used(&w).await;
        let report = collect(&w.gc, &at_once(), T0 + 100).await;
        assert_eq!(report.quotas_recounted, 1, "{report:?}");
        // What t3 and t4 hold: config, layer and manifest each.
        let kept: u64 = [3u8, 4]
            .iter()
            .map(|&s| (10 + s as usize + 1500 + image(&vec![s; 10 + s as usize], &[&vec![s; 1500]]).len()) as u64)
            .sum();
        assert!(before > kept);
        assert_eq!(used(&w).await, kept);
        let dry = collect(&w.gc, &GcOptions { dry_run: true, ..at_once() }, T0 + 200).await;
        assert_eq!(dry.quotas_recounted, 0, "a dry run writes no usage");
    });
}

async fn preview(w: &World, repo: &str, now: u64) -> (StatusCode, serde_json::Value) {
    let resp = w.call(Method::GET, &format!("/v2/{repo}/_berth/retention"), &[], b"", now).await;
    let status = resp.status();
    (status, serde_json::from_slice(&body_of(resp).await).unwrap_or_default())
}

/// `GET /v2/<name>/_berth/retention` answers what a run would delete, planned by the run's
/// own code, and writes nothing: a GC run afterwards deletes exactly that.
#[test]
fn the_retention_preview_is_what_a_run_deletes_and_writes_nothing() {
    block_on(async {
        let w = world_with(KEEP_LAST_2);
        let images = four_tags(&w, "r", 10).await;
        let before = w.snapshot().await.0;
        let (status, body) = preview(&w, "r", T0 + 10).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["rule"], 1);
        let tags: Vec<_> = body["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(tags, ["t1", "t2"]);
        let mut manifests: Vec<_> = body["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned()).collect();
        manifests.sort();
        let mut expected = vec![images[0].0.clone(), images[1].0.clone()];
        expected.sort();
        assert_eq!(manifests, expected);
        assert!(body["tags"][0]["reason"].as_str().unwrap().contains("retention rule 1"), "{body}");
        assert_eq!(w.snapshot().await.0, before, "the preview wrote");
        collect(&w.gc, &at_once(), T0 + 10).await;
        only_the_newest_two_left(&w, "r", &images).await;
        // Nothing left to delete; a repository no rule covers has no rule and nothing to delete.
        let (_, body) = preview(&w, "r", T0 + 10).await;
        assert_eq!((body["tags"].as_array().map(Vec::len), body["manifests"].as_array().map(Vec::len)), (Some(0), Some(0)));
        push_image(&w, "other", "v1", 50, T0).await;
        let (status, body) = preview(&w, "other", T0 + 10).await;
        assert_eq!((status, body["rule"].is_null(), body["tags"].as_array().map(Vec::len)), (StatusCode::OK, true, Some(0)));
        assert_eq!(preview(&w, "nope", T0).await.0, StatusCode::NOT_FOUND);
    });
}

/// A repository with more tags than the preview reads is refused (413), not read whole.
#[test]
fn the_retention_preview_refuses_a_repository_too_large_to_plan() {
    block_on(async {
        let w = world_with(KEEP_LAST_2);
        let (digest, _) = push_image(&w, "r", "t0", 1, T0).await;
        let name = crate::names::RepoName::parse("r").unwrap();
        let record = format!(r#"{{"digest":"{digest}","tagged_at":{T0}}}"#);
        for i in 0..crate::lifecycle_reads::MAX_PREVIEW_ITEMS {
            let key = crate::records::tag_key(&name, &format!("x{i}"));
            w.meta.put(&key, Bytes::from(record.clone()), Precondition::None).await.unwrap();
        }
        let (status, body) = preview(&w, "r", T0).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!((body["errors"][0]["code"].as_str(), body["errors"][0]["detail"]["too_many"].as_str()), (Some("UNSUPPORTED"), Some("tags")));
    });
}
