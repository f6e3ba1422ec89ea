//! Berth's read endpoints for the web interface (docs/ui.md), over HTTP, on any runtime:
//! `GET /v2/<name>/_berth/tags` (tags with digest, media type, size and push time, in pages)
//! and `GET /v2/<name>/_berth/policy` (the rules that apply; none on a registry without
//! policies: the policy case is in tests/policies.rs), `GET /v2/<name>/_berth/retention` (the
//! case with a rule is in tests/policies.rs), `GET /v2/_berth/webhooks` and `GET /v2/_berth/replication`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn tag_details_carry_digest_media_type_size_and_push_time() {
    let repo = repo("details");
    let before = unix_now();
    let one = push_image(&repo, "first").await;
    // Push times are whole seconds: the second push is a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let two = push_docker_image(&repo, "second").await;
    let r = get(format!("/v2/{repo}/_berth/tags")).send().await;
    assert_status(&r, 200);
    let body = r.json();
    assert_eq!(body["name"], repo.as_str());
    let tags = body["tags"].as_array().expect("tags");
    let names: Vec<&str> = tags.iter().map(|t| t["name"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["first", "second"], "name order: {body}");
    let (a, b) = (&tags[0], &tags[1]);
    assert_eq!(a["digest"], one.digest.as_str());
    assert_eq!(a["mediaType"], OCI_MANIFEST);
    assert_eq!(a["size"].as_u64(), Some(one.bytes.len() as u64));
    assert_eq!((b["digest"].as_str(), b["mediaType"].as_str()), (Some(two.digest.as_str()), Some(DOCKER_MANIFEST)));
    let (ta, tb) = (a["pushedAt"].as_u64().expect("pushedAt"), b["pushedAt"].as_u64().expect("pushedAt"));
    assert!(tb > ta, "second pushed after first: {ta} {tb}");
    // The registry's clock, not ours: allow for a little skew.
    assert!(ta + 60 >= before && tb <= unix_now() + 60, "push times {ta} {tb} around {before}");
    assert!(a.get("immutable").is_none(), "no policy here: {a}");
    // Moving a tag is a push of the tag: its time and digest follow.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    push_manifest(&repo, "first", DOCKER_MANIFEST, &two.bytes).await;
    let moved = get(format!("/v2/{repo}/_berth/tags")).send().await.json();
    assert_eq!(moved["tags"][0]["digest"], two.digest.as_str());
    assert!(moved["tags"][0]["pushedAt"].as_u64().unwrap_or(0) > tb, "{moved}");
}

#[tokio::test]
async fn tag_details_come_in_bounded_pages() {
    let repo = repo("details-pages");
    let one = push_image(&repo, "t0").await;
    for t in ["t1", "t2", "t3", "t4"] {
        push_manifest(&repo, t, OCI_MANIFEST, &one.bytes).await;
    }
    let mut seen = Vec::new();
    let mut next = Some(format!("/v2/{repo}/_berth/tags?n=2"));
    let mut pages = 0;
    while let Some(url) = next {
        let r = get(url).send().await;
        assert_status(&r, 200);
        let tags = r.json()["tags"].as_array().cloned().unwrap_or_default();
        assert!(tags.len() <= 2, "n=2 gave {}", tags.len());
        seen.extend(tags.iter().map(|t| t["name"].as_str().unwrap_or_default().to_string()));
        next = next_link(&r);
        pages += 1;
        assert!(pages <= 3, "more pages than 5 tags need");
    }
    assert_eq!(seen, ["t0", "t1", "t2", "t3", "t4"]);
    // Whatever n asks, a page holds at most 100 (one metadata read per tag).
    let r = get(format!("/v2/{repo}/_berth/tags?n=100000")).send().await;
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"].as_array().map(Vec::len), Some(5));
    assert_oci_error(&get(format!("/v2/{repo}/_berth/tags?n=x")).send().await, 400, "PAGINATION_NUMBER_INVALID");
    let unknown = common::repo("never-pushed");
    assert_oci_error(&get(format!("/v2/{unknown}/_berth/tags")).send().await, 404, "NAME_UNKNOWN");
    assert_oci_error(&get(format!("/v2/{unknown}/_berth/policy")).send().await, 404, "NAME_UNKNOWN");
    // Read-only endpoints.
    let r = delete(format!("/v2/{repo}/_berth/tags")).send().await;
    assert_status(&r, 405);
}

#[tokio::test]
async fn the_policy_state_of_a_repository_without_policies_is_empty() {
    let repo = repo("policy-none");
    push_image(&repo, "v1").await;
    let r = get(format!("/v2/{repo}/_berth/policy")).send().await;
    assert_status(&r, 200);
    let body = r.json();
    if body["immutable_tags"].as_array().is_some_and(|a| !a.is_empty()) {
        // A runtime started with tests/tests/policies/policy.toml: covered there.
        return skip("this registry runs with policies; see tests/policies.rs");
    }
    assert_eq!(body["name"], repo.as_str());
    assert_eq!(body["immutable_tags"], serde_json::json!([]));
    assert_eq!(body["refused_tags"], serde_json::json!([]));
    assert!(body["retention"].is_null(), "{body}");
}

#[tokio::test]
async fn the_retention_preview_without_a_rule_deletes_nothing() {
    let repo = repo("ret-none");
    push_image(&repo, "v1").await;
    let r = get(format!("/v2/{repo}/_berth/retention")).send().await;
    assert_status(&r, 200);
    let body = r.json();
    if !body["rule"].is_null() {
        // A runtime started with tests/tests/policies/policy.toml: covered there.
        return skip("this registry runs with a retention rule here; see tests/policies.rs");
    }
    assert_eq!(body["name"], repo.as_str());
    assert_eq!((body["tags"].clone(), body["manifests"].clone()), (serde_json::json!([]), serde_json::json!([])));
    let r = get(format!("/v2/{}/nothing-here/_berth/retention", run_id())).send().await;
    assert_oci_error(&r, 404, "NAME_UNKNOWN");
}

/// The webhook state needs the catalog right: where the catalog is open, so is it, and it
/// never holds a secret.
#[tokio::test]
async fn the_webhook_state_is_served_where_the_catalog_is() {
    let catalog = get("/v2/_catalog?n=1").send().await;
    let r = get("/v2/_berth/webhooks").send().await;
    if catalog.status != 200 {
        assert!(matches!(r.status, 401 | 403), "catalog {}, webhooks {}", catalog.status, r.status);
        return;
    }
    assert_status(&r, 200);
    let body = r.json();
    assert!(body["endpoints"].is_array() && body["failed"].is_array() && body["pending"].is_u64(), "{body}");
    for e in body["endpoints"].as_array().into_iter().flatten() {
        assert!(e.get("secret").is_none(), "{e}");
    }
}

/// The replication state too: the catalog right, and never a rule's credentials.
#[tokio::test]
async fn the_replication_state_is_served_where_the_catalog_is() {
    let catalog = get("/v2/_catalog?n=1").send().await;
    let r = get("/v2/_berth/replication").send().await;
    if catalog.status != 200 {
        assert!(matches!(r.status, 401 | 403), "catalog {}, replication {}", catalog.status, r.status);
        return;
    }
    assert_status(&r, 200);
    let body = r.json();
    assert!(body["rules"].is_array() && body["failed"].is_array() && body["pending"].is_u64(), "{body}");
    for rule in body["rules"].as_array().into_iter().flatten() {
        assert!(rule.get("password").is_none() && rule.get("username").is_none(), "{rule}");
    }
}
