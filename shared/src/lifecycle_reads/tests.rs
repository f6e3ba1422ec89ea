//! The webhook state endpoint on the memory stores (the retention preview is tested beside
//! GC's retention, with its helpers: gc/tests/retention.rs).

use bytes::Bytes;
use serde_json::{json, Value};

use super::without_userinfo;
use crate::memory::{MemoryBlobStore, MemoryMetaStore};
use crate::storage::{MetaStore, Precondition};
use crate::webhooks::outbox::{DUE, FAILED};
use crate::webhooks::Webhooks;
use crate::{Body, Config, Registry, RequestContext};

const HOOKS: &str = r#"
[webhooks]
[[webhooks.endpoints]]
name = "ci"
url = "http://127.0.0.1:9/hook?x=1"
secret = "0123456789abcdef-secret"
allow_private = true
repositories = ["team/**"]
events = ["push", "delete"]
"#;

fn registry(hooks: Option<&str>) -> Registry<MemoryBlobStore, MemoryMetaStore> {
    let reg = Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(b"s".to_vec()));
    match hooks {
        Some(text) => reg.with_webhooks(Webhooks::from_settings(None, Some(text), "https://r.example").unwrap()),
        None => reg,
    }
}

async fn get(reg: &Registry<MemoryBlobStore, MemoryMetaStore>, uri: &str) -> (u16, Value) {
    let req = http::Request::builder().uri(uri).body(crate::body::empty_stream()).unwrap();
    let res = reg.handle(req, RequestContext { now: 1_700_000_100, random: [1; 16] }).await;
    let status = res.status().as_u16();
    let body = match res.into_body() {
        Body::Full(b) => serde_json::from_slice(&b).unwrap_or_default(),
        _ => Value::Null,
    };
    (status, body)
}

fn delivery(i: usize) -> Value {
    json!({
        "event": { "id": format!("ev{i:04}"), "kind": "push", "at": 1_700_000_000u64 + i as u64, "repository": "team/app",
                   "tag": "v1", "digest": "sha256:00", "actor": "alice" },
        "endpoint": "ci", "attempts": 8, "next_at": 0, "last_error": "connection refused",
    })
}

async fn put(reg: &Registry<MemoryBlobStore, MemoryMetaStore>, key: String, value: &Value) {
    let bytes = Bytes::from(serde_json::to_vec(value).unwrap());
    reg.meta_store().put(&key, bytes, Precondition::None).await.unwrap();
}

#[tokio::test]
async fn webhook_state_shows_endpoints_without_secrets_and_failed_deliveries_in_pages() {
    let reg = registry(Some(HOOKS));
    for i in 0..105 {
        put(&reg, format!("{FAILED}ev{i:04}.ci"), &delivery(i)).await;
    }
    for i in 0..3 {
        put(&reg, format!("{DUE}{:012}-due{i}.ci", 1_700_000_000 + i), &delivery(i as usize)).await;
    }
    let (status, body) = get(&reg, "/v2/_berth/webhooks").await;
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(!text.contains("0123456789abcdef"), "a secret leaked: {text}");
    assert_eq!(
        body["endpoints"],
        json!([{ "name": "ci", "url": "http://127.0.0.1:9/hook?x=1", "events": ["push", "delete"], "repositories": ["team/**"] }])
    );
    let failed = body["failed"].as_array().unwrap();
    assert_eq!((failed.len(), body["moreFailed"].as_bool()), (super::MAX_FAILED, Some(true)));
    let first = &failed[0];
    assert_eq!(first["id"], "ev0000.ci");
    assert_eq!((first["event"].as_str(), first["repository"].as_str()), (Some("push"), Some("team/app")));
    assert_eq!((first["attempts"].as_u64(), first["lastError"].as_str()), (Some(8), Some("connection refused")));
    assert_eq!(first["at"], 1_700_000_000u64);
    assert_eq!((body["pending"].as_u64(), body["morePending"].as_bool()), (Some(3), Some(false)));
    // The next page starts after `last`.
    let (_, body) = get(&reg, "/v2/_berth/webhooks?last=ev0099.ci").await;
    let ids: Vec<_> = body["failed"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["ev0100.ci", "ev0101.ci", "ev0102.ci", "ev0103.ci", "ev0104.ci"]);
    assert_eq!(body["moreFailed"], false);
}

#[tokio::test]
async fn webhook_state_without_webhooks_is_empty() {
    let (status, body) = get(&registry(None), "/v2/_berth/webhooks").await;
    assert_eq!((status, body), (200, json!({ "endpoints": [], "failed": [], "pending": 0 })));
}

#[test]
fn userinfo_is_stripped_from_urls() {
    assert_eq!(without_userinfo("https://u:p@h.example:8443/a@b"), "https://h.example:8443/a@b");
    assert_eq!(without_userinfo("https://h.example/x"), "https://h.example/x");
    assert_eq!(without_userinfo("http://a@b@h/"), "http://h/");
    assert_eq!(without_userinfo("no scheme"), "no scheme");
}

const RULES: &str = r#"
[[replication]]
name = "dr"
repositories = ["team/**"]
destination = "https://dr.example"
username = "robot"
password = "hunter2-password"
prefix = "copies"
deletes = true

[[replication]]
name = "nightly"
repositories = ["public/*"]
tags = ["v*"]
destination = "https://other.example"
on_push = false
"#;

fn replicating() -> Registry<MemoryBlobStore, MemoryMetaStore> {
    let config: crate::policy::PolicyConfig = toml::from_str(RULES).unwrap();
    registry(None).with_policies(crate::policy::Policies::new(&config).unwrap())
}

#[tokio::test]
async fn replication_state_shows_rules_without_credentials_their_last_results_and_the_outbox() {
    use crate::replication::outbox::QUEUE;
    let reg = replicating();
    let last = json!({ "rule": "dr", "at": 1_700_000_050u64, "repository": "team/app", "reference": "v1", "ok": false,
                       "error": "dr.example: 503 Service Unavailable" });
    put(&reg, format!("{}dr", crate::replication::STATUS), &last).await;
    for i in 0..2 {
        let mut d = delivery(i);
        d["endpoint"] = json!("dr");
        put(&reg, format!("{}ev{i:04}.dr", QUEUE.failed), &d).await;
    }
    put(&reg, format!("{}{:012}-due0.dr", QUEUE.due, 1_700_000_000), &delivery(0)).await;
    // A webhook delivery is in another queue: not counted here.
    put(&reg, format!("{FAILED}ev0009.ci"), &delivery(9)).await;

    let (status, body) = get(&reg, "/v2/_berth/replication").await;
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(!text.contains("hunter2") && !text.contains("robot"), "a credential leaked: {text}");
    let rules = body["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["name"], "dr");
    assert_eq!(rules[0]["destination"], "https://dr.example");
    assert_eq!((rules[0]["prefix"].as_str(), rules[0]["deletes"].as_bool(), rules[0]["onPush"].as_bool()), (Some("copies"), Some(true), Some(true)));
    assert_eq!(rules[0]["last"]["ok"], false);
    assert_eq!(rules[0]["last"]["error"], "dr.example: 503 Service Unavailable");
    assert_eq!((rules[1]["name"].as_str(), rules[1]["onPush"].as_bool()), (Some("nightly"), Some(false)));
    assert_eq!(rules[1]["tags"], json!(["v*"]));
    assert_eq!(rules[1]["last"], Value::Null, "a rule never run has no last result");
    let failed: Vec<_> = body["failed"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(failed, ["ev0000.dr", "ev0001.dr"]);
    assert_eq!((body["pending"].as_u64(), body["moreFailed"].as_bool()), (Some(1), Some(false)));
    // Paged like the webhooks' failed deliveries.
    let (_, body) = get(&reg, "/v2/_berth/replication?last=ev0000.dr").await;
    assert_eq!(body["failed"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn replication_state_without_rules_is_empty() {
    let (status, body) = get(&registry(None), "/v2/_berth/replication").await;
    assert_eq!((status, body), (200, json!({ "rules": [], "sync": [], "failed": [], "pending": 0 })));
}

#[tokio::test]
async fn replication_state_shows_sync_rules_without_credentials_and_their_last_run() {
    let config: crate::policy::PolicyConfig = toml::from_str(
        r#"
[[sync]]
name = "hub"
source = "https://hub.example"
username = "robot"
password = "hunter2-password"
repositories = ["library/alpine"]
tags = ["3.*"]
prefix = "hub"
every = "1h"

[[sync]]
name = "later"
source = "https://other.example"
repositories = ["x/y"]
every = "1d"
"#,
    )
    .unwrap();
    let reg = registry(None).with_policies(crate::policy::Policies::new(&config).unwrap());
    let state = json!({ "rule": "hub", "started": 1_700_000_050u64, "lease_until": 0,
                        "last": { "at": 1_700_000_050u64, "ok": false, "error": "library/alpine:3.19: digest mismatch",
                                  "report": { "tags": 2, "unchanged": 1, "synced": 0, "failed": 1, "manifests": 0,
                                              "blobs_fetched": 0, "blobs_present": 0, "bytes_fetched": 0 } } });
    put(&reg, format!("{}hub", crate::replication::sync::STATE), &state).await;
    let (status, body) = get(&reg, "/v2/_berth/replication").await;
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(!text.contains("hunter2") && !text.contains("robot"), "a credential leaked: {text}");
    assert_eq!(body["rules"], json!([]));
    let sync = body["sync"].as_array().unwrap();
    assert_eq!((sync[0]["name"].as_str(), sync[0]["source"].as_str(), sync[0]["every"].as_str()), (Some("hub"), Some("https://hub.example"), Some("1h")));
    assert_eq!((sync[0]["started"].as_u64(), sync[0]["running"].as_bool()), (Some(1_700_000_050), Some(false)));
    assert_eq!(sync[0]["last"]["error"], "library/alpine:3.19: digest mismatch");
    assert_eq!(sync[0]["last"]["report"]["unchanged"], 1);
    assert_eq!((sync[1]["name"].as_str(), &sync[1]["last"]), (Some("later"), &Value::Null));
}
