//! Metrics on Lambda: one CloudWatch embedded-metric-format (EMF) record per request, printed as
//! a log line that CloudWatch Logs turns into metrics (no agent, no API call on the request
//! path). What is counted is the core's (`berth_core::metrics`): the same observation that
//! `berth serve` adds to its Prometheus counters becomes this record.
//!
//! Off unless `BERTH_METRICS=emf`: every distinct dimension set is a CloudWatch custom metric,
//! billed per month, so an operator turns it on knowingly. Namespace `BERTH_METRICS_NAMESPACE`
//! (default `Berth`); repositories beyond `BERTH_METRICS_MAX_REPOSITORIES` (default 50, per
//! instance) share the `Repository` value `_other`.

use berth_core::metrics::{Meaning, Metrics, Observation};
use serde_json::{json, Map, Value};

pub struct Emf {
    namespace: String,
    /// Kept for its repository labels (the fold) and what it counted.
    metrics: Metrics,
}

const DEFAULT_MAX_REPOSITORIES: usize = 50;

impl Emf {
    /// None when metrics are off.
    pub fn from_env() -> Option<Emf> {
        if std::env::var("BERTH_METRICS").ok()?.trim() != "emf" {
            return None;
        }
        let namespace = std::env::var("BERTH_METRICS_NAMESPACE").unwrap_or_else(|_| "Berth".to_owned());
        let max = std::env::var("BERTH_METRICS_MAX_REPOSITORIES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_REPOSITORIES);
        Some(Emf { namespace, metrics: Metrics::new(max) })
    }

    /// Counts the request and prints its record on stdout (one line).
    pub fn emit(&self, exchange: &berth_core::metrics::Exchange<'_>, request_id: &str, timestamp_ms: u64) {
        let observation = self.metrics.observe(exchange);
        println!("{}", record(&self.namespace, &observation, exchange, request_id, timestamp_ms));
    }
}

impl Emf {
    /// Prints the record of one GC run (a scheduled invocation's): None when it failed.
    pub fn gc_run(&self, report: Option<&berth_core::GcReport>, seconds: f64) {
        let r = report.cloned().unwrap_or_default();
        let result = if report.is_some() { "ok" } else { "error" };
        let values = [("DeletedBlobs", "Count", r.content_deleted as f64), ("FreedBytes", "Bytes", r.bytes_freed as f64)];
        println!("{}", run_record(&self.namespace, "gc", result, seconds, &values, now_ms()));
    }

    /// Prints the record of one replication run (`Registry::replicate_due`). For the
    /// scheduled handler's replication step.
    #[allow(dead_code)]
    pub fn replication_run(&self, report: &berth_core::replication::outbox::DueReport, seconds: f64) {
        let result = if report.failed + report.retrying > 0 { "failures" } else { "ok" };
        let values = [
            ("Copied", "Count", report.copied as f64),
            ("Retrying", "Count", report.retrying as f64),
            ("Failed", "Count", report.failed as f64),
        ];
        println!("{}", run_record(&self.namespace, "replication", result, seconds, &values, now_ms()));
    }
}

/// Unix milliseconds, EMF's timestamp.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The EMF record of a background run: `Runs` (1) and its `Duration`, plus its own `values`,
/// by task (`gc`, `replication`) and result. Two dimension sets: `Task` alone and with `Result`.
fn run_record(namespace: &str, task: &str, result: &str, seconds: f64, values: &[(&str, &str, f64)], timestamp_ms: u64) -> Value {
    let mut metrics = vec![json!({ "Name": "Runs", "Unit": "Count" }), json!({ "Name": "Duration", "Unit": "Seconds" })];
    let mut fields = Map::new();
    fields.insert("Task".into(), task.into());
    fields.insert("Result".into(), result.into());
    fields.insert("Runs".into(), 1.into());
    fields.insert("Duration".into(), json!(if seconds.is_finite() && seconds > 0.0 { seconds } else { 0.0 }));
    for (name, unit, value) in values {
        metrics.push(json!({ "Name": name, "Unit": unit }));
        fields.insert((*name).into(), json!(value));
    }
    let directive = json!({ "Namespace": namespace, "Dimensions": [["Task"], ["Task", "Result"]], "Metrics": metrics });
    fields.insert("_aws".into(), json!({ "Timestamp": timestamp_ms, "CloudWatchMetrics": [directive] }));
    Value::Object(fields)
}

/// The EMF record: request count, latency and bytes by route/method/status (and by route
/// alone), plus an image pull or push by repository, or an auth failure by reason.
fn record(
    namespace: &str,
    o: &Observation,
    x: &berth_core::metrics::Exchange<'_>,
    request_id: &str,
    timestamp_ms: u64,
) -> Value {
    let metric = |name: &str, unit: &str| json!({ "Name": name, "Unit": unit });
    let mut directives = vec![json!({
        "Namespace": namespace,
        "Dimensions": [["Route", "Method", "Status"], ["Route"]],
        "Metrics": [
            metric("Requests", "Count"),
            metric("Latency", "Seconds"),
            metric("RequestBytes", "Bytes"),
            metric("ResponseBytes", "Bytes"),
        ],
    })];
    let mut fields = Map::new();
    fields.insert("Route".into(), o.route.into());
    fields.insert("Method".into(), o.method.into());
    fields.insert("Status".into(), o.status.to_string().into());
    fields.insert("Requests".into(), 1.into());
    fields.insert("Latency".into(), json!(x.seconds));
    fields.insert("RequestBytes".into(), x.bytes_in.into());
    fields.insert("ResponseBytes".into(), x.bytes_out.into());
    // Not a dimension: searchable in CloudWatch Logs Insights, costs no metric.
    fields.insert("RequestId".into(), request_id.into());
    let mut by = |dimension: &str, value: &str, name: &str| {
        directives.push(json!({ "Namespace": namespace, "Dimensions": [[dimension]], "Metrics": [metric(name, "Count")] }));
        fields.insert(dimension.into(), value.into());
        fields.insert(name.into(), 1.into());
    };
    match &o.meaning {
        Meaning::Pull(repository) => by("Repository", repository, "ImagePulls"),
        Meaning::Push(repository) => by("Repository", repository, "ImagePushes"),
        Meaning::AuthFailure(reason) => by("Reason", reason, "AuthFailures"),
        Meaning::UploadStarted => by("Upload", "started", "UploadSessions"),
        Meaning::UploadFinished(outcome) => by("Upload", outcome, "UploadSessions"),
        Meaning::Nothing => {}
    }
    fields.insert("_aws".into(), json!({ "Timestamp": timestamp_ms, "CloudWatchMetrics": directives }));
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method, StatusCode};

    #[test]
    fn a_gc_run_is_one_record_by_task_and_result() {
        let r = run_record("Berth", "gc", "ok", 2.5, &[("DeletedBlobs", "Count", 3.0), ("FreedBytes", "Bytes", 4096.0)], 7);
        assert_eq!((r["Task"].as_str(), r["Result"].as_str(), r["Runs"].as_u64()), (Some("gc"), Some("ok"), Some(1)));
        assert_eq!((r["Duration"].as_f64(), r["DeletedBlobs"].as_f64(), r["FreedBytes"].as_f64()), (Some(2.5), Some(3.0), Some(4096.0)));
        let d = &r["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Dimensions"], json!([["Task"], ["Task", "Result"]]));
        // Every metric the directive names is a field of the record (EMF's rule).
        for m in d["Metrics"].as_array().unwrap() {
            assert!(r.get(m["Name"].as_str().unwrap()).is_some(), "{m}");
        }
        assert_eq!(run_record("Berth", "gc", "error", f64::NAN, &[], 0)["Duration"], 0.0);
    }

    #[test]
    fn a_pull_is_a_request_and_an_image_pull_by_repository() {
        let emf = Emf { namespace: "Berth".into(), metrics: Metrics::new(1) };
        let headers = HeaderMap::new();
        let x = berth_core::metrics::Exchange {
            method: &Method::GET,
            path: "/v2/org/app/manifests/v1",
            status: StatusCode::OK,
            response_headers: &headers,
            seconds: 0.25,
            bytes_in: 0,
            bytes_out: 501,
        };
        let o = emf.metrics.observe(&x);
        let r = record(&emf.namespace, &o, &x, "rid-1", 1_700_000_000_000);
        assert_eq!(r["Route"], "manifest_get");
        assert_eq!(r["Status"], "200");
        assert_eq!(r["Requests"], 1);
        assert_eq!(r["Latency"], 0.25);
        assert_eq!(r["ResponseBytes"], 501);
        assert_eq!(r["Repository"], "org/app");
        assert_eq!(r["ImagePulls"], 1);
        assert_eq!(r["RequestId"], "rid-1");
        let aws = &r["_aws"];
        assert_eq!(aws["Timestamp"], 1_700_000_000_000u64);
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 2);
        assert_eq!(directives[1]["Dimensions"], json!([["Repository"]]));
        assert_eq!(directives[1]["Metrics"][0]["Name"], "ImagePulls");
        // Every metric a directive names, and every dimension, is a field of the record (EMF's rule).
        for d in directives {
            for m in d["Metrics"].as_array().unwrap() {
                assert!(r.get(m["Name"].as_str().unwrap()).is_some(), "{m}");
            }
            for set in d["Dimensions"].as_array().unwrap() {
                for dim in set.as_array().unwrap() {
                    assert!(r.get(dim.as_str().unwrap()).is_some(), "{dim}");
                }
            }
        }
        // The second repository folds (limit 1).
        let x2 = berth_core::metrics::Exchange { path: "/v2/other/manifests/v1", ..x };
        let o2 = emf.metrics.observe(&x2);
        assert_eq!(record("Berth", &o2, &x2, "rid-2", 0)["Repository"], "_other");
    }
}
