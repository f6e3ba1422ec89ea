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
