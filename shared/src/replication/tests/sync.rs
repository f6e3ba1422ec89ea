//! Pull mode (`Registry::sync`, `sync_due`) against the fake remote of the push-mode tests (a
//! second in-memory registry behind Basic auth), with a wrapper that can damage its answers.

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;
use crate::replication::sync::{DueReport, SyncRule, SyncState, STATE};

/// What the wrapper does to GETs whose path contains its text.
#[derive(Clone, Copy)]
enum Fault {
    /// One byte of the body changed (the length kept).
    Flip,
    /// Half the body sent.
    Truncate,
    /// A 500 instead of the answer.
    Fail,
}

struct Remote {
    inner: FakeHttp,
    fault: Mutex<Option<(String, Fault)>>,
    /// Answers 404 to the referrers API, as Distribution (which has none) does.
    no_referrers_api: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Upstream for Remote {
    async fn send(&self, req: UpstreamRequest) -> std::result::Result<UpstreamResponse, String> {
        if self.no_referrers_api.load(std::sync::atomic::Ordering::SeqCst) && req.url.contains("/referrers/") {
            self.inner.0.log.lock().unwrap().push(format!("{} {} (404)", req.method, req.url.trim_start_matches(BASE)));
            return Ok(UpstreamResponse { status: StatusCode::NOT_FOUND, headers: http::HeaderMap::new(), body: stream(b"404 page not found".to_vec()) });
        }
        let damage = self.fault.lock().unwrap().clone().filter(|(p, _)| req.method == http::Method::GET && req.url.contains(p.as_str()));
        let mut r = self.inner.send(req).await?;
        if let (Some((_, fault)), StatusCode::OK) = (damage, r.status) {
            let mut body = crate::body::read_limited(r.body, 1 << 24).await.unwrap().to_vec();
            match fault {
                Fault::Flip => body[10] ^= 1,
                Fault::Truncate => body.truncate(body.len() / 2),
                Fault::Fail => r.status = StatusCode::INTERNAL_SERVER_ERROR,
            }
            r.body = stream(body);
        }
        Ok(r)
    }
}

fn sync_rule() -> SyncRule {
    SyncRule {
        name: "hub".into(),
        source: BASE.into(),
        username: Some("user".into()),
        password: Some(Secret("pass".into())),
        repositories: vec!["lib/app".into()],
        tags: vec!["v*".into()],
        prefix: "mirror".into(),
        every: "60s".into(),
        delete_missing: false,
    }
}

struct Setup {
    remote: Arc<Dest>,
    faults: Arc<Remote>,
    local: Reg,
    client: UpstreamClient,
}

fn sync_setup() -> Setup {
    sync_setup_with(sync_rule())
}

fn sync_setup_with(rule: SyncRule) -> Setup {
    let remote = Arc::new(Dest { reg: memory(), log: Mutex::new(Vec::new()), down: Default::default(), token: Default::default() });
    let faults = Arc::new(Remote { inner: FakeHttp(remote.clone()), fault: Mutex::new(None), no_referrers_api: Default::default() });
    let policies = Policies::new(&PolicyConfig { sync: vec![rule], ..Default::default() }).unwrap();
    let client = UpstreamClient::new(faults.clone());
    Setup { remote, faults, local: memory().with_policies(policies), client }
}

async fn state(local: &Reg) -> SyncState {
    let v = local.meta_store().get(&format!("{STATE}hub")).await.unwrap().unwrap();
    serde_json::from_slice(&v.value).unwrap()
}

async fn index(reg: &Reg, repo: &str, tag: &str) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let amd = image(reg, repo, b"amd64 layer", None).await;
    let arm = image(reg, repo, b"arm64 layer", None).await;
    let index = push_manifest(reg, repo, Some(tag), json!({
        "schemaVersion": 2, "mediaType": crate::manifests::OCI_INDEX, "manifests": [amd, arm]
    }))
    .await;
    (index, amd, arm)
}

#[tokio::test]
async fn a_first_sync_copies_an_image_and_an_index_with_their_digests_and_a_second_only_asks() {
    let Setup { remote, local, client, .. } = sync_setup();
    let one = image(&remote.reg, "lib/app", b"image layer", Some("v1")).await;
    let (idx, amd, arm) = index(&remote.reg, "lib/app", "v2").await;
    image(&remote.reg, "lib/app", b"not matched", Some("latest")).await;

    let report = local.sync(&client, &sync_rule(), 10).await.unwrap();
    assert_eq!(digest_at(&local, "mirror/lib/app", "v1").await.as_deref(), one["digest"].as_str());
    assert_eq!(digest_at(&local, "mirror/lib/app", "v2").await.as_deref(), idx["digest"].as_str());
    for child in [&amd, &arm] {
        let d = child["digest"].as_str().unwrap();
        assert_eq!(digest_at(&local, "mirror/lib/app", d).await.as_deref(), Some(d));
    }
    assert_eq!(digest_at(&local, "mirror/lib/app", "latest").await, None, "tags = [\"v*\"]");
    // Three layers and one config (the three configs are the same bytes), fetched once each.
    let counts = (report.tags, report.synced, report.manifests, report.blobs_fetched, report.blobs_present);
    assert_eq!(counts, (2, 2, 4, 4, 2), "{report:?}");
    // The layer pulls here with its bytes.
    let layer = digest_of(b"image layer");
    let (s, _, body) = send(&local, "GET", &format!("/v2/mirror/lib/app/blobs/{layer}"), "", vec![]).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, &b"image layer"[..]));
    let st = state(&local).await;
    assert_eq!((st.started, st.lease_until, st.last.as_ref().map(|l| l.ok)), (10, 0, Some(true)));

    // Nothing moved: a tag list, one HEAD per tag and its referrers (new signatures), nothing
    // fetched.
    remote.log.lock().unwrap().clear();
    let again = local.sync(&client, &sync_rule(), 11).await.unwrap();
    assert_eq!((again.tags, again.unchanged, again.synced, again.blobs_fetched), (2, 2, 0, 0), "{again:?}");
    let log = remote.log.lock().unwrap().clone();
    assert!(log.iter().all(|l| l.starts_with("GET /v2/lib/app/tags/list")
        || l.starts_with("HEAD /v2/lib/app/manifests/v")
        || l.starts_with("GET /v2/lib/app/referrers/")), "{log:?}");
    assert_eq!(log.iter().filter(|l| l.starts_with("HEAD")).count(), 2, "{log:?}");
    assert_eq!(log.iter().filter(|l| l.contains("/referrers/")).count(), 2, "{log:?}");

    // A tag moved there is moved here; what the repository has is not fetched again.
    let moved = image(&remote.reg, "lib/app", b"image layer, rebuilt", Some("v1")).await;
    let third = local.sync(&client, &sync_rule(), 12).await.unwrap();
    assert_eq!((third.synced, third.unchanged, third.blobs_fetched), (1, 1, 2), "{third:?}");
    assert_eq!(digest_at(&local, "mirror/lib/app", "v1").await.as_deref(), moved["digest"].as_str());
}

#[tokio::test]
async fn a_manifest_or_blob_that_does_not_match_its_digest_stores_nothing_and_is_the_status() {
    let Setup { remote, faults, local, client } = sync_setup();
    let one = image(&remote.reg, "lib/app", b"a layer", Some("v1")).await;
    let d = one["digest"].as_str().unwrap().to_owned();

    *faults.fault.lock().unwrap() = Some(("/manifests/".into(), Fault::Flip));
    let err = local.sync(&client, &sync_rule(), 10).await.unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_GATEWAY);
    assert!(err.message.contains("lib/app:v1") && err.message.contains("nothing was stored"), "{}", err.message);
    assert_eq!(digest_at(&local, "mirror/lib/app", "v1").await, None);
    assert_eq!(digest_at(&local, "mirror/lib/app", &d).await, None);
    let st = state(&local).await;
    let last = st.last.unwrap();
    assert!(!last.ok && last.error.unwrap().contains("nothing was stored"));
    assert_eq!((last.report.failed, last.report.synced), (1, 0));

    // The layer cut short on the way: refused before it is linked; the manifest not stored.
    let layer = digest_of(b"a layer");
    *faults.fault.lock().unwrap() = Some((format!("/blobs/{layer}"), Fault::Truncate));
    let err = local.sync(&client, &sync_rule(), 11).await.unwrap_err();
    assert!(err.message.contains(&layer) && err.message.contains("nothing was stored"), "{}", err.message);
    assert_eq!(digest_at(&local, "mirror/lib/app", "v1").await, None);
    let (s, _, _) = send(&local, "HEAD", &format!("/v2/mirror/lib/app/blobs/{layer}"), "", vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Repaired there: the next run copies it.
    *faults.fault.lock().unwrap() = None;
    local.sync(&client, &sync_rule(), 12).await.unwrap();
    assert_eq!(digest_at(&local, "mirror/lib/app", "v1").await, Some(d));
    assert!(state(&local).await.last.unwrap().ok);
}

#[tokio::test]
async fn sync_due_runs_a_rule_once_per_interval_and_not_while_another_caller_holds_it() {
    let Setup { remote, local, client, .. } = sync_setup();
    image(&remote.reg, "lib/app", b"a layer", Some("v1")).await;

    // Two callers at once (two isolates of one cron): one runs the rule.
    let (a, b) = tokio::join!(local.sync_due(&client, 100), local.sync_due(&client, 100));
    assert_eq!(a.unwrap().ran + b.unwrap().ran, 1);
    assert!(digest_at(&local, "mirror/lib/app", "v1").await.is_some());
    assert_eq!(local.sync_due(&client, 159).await.unwrap().ran, 0, "every = 60s");
    remote.log.lock().unwrap().clear();
    assert_eq!(local.sync_due(&client, 160).await.unwrap().ran, 1);
    assert!(!remote.log.lock().unwrap().is_empty());

    // A run under way elsewhere (its lease) keeps the rule even past the interval.
    let key = format!("{STATE}hub");
    let leased = SyncState { rule: "hub".into(), started: 160, lease_until: 1000, last: None };
    local.meta_store().put(&key, serde_json::to_vec(&leased).unwrap().into(), Precondition::None).await.unwrap();
    assert_eq!(local.sync_due(&client, 300).await.unwrap().ran, 0);
    assert_eq!(local.release_sync_leases().await.unwrap(), 1);
    assert_eq!(local.sync_due(&client, 300).await.unwrap(), DueReport { ran: 1, failed: 0 });
    assert_eq!(state(&local).await.lease_until, 0, "released after the run");
}

fn digest(v: &serde_json::Value) -> String {
    v["digest"].as_str().unwrap().to_owned()
}

/// An artifact of `subject` (a signature, an SBOM) pushed by digest, with a blob of its own.
async fn artifact(reg: &Reg, repo: &str, kind: &str, content: &[u8], subject: &serde_json::Value) -> serde_json::Value {
    let mut empty = push_blob(reg, repo, b"{}").await;
    empty["mediaType"] = json!("application/vnd.oci.empty.v1+json");
    let layer = push_blob(reg, repo, content).await;
    push_manifest(reg, repo, None, json!({
        "schemaVersion": 2, "mediaType": crate::manifests::OCI_MANIFEST, "artifactType": kind,
        "config": empty, "layers": [layer], "subject": subject
    }))
    .await
}

/// What this registry's referrers API lists under `subject`, sorted.
async fn referrers_here(reg: &Reg, repo: &str, subject: &str) -> Vec<String> {
    let (s, _, body) = send(reg, "GET", &format!("/v2/{repo}/referrers/{subject}"), "", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut out: Vec<String> = index["manifests"].as_array().unwrap().iter().map(digest).collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn referrers_of_a_synced_index_and_its_children_follow_through_the_referrers_api() {
    let Setup { remote, local, client, .. } = sync_setup();
    let (idx, amd, _) = index(&remote.reg, "lib/app", "v2").await;
    let sig = artifact(&remote.reg, "lib/app", "application/vnd.example.sig", b"signature of the index", &idx).await;
    let sbom = artifact(&remote.reg, "lib/app", "application/spdx+json", b"sbom of amd64", &amd).await;
    let sbom_sig = artifact(&remote.reg, "lib/app", "application/vnd.example.sig", b"signature of the sbom", &sbom).await;

    let report = local.sync(&client, &sync_rule(), 10).await.unwrap();
    assert_eq!((report.synced, report.referrers), (1, 3), "{report:?}");
    let here = "mirror/lib/app";
    assert_eq!(referrers_here(&local, here, &digest(&idx)).await, [digest(&sig)]);
    assert_eq!(referrers_here(&local, here, &digest(&amd)).await, [digest(&sbom)]);
    assert_eq!(referrers_here(&local, here, &digest(&sbom)).await, [digest(&sbom_sig)], "a referrer's referrer");
    let layer = digest_of(b"signature of the index");
    let (s, _, body) = send(&local, "GET", &format!("/v2/{here}/blobs/{layer}"), "", vec![]).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, &b"signature of the index"[..]), "its blobs came first");
    let log = remote.log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.contains("/manifests/sha256-")), "the API answered: no tag schema: {log:?}");

    // Signed after the sync: the next run finds the signature though the tag did not move.
    let later = artifact(&remote.reg, "lib/app", "application/vnd.example.sig", b"a second signature", &idx).await;
    let again = local.sync(&client, &sync_rule(), 11).await.unwrap();
    assert_eq!((again.unchanged, again.synced, again.referrers), (1, 0, 1), "{again:?}");
    assert_eq!(referrers_here(&local, here, &digest(&idx)).await, sorted(vec![digest(&sig), digest(&later)]));
}

#[tokio::test]
async fn without_a_referrers_api_the_tag_schema_is_asked_and_a_referrer_of_another_subject_is_refused() {
    let Setup { remote, faults, local, client } = sync_setup();
    faults.no_referrers_api.store(true, std::sync::atomic::Ordering::SeqCst);
    let one = image(&remote.reg, "lib/app", b"image layer", Some("v1")).await;
    let sig = artifact(&remote.reg, "lib/app", "application/vnd.example.sig", b"signature", &one).await;
    // What `oras attach` and cosign write where there is no API: an index under sha256-<hex>.
    let schema = digest(&one).replace(':', "-");
    let listing = |m: Vec<&serde_json::Value>| json!({ "schemaVersion": 2, "mediaType": crate::manifests::OCI_INDEX, "manifests": m });
    push_manifest(&remote.reg, "lib/app", Some(&schema), listing(vec![&sig])).await;

    let report = local.sync(&client, &sync_rule(), 10).await.unwrap();
    assert_eq!((report.synced, report.referrers), (1, 1), "{report:?}");
    assert_eq!(referrers_here(&local, "mirror/lib/app", &digest(&one)).await, [digest(&sig)]);
    assert_eq!(digest_at(&local, "mirror/lib/app", &schema).await, None, "tags = [\"v*\"]: the schema's tag is not copied");
    let log = remote.log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|l| l.contains("/referrers/")).count(), 1, "one 404, then the tag schema only: {log:?}");
    assert!(log.contains(&format!("GET /v2/lib/app/manifests/{schema}")), "{log:?}");

    // A manifest listed there whose subject is another: refused before its blobs are fetched.
    let other = image(&remote.reg, "lib/app", b"another image", None).await;
    let liar = artifact(&remote.reg, "lib/app", "application/vnd.example.sig", b"about another image", &other).await;
    push_manifest(&remote.reg, "lib/app", Some(&schema), listing(vec![&sig, &liar])).await;
    let err = local.sync(&client, &sync_rule(), 11).await.unwrap_err();
    assert!(err.message.contains("is listed as a referrer of") && err.message.contains("nothing was stored"), "{}", err.message);
    assert_eq!(digest_at(&local, "mirror/lib/app", &digest(&liar)).await, None);
    let (s, _, _) = send(&local, "HEAD", &format!("/v2/mirror/lib/app/blobs/{}", digest_of(b"about another image")), "", vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(referrers_here(&local, "mirror/lib/app", &digest(&one)).await, [digest(&sig)]);
}

#[tokio::test]
async fn delete_missing_removes_the_rules_tags_gone_from_a_complete_tag_list_and_a_failed_list_removes_nothing() {
    let rule = SyncRule { delete_missing: true, ..sync_rule() };
    let Setup { remote, faults, local, client } = sync_setup_with(rule.clone());
    let one = image(&remote.reg, "lib/app", b"one", Some("v1")).await;
    let two = image(&remote.reg, "lib/app", b"two", Some("v2")).await;
    let three = image(&remote.reg, "lib/app", b"three", Some("v3")).await;
    local.sync(&client, &rule, 10).await.unwrap();
    let here = "mirror/lib/app";
    // Pushed here: a tag in the rule's scope, one out of it, and v3 moved (the pusher's now).
    let own = image(&local, here, b"local", Some("v9")).await;
    image(&local, here, b"local", Some("latest")).await;
    let moved = image(&local, here, b"three, here", Some("v3")).await;
    assert_ne!(digest(&moved), digest(&three));
    for tag in ["v2", "v3"] {
        let (s, _, _) = send(&remote.reg, "DELETE", &format!("/v2/lib/app/manifests/{tag}"), "", vec![]).await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }

    // The tag list fails (a 500; a body cut short): nothing is removed.
    for (at, fault) in [(11, Fault::Fail), (12, Fault::Truncate)] {
        *faults.fault.lock().unwrap() = Some(("/tags/list".into(), fault));
        let err = local.sync(&client, &rule, at).await.unwrap_err();
        assert!(err.message.starts_with("lib/app:"), "{}", err.message);
        assert_eq!(digest_at(&local, here, "v2").await, Some(digest(&two)));
        assert_eq!(state(&local).await.last.unwrap().report.deleted, 0);
    }
    *faults.fault.lock().unwrap() = None;
    let report = local.sync(&client, &rule, 13).await.unwrap();
    assert_eq!((report.deleted, report.tags, report.unchanged), (1, 1, 1), "{report:?}");
    assert_eq!(digest_at(&local, here, "v2").await, None, "the rule's, gone there: removed");
    assert_eq!(digest_at(&local, here, &digest(&two)).await, Some(digest(&two)), "the manifest stays (untagged)");
    assert_eq!(digest_at(&local, here, "v1").await, Some(digest(&one)));
    assert_eq!(digest_at(&local, here, "v3").await, Some(digest(&moved)), "pushed here since: kept");
    assert_eq!(digest_at(&local, here, "v9").await, Some(digest(&own)), "never the rule's: kept");
    assert!(digest_at(&local, here, "latest").await.is_some(), "out of the rule's tags: kept");
    assert_eq!(local.sync(&client, &rule, 14).await.unwrap().deleted, 0, "once");

    // Off (the default): a tag gone there stays here.
    send(&remote.reg, "DELETE", "/v2/lib/app/manifests/v1", "", vec![]).await;
    assert_eq!(local.sync(&client, &sync_rule(), 15).await.unwrap().deleted, 0);
    assert_eq!(digest_at(&local, here, "v1").await, Some(digest(&one)));
}

#[tokio::test]
async fn a_sync_run_is_one_replication_event_per_tag_copied_removed_or_failed_and_no_push_event() {
    use crate::webhooks::HookKind;
    let rule = SyncRule { delete_missing: true, ..sync_rule() };
    let Setup { remote, faults, local, client } = sync_setup_with(rule.clone());
    let text = r#"
        [[webhooks.endpoints]]
        name = "ops"
        url = "https://hooks.example/a"
        secret = "0123456789abcdef-secret"
        events = ["replication_done", "replication_failed", "push", "tag"]
    "#;
    let local = local.with_webhooks(crate::webhooks::Webhooks::from_settings(None, Some(text), "https://local.example").unwrap());
    let one = image(&remote.reg, "lib/app", b"one", Some("v1")).await;
    let two = image(&remote.reg, "lib/app", b"two", Some("v2")).await;

    local.sync(&client, &rule, 10).await.unwrap();
    let events: Vec<_> = hook_entries(&local).await.into_iter().map(|d| d.event).collect();
    let mut tags: Vec<_> = events.iter().map(|e| (e.kind, e.tag.clone().unwrap_or_default(), e.digest.clone().unwrap_or_default())).collect();
    tags.sort_by_key(|t| t.1.clone());
    assert_eq!(tags, [(HookKind::ReplicationDone, "v1".into(), digest(&one)), (HookKind::ReplicationDone, "v2".into(), digest(&two))],
               "one event per tag copied, no push or tag event: {events:?}");
    let e = &events[0];
    assert_eq!((e.repository.as_deref(), e.at, e.actor.as_str()), (Some("mirror/lib/app"), 10, super::events::ACTOR));
    let detail = e.detail.as_ref().unwrap();
    assert_eq!((detail["rule"].as_str(), detail["action"].as_str(), detail["source"].as_str(), detail["sourceRepository"].as_str()),
               (Some("hub"), Some("sync"), Some(BASE), Some("lib/app")));
    assert_eq!(detail["report"]["manifests"], 1, "{detail}");

    // Nothing moved: no event.
    local.sync(&client, &rule, 11).await.unwrap();
    assert_eq!(hook_entries(&local).await.len(), 2);
    // The tag did not move but a signature of it came: an event for it, with its count.
    artifact(&remote.reg, "lib/app", "application/vnd.example.sig", b"signature", &two).await;
    local.sync(&client, &rule, 11).await.unwrap();
    let signed: Vec<_> = hook_entries(&local).await.into_iter().map(|d| d.event).filter(|e| e.at == 11).collect();
    assert_eq!(signed.len(), 1, "{signed:?}");
    assert_eq!((signed[0].kind, signed[0].tag.as_deref(), signed[0].digest.clone()), (HookKind::ReplicationDone, Some("v2"), Some(digest(&two))));
    assert_eq!(signed[0].detail.as_ref().unwrap()["report"]["referrers"], 1);

    // A tag that fails: replication_failed, with why.
    image(&remote.reg, "lib/app", b"one, rebuilt", Some("v1")).await;
    *faults.fault.lock().unwrap() = Some(("/manifests/sha256:".into(), Fault::Flip));
    local.sync(&client, &rule, 12).await.unwrap_err();
    let events: Vec<_> = hook_entries(&local).await.into_iter().map(|d| d.event).filter(|e| e.at == 12).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].kind, events[0].tag.as_deref()), (HookKind::ReplicationFailed, Some("v1")));
    assert!(events[0].detail.as_ref().unwrap()["error"].as_str().unwrap().contains("nothing was stored"));

    // A tag removed (delete_missing): replication_done, action delete, with the digest it named.
    *faults.fault.lock().unwrap() = None;
    send(&remote.reg, "DELETE", "/v2/lib/app/manifests/v2", "", vec![]).await;
    local.sync(&client, &rule, 13).await.unwrap();
    let mut events: Vec<_> = hook_entries(&local).await.into_iter().map(|d| d.event).filter(|e| e.at == 13).collect();
    events.sort_by_key(|e| e.tag.clone());
    let kinds: Vec<_> = events.iter().map(|e| (e.kind, e.tag.clone().unwrap(), e.detail.as_ref().unwrap()["action"].as_str().unwrap().to_owned())).collect();
    assert_eq!(kinds, [(HookKind::ReplicationDone, "v1".into(), "sync".into()), (HookKind::ReplicationDone, "v2".into(), "delete".into())]);
    assert_eq!(events[1].digest, Some(digest(&two)));
}
