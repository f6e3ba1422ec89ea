//! What each kind of request counts as, the bounded repository label, and the text format.

use http::HeaderValue;

use super::*;

fn exchange<'a>(method: &'a Method, path: &'a str, status: u16, headers: &'a HeaderMap) -> Exchange<'a> {
    Exchange {
        method,
        path,
        status: StatusCode::from_u16(status).unwrap(),
        response_headers: headers,
        seconds: 0.02,
        bytes_in: 0,
        bytes_out: 0,
    }
}

fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.snapshot()
        .into_iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
        })
        .map(|s| s.value)
}

#[test]
fn pulls_and_pushes_per_repository() {
    let m = Metrics::new(10);
    let h = HeaderMap::new();
    let (get, head, put) = (Method::GET, Method::HEAD, Method::PUT);
    m.observe(&exchange(&get, "/v2/org/app/manifests/v1", 200, &h));
    m.observe(&exchange(&get, "/v2/org/app/manifests/sha256:ab", 200, &h));
    // Not pulls: a HEAD (an update check), a miss, a blob.
    m.observe(&exchange(&head, "/v2/org/app/manifests/v1", 200, &h));
    m.observe(&exchange(&get, "/v2/org/app/manifests/v2", 404, &h));
    m.observe(&exchange(&get, "/v2/org/app/blobs/sha256:ab", 200, &h));
    m.observe(&exchange(&put, "/v2/org/app/manifests/v1", 201, &h));
    m.observe(&exchange(&put, "/v2/org/app/manifests/v2", 400, &h));
    assert_eq!(value(&m, "docker_image_pulls_total", &[("repository", "org/app")]), Some(2.0));
    assert_eq!(value(&m, "docker_image_pushes_total", &[("repository", "org/app")]), Some(1.0));
    assert_eq!(
        value(&m, "berth_http_requests_total", &[("route", "manifest_get"), ("method", "GET"), ("status", "200")]),
        Some(2.0)
    );
    assert_eq!(
        value(&m, "berth_http_requests_total", &[("route", "manifest_put"), ("method", "PUT"), ("status", "400")]),
        Some(1.0)
    );
}

#[test]
fn repositories_beyond_the_limit_share_one_label() {
    let m = Metrics::new(2);
    let h = HeaderMap::new();
    let get = Method::GET;
    for repo in ["a", "b", "c", "d", "a"] {
        m.observe(&exchange(&get, &format!("/v2/{repo}/manifests/v1"), 200, &h));
    }
    assert_eq!(value(&m, "docker_image_pulls_total", &[("repository", "a")]), Some(2.0));
    assert_eq!(value(&m, "docker_image_pulls_total", &[("repository", "b")]), Some(1.0));
    assert_eq!(value(&m, "docker_image_pulls_total", &[("repository", OTHER_REPOSITORIES)]), Some(2.0));
    assert_eq!(value(&m, "docker_image_pulls_total", &[("repository", "c")]), None);
}

#[test]
fn classify_counts_nothing_and_keeps_every_repository_name() {
    let m = Metrics::new(1);
    let h = HeaderMap::new();
    let get = Method::GET;
    m.observe(&exchange(&get, "/v2/a/manifests/v1", 200, &h));
    // Past the label limit, observe folds the name; classify (a record per request) keeps it.
    let x = exchange(&get, "/v2/b/manifests/v1", 200, &h);
    let o = classify(&x);
    assert_eq!((o.route, o.method, o.status), ("manifest_get", "GET", 200));
    assert_eq!(o.meaning, Meaning::Pull("b".into()));
    assert_eq!(m.observe(&x).meaning, Meaning::Pull(OTHER_REPOSITORIES.into()));
    assert_eq!(value(&m, "docker_image_pulls_total", &[("repository", OTHER_REPOSITORIES)]), Some(1.0));
    let denied = exchange(&Method::PUT, "/v2/b/manifests/v1", 403, &h);
    assert_eq!(classify(&denied).meaning, Meaning::AuthFailure("denied"));
}

#[test]
fn junk_paths_and_methods_mint_no_label_values() {
    let m = Metrics::new(10);
    let h = HeaderMap::new();
    let odd = Method::from_bytes(b"BREW").unwrap();
    m.observe(&exchange(&odd, "/v2/x/manifests/y", 405, &h));
    m.observe(&exchange(&Method::GET, "/anything/at/all", 404, &h));
    m.observe(&exchange(&Method::GET, "/v2/nope/manifests/v1", 404, &h));
    let text = m.render();
    assert!(text.contains("berth_http_requests_total{route=\"unrouted\",method=\"other\",status=\"405\"} 1"), "{text}");
    assert!(text.contains("berth_http_requests_total{route=\"unrouted\",method=\"GET\",status=\"404\"} 1"), "{text}");
    assert!(!text.contains("nope") && !text.contains("anything") && !text.contains("BREW"), "{text}");
}

#[test]
fn upload_sessions_open_and_close() {
    let m = Metrics::new(10);
    let h = HeaderMap::new();
    let (post, put, del) = (Method::POST, Method::PUT, Method::DELETE);
    m.observe(&exchange(&post, "/v2/a/blobs/uploads/", 202, &h));
    m.observe(&exchange(&post, "/v2/a/blobs/uploads/", 202, &h));
    m.observe(&exchange(&post, "/v2/a/blobs/uploads/", 202, &h));
    // A mount (201) opens nothing.
    m.observe(&exchange(&post, "/v2/a/blobs/uploads/", 201, &h));
    m.observe(&exchange(&put, "/v2/a/blobs/uploads/id1", 201, &h));
    m.observe(&exchange(&del, "/v2/a/blobs/uploads/id2", 204, &h));
    assert_eq!(value(&m, "berth_upload_sessions_started_total", &[]), Some(3.0));
    assert_eq!(value(&m, "berth_upload_sessions_finished_total", &[("outcome", "completed")]), Some(1.0));
    assert_eq!(value(&m, "berth_upload_sessions_finished_total", &[("outcome", "cancelled")]), Some(1.0));
    assert_eq!(value(&m, "berth_upload_sessions_open", &[]), Some(1.0));
}

#[test]
fn auth_failures_by_reason() {
    let m = Metrics::new(10);
    let challenge = |error: &str| {
        let mut h = HeaderMap::new();
        let v = format!("Bearer realm=\"http://x/token\",service=\"berth\"{error}");
        h.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_str(&v).unwrap());
        h
    };
    let (none, bad, weak, plain) =
        (challenge(""), challenge(",error=\"invalid_token\""), challenge(",error=\"insufficient_scope\""), HeaderMap::new());
    let get = Method::GET;
    m.observe(&exchange(&get, "/v2/a/manifests/v1", 401, &none));
    m.observe(&exchange(&get, "/v2/a/manifests/v1", 401, &bad));
    m.observe(&exchange(&get, "/v2/a/manifests/v1", 401, &weak));
    m.observe(&exchange(&get, "/v2/a/manifests/v1", 403, &plain));
    m.observe(&exchange(&get, "/token", 401, &plain));
    m.observe(&exchange(&get, "/token", 429, &plain));
    m.observe(&exchange(&get, "/token", 200, &plain));
    for reason in ["no_token", "invalid_token", "insufficient_scope", "denied", "bad_credentials", "rate_limited"] {
        assert_eq!(value(&m, "berth_auth_failures_total", &[("reason", reason)]), Some(1.0), "{reason}");
    }
}

#[test]
fn latency_histogram_and_bytes_in_the_text_format() {
    let m = Metrics::new(10);
    let h = HeaderMap::new();
    let get = Method::GET;
    let mut x = exchange(&get, "/v2/a/blobs/sha256:ab", 200, &h);
    x.seconds = 0.3;
    x.bytes_out = 1000;
    m.observe(&x);
    x.seconds = 4.0;
    m.observe(&x);
    let mut push = exchange(&Method::PATCH, "/v2/a/blobs/uploads/id", 202, &h);
    push.bytes_in = 77;
    m.observe(&push);
    m.set_storage(850, Some(1000));
    let text = m.render();
    let expect = [
        "# TYPE berth_http_request_duration_seconds histogram",
        "berth_http_request_duration_seconds_bucket{route=\"blob_get\",method=\"GET\",le=\"0.25\"} 0",
        "berth_http_request_duration_seconds_bucket{route=\"blob_get\",method=\"GET\",le=\"0.5\"} 1",
        "berth_http_request_duration_seconds_bucket{route=\"blob_get\",method=\"GET\",le=\"5\"} 2",
        "berth_http_request_duration_seconds_bucket{route=\"blob_get\",method=\"GET\",le=\"+Inf\"} 2",
        "berth_http_request_duration_seconds_sum{route=\"blob_get\",method=\"GET\"} 4.3",
        "berth_http_request_duration_seconds_count{route=\"blob_get\",method=\"GET\"} 2",
        "berth_http_response_bytes_total{route=\"blob_get\"} 2000",
        "berth_http_request_bytes_total{route=\"upload_patch\"} 77",
        "berth_storage_used_bytes 850",
        "berth_storage_capacity_bytes 1000",
    ];
    for line in expect {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // Each family's HELP and TYPE once.
    assert_eq!(text.matches("# TYPE berth_http_request_duration_seconds ").count(), 1, "{text}");
    assert_eq!(text.matches("# TYPE berth_http_requests_total ").count(), 1, "{text}");
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

#[test]
fn observe_returns_what_it_counted_with_the_folded_label() {
    let m = Metrics::new(1);
    let h = HeaderMap::new();
    let get = Method::GET;
    let first = m.observe(&exchange(&get, "/v2/a/manifests/v1", 200, &h));
    assert_eq!(first, Observation { route: "manifest_get", method: "GET", status: 200, meaning: Meaning::Pull("a".into()) });
    let second = m.observe(&exchange(&get, "/v2/b/manifests/v1", 200, &h));
    assert_eq!(second.meaning, Meaning::Pull(OTHER_REPOSITORIES.into()));
    let miss = m.observe(&exchange(&get, "/v2/b/manifests/v9", 404, &h));
    assert_eq!(miss.meaning, Meaning::Nothing);
}

#[test]
fn storage_per_namespace_is_a_gauge_per_quota() {
    let m = Metrics::new(10);
    assert!(!m.render().contains("berth_namespace_storage_bytes"));
    m.set_namespaces(vec![("team".into(), 1500, 10 << 30), ("ci".into(), 0, 1000)]);
    assert_eq!(value(&m, "berth_namespace_storage_bytes", &[("namespace", "team")]), Some(1500.0));
    assert_eq!(value(&m, "berth_namespace_quota_bytes", &[("namespace", "ci")]), Some(1000.0));
    let text = m.render();
    assert!(text.contains("# TYPE berth_namespace_storage_bytes gauge"), "{text}");
    assert!(text.contains("berth_namespace_quota_bytes{namespace=\"team\"} 10737418240"), "{text}");
    // A new reading replaces the old one (a quota removed from the config disappears).
    m.set_namespaces(vec![("ci".into(), 10, 1000)]);
    assert_eq!(value(&m, "berth_namespace_storage_bytes", &[("namespace", "team")]), None);
}

#[test]
fn webhook_deliveries_by_result() {
    let m = Metrics::default();
    assert_eq!(value(&m, "berth_webhook_deliveries_total", &[("result", "failed")]), Some(0.0));
    let report = crate::webhooks::DeliverReport { delivered: 3, retrying: 2, failed: 1, skipped: 5 };
    m.count_webhooks(&report);
    m.count_webhooks(&report);
    assert_eq!(value(&m, "berth_webhook_deliveries_total", &[("result", "delivered")]), Some(6.0));
    assert_eq!(value(&m, "berth_webhook_deliveries_total", &[("result", "retrying")]), Some(4.0));
    assert_eq!(value(&m, "berth_webhook_deliveries_total", &[("result", "failed")]), Some(2.0));
    assert!(m.render().contains("# TYPE berth_webhook_deliveries_total counter"));
}

#[test]
fn gc_runs_count_by_result_and_add_up_what_they_freed() {
    let m = Metrics::default();
    assert_eq!(value(&m, "berth_gc_runs_total", &[("result", "ok")]), Some(0.0), "a counter exists before the first run");
    assert_eq!(value(&m, "berth_gc_last_run_timestamp_seconds", &[]), None);
    let report = crate::GcReport { content_deleted: 3, manifests_deleted: 2, bytes_freed: 1000, finished: true, ..Default::default() };
    m.count_gc(Some(&report), 1.5, 100);
    m.count_gc(Some(&report), 0.5, 200);
    m.count_gc(Some(&crate::GcReport { dry_run: true, ..report.clone() }), 0.5, 250);
    m.count_gc(None, 2.0, 300);
    assert_eq!(value(&m, "berth_gc_runs_total", &[("result", "ok")]), Some(3.0));
    assert_eq!(value(&m, "berth_gc_runs_total", &[("result", "error")]), Some(1.0));
    assert_eq!(value(&m, "berth_gc_deleted_blobs_total", &[]), Some(6.0), "a dry run deletes nothing");
    assert_eq!(value(&m, "berth_gc_deleted_manifests_total", &[]), Some(4.0));
    assert_eq!(value(&m, "berth_gc_freed_bytes_total", &[]), Some(2000.0));
    assert_eq!(value(&m, "berth_gc_last_run_timestamp_seconds", &[]), Some(300.0));
    assert_eq!(value(&m, "berth_gc_last_success_timestamp_seconds", &[]), Some(250.0));
    assert_eq!(value(&m, "berth_gc_duration_seconds", &[]), Some(2.0));
    let text = m.render();
    assert!(text.contains("# TYPE berth_gc_runs_total counter\nberth_gc_runs_total{result=\"ok\"} 3\nberth_gc_runs_total{result=\"error\"} 1\n"), "{text}");
    assert!(text.contains("# TYPE berth_gc_duration_seconds gauge\nberth_gc_duration_seconds 2\n"), "{text}");
}

#[test]
fn replication_copies_by_rule_and_result_and_the_outbox_size() {
    use crate::replication::outbox::{Attempt, DueReport};
    let m = Metrics::default();
    m.declare_replication_rules(["dr", "edge"]);
    assert_eq!(value(&m, "berth_replication_copies_total", &[("rule", "edge"), ("result", "failed")]), Some(0.0));
    assert_eq!(value(&m, "berth_replication_pending", &[]), None, "not read yet");
    let mut r = DueReport::default();
    r.count("dr", Attempt::Done);
    r.count("dr", Attempt::Done);
    r.count("edge", Attempt::Retrying);
    r.count("edge", Attempt::Failed);
    m.count_replication(&r, 500);
    let mut full = DueReport::default();
    full.count("edge", crate::metrics::full_run_attempt(false));
    m.count_replication(&full, 600);
    assert_eq!(value(&m, "berth_replication_copies_total", &[("rule", "dr"), ("result", "done")]), Some(2.0));
    assert_eq!(value(&m, "berth_replication_copies_total", &[("rule", "edge"), ("result", "retrying")]), Some(1.0));
    assert_eq!(value(&m, "berth_replication_copies_total", &[("rule", "edge"), ("result", "failed")]), Some(2.0));
    assert_eq!(value(&m, "berth_replication_last_success_timestamp_seconds", &[("rule", "dr")]), Some(500.0));
    assert_eq!(value(&m, "berth_replication_last_success_timestamp_seconds", &[("rule", "edge")]), None, "edge never copied");
    m.set_replication_outbox(4, 1);
    assert_eq!(value(&m, "berth_replication_pending", &[]), Some(4.0));
    assert_eq!(value(&m, "berth_replication_failed_entries", &[]), Some(1.0));
    assert!(m.render().contains("# TYPE berth_replication_copies_total counter\n"));
}
