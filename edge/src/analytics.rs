//! Metrics on the Worker: one Workers Analytics Engine data point per registry request, written
//! to the dataset bound as `METRICS` (wrangler.toml, terraform/modules/cloudflare). What is
//! counted is the core's (`berth_core::metrics::classify`): the same observation `berth serve`
//! adds to its Prometheus counters and Lambda prints as an EMF record. Writing a point is
//! fire-and-forget (no await, no subrequest), so it costs the request nothing it waits for.
//!
//! The layout (docs/observability.md has the SQL that reads it):
//! - index1: the repository of a pull or push, else the route (Analytics Engine samples per
//!   index, so each repository's counts stay exact relative to one another);
//! - blob1..blob6: route, method, status, kind (`pull`, `push`, `upload_started`,
//!   `upload_finished`, `auth_failure` or empty), its subject (repository, upload outcome or
//!   auth failure reason), request id;
//! - double1..double6: requests (1), seconds, request bytes, response bytes, pulls (0/1),
//!   pushes (0/1).
//!
//! With the var `ANALYTICS_ECHO` set, each point is also printed as a `berth: analytics {json}`
//! console line: the local simulator `wrangler dev` binds discards points, so this is how
//! tests/edge/edge_test.py sees what a deployed Worker would write. Never set in a deployment.

use berth_core::metrics::{Meaning, Observation};
use serde::Serialize;

/// The binding name of the Analytics Engine dataset. Unbound: no points, nothing else changes.
pub const ANALYTICS_BINDING: &str = "METRICS";

/// One data point, as Analytics Engine takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub indexes: [String; 1],
    pub blobs: [String; 6],
    pub doubles: [f64; 6],
}

/// The data point of one request.
pub fn point(o: &Observation, seconds: f64, bytes_in: u64, bytes_out: u64, request_id: &str) -> Point {
    let (kind, subject) = match &o.meaning {
        Meaning::Pull(repository) => ("pull", repository.as_str()),
        Meaning::Push(repository) => ("push", repository.as_str()),
        Meaning::UploadStarted => ("upload_started", ""),
        Meaning::UploadFinished(outcome) => ("upload_finished", *outcome),
        Meaning::AuthFailure(reason) => ("auth_failure", *reason),
        Meaning::Nothing => ("", ""),
    };
    let index = if matches!(o.meaning, Meaning::Pull(_) | Meaning::Push(_)) { subject } else { o.route };
    let flag = |yes: bool| if yes { 1.0 } else { 0.0 };
    Point {
        indexes: [index.to_owned()],
        blobs: [
            o.route.to_owned(),
            o.method.to_owned(),
            o.status.to_string(),
            kind.to_owned(),
            subject.to_owned(),
            request_id.to_owned(),
        ],
        doubles: [
            1.0,
            if seconds.is_finite() && seconds > 0.0 { seconds } else { 0.0 },
            bytes_in as f64,
            bytes_out as f64,
            flag(kind == "pull"),
            flag(kind == "push"),
        ],
    }
}

#[cfg(target_arch = "wasm32")]
pub use runtime::record;

#[cfg(target_arch = "wasm32")]
mod runtime {
    use worker::{AnalyticsEngineDataPointBuilder, Env};

    use super::{point, ANALYTICS_BINDING};

    /// Writes the request's data point if the dataset is bound (and echoes it when asked).
    /// Never fails the request: a point that cannot be written is only logged.
    pub fn record(env: &Env, echo: bool, x: &berth_core::metrics::Exchange<'_>, request_id: &str) {
        let dataset = env.analytics_engine(ANALYTICS_BINDING).ok();
        if dataset.is_none() && !echo {
            return;
        }
        let p = point(&berth_core::metrics::classify(x), x.seconds, x.bytes_in, x.bytes_out, request_id);
        if echo {
            worker::console_log!("berth: analytics {}", serde_json::to_string(&p).unwrap_or_default());
        }
        if let Some(dataset) = dataset {
            let written = AnalyticsEngineDataPointBuilder::new()
                .indexes([p.indexes[0].as_str()])
                .blobs(p.blobs.iter().map(String::as_str))
                .doubles(p.doubles)
                .write_to(&dataset);
            if let Err(e) = written {
                worker::console_error!("berth: analytics data point not written: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(meaning: Meaning) -> Observation {
        Observation { route: "manifest_get", method: "GET", status: 200, meaning }
    }

    #[test]
    fn a_pull_is_indexed_by_its_repository() {
        let p = point(&observation(Meaning::Pull("org/app".into())), 0.004, 0, 1234, "rid-1");
        assert_eq!(p.indexes, ["org/app".to_owned()]);
        assert_eq!(p.blobs, ["manifest_get", "GET", "200", "pull", "org/app", "rid-1"].map(String::from));
        assert_eq!(p.doubles, [1.0, 0.004, 0.0, 1234.0, 1.0, 0.0]);
    }

    #[test]
    fn other_requests_are_indexed_by_route_and_name_their_subject() {
        let o = Observation { route: "token", method: "GET", status: 401, meaning: Meaning::AuthFailure("bad_credentials") };
        let p = point(&o, f64::NAN, 10, 0, "rid-2");
        assert_eq!(p.indexes, ["token".to_owned()]);
        assert_eq!(&p.blobs[3..5], ["auth_failure".to_owned(), "bad_credentials".to_owned()]);
        assert_eq!(p.doubles, [1.0, 0.0, 10.0, 0.0, 0.0, 0.0]);
        let push = point(&Observation { route: "manifest_put", method: "PUT", status: 201, meaning: Meaning::Push("a/b".into()) }, 0.1, 900, 0, "r");
        assert_eq!((push.indexes[0].as_str(), push.doubles[4], push.doubles[5]), ("a/b", 0.0, 1.0));
    }
}
