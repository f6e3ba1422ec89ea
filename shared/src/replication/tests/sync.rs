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
}

struct Remote {
    inner: FakeHttp,
    fault: Mutex<Option<(String, Fault)>>,
}

#[async_trait::async_trait]
impl Upstream for Remote {
    async fn send(&self, req: UpstreamRequest) -> std::result::Result<UpstreamResponse, String> {
        let damage = self.fault.lock().unwrap().clone().filter(|(p, _)| req.method == http::Method::GET && req.url.contains(p.as_str()));
        let mut r = self.inner.send(req).await?;
        if let (Some((_, fault)), StatusCode::OK) = (damage, r.status) {
            let mut body = crate::body::read_limited(r.body, 1 << 24).await.unwrap().to_vec();
            match fault {
                Fault::Flip => body[10] ^= 1,
                Fault::Truncate => body.truncate(body.len() / 2),
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
    }
}

struct Setup {
    remote: Arc<Dest>,
    faults: Arc<Remote>,
    local: Reg,
    client: UpstreamClient,
}

fn sync_setup() -> Setup {
    let remote = Arc::new(Dest { reg: memory(), log: Mutex::new(Vec::new()), down: Default::default(), token: Default::default() });
    let faults = Arc::new(Remote { inner: FakeHttp(remote.clone()), fault: Mutex::new(None) });
    let policies = Policies::new(&PolicyConfig { sync: vec![sync_rule()], ..Default::default() }).unwrap();
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

    // Nothing moved: a tag list and one HEAD per tag, nothing fetched.
    remote.log.lock().unwrap().clear();
    let again = local.sync(&client, &sync_rule(), 11).await.unwrap();
    assert_eq!((again.tags, again.unchanged, again.synced, again.blobs_fetched), (2, 2, 0, 0), "{again:?}");
    let log = remote.log.lock().unwrap().clone();
    assert!(log.iter().all(|l| l.starts_with("GET /v2/lib/app/tags/list") || l.starts_with("HEAD /v2/lib/app/manifests/v")), "{log:?}");
    assert_eq!(log.iter().filter(|l| l.starts_with("HEAD")).count(), 2, "{log:?}");

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
