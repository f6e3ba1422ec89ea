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
//! A background run (the Cron Trigger's GC, the scheduled replication step) is one point too:
//! index1 the task (`gc`, `replication`); blob1 `run`, blob3 its result (`ok`, `error`;
//! replication: `ok` or `failures`), blob4 the task; double1 1, double2 seconds, then for GC
//! deleted blobs, freed bytes, deleted manifests, and for replication copied, retrying, failed.
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

/// The data point of one GC run: its report, or None when it failed.
pub fn gc_point(report: Option<&berth_core::GcReport>, seconds: f64) -> Point {
    let r = report.cloned().unwrap_or_default();
    let result = if report.is_some() { "ok" } else { "error" };
    run_point("gc", result, seconds, [r.content_deleted as f64, r.bytes_freed as f64, r.manifests_deleted as f64])
}

/// The data point of one replication run (`Registry::replicate_due`).
#[allow(dead_code)] // for the scheduled replication step
pub fn replication_point(report: &berth_core::replication::outbox::DueReport, seconds: f64) -> Point {
    let result = if report.failed + report.retrying > 0 { "failures" } else { "ok" };
    run_point("replication", result, seconds, [report.copied as f64, report.retrying as f64, report.failed as f64])
}

fn run_point(task: &str, result: &str, seconds: f64, counts: [f64; 3]) -> Point {
    let seconds = if seconds.is_finite() && seconds > 0.0 { seconds } else { 0.0 };
    Point {
        indexes: [task.to_owned()],
        blobs: ["run", "", result, task, "", ""].map(String::from),
        doubles: [1.0, seconds, counts[0], counts[1], counts[2], 0.0],
    }
}

#[cfg(target_arch = "wasm32")]
pub use runtime::{record, record_run};

#[cfg(target_arch = "wasm32")]
mod runtime {
    use worker::{AnalyticsEngineDataPointBuilder, AnalyticsEngineDataset, Env};

    use super::{point, Point, ANALYTICS_BINDING};

    /// Writes the request's data point if the dataset is bound (and echoes it when asked).
    /// Never fails the request: a point that cannot be written is only logged.
    pub fn record(env: &Env, echo: bool, x: &berth_core::metrics::Exchange<'_>, request_id: &str) {
        let dataset = env.analytics_engine(ANALYTICS_BINDING).ok();
        if dataset.is_none() && !echo {
            return;
        }
        let p = point(&berth_core::metrics::classify(x), x.seconds, x.bytes_in, x.bytes_out, request_id);
        write(dataset, echo, &p);
    }

    /// Writes a background run's point ([`super::gc_point`], [`super::replication_point`]).
    pub fn record_run(env: &Env, echo: bool, p: &Point) {
        write(env.analytics_engine(ANALYTICS_BINDING).ok(), echo, p);
    }

    fn write(dataset: Option<AnalyticsEngineDataset>, echo: bool, p: &Point) {
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
    fn a_run_is_indexed_by_its_task() {
        let report = berth_core::GcReport { content_deleted: 2, bytes_freed: 900, manifests_deleted: 1, ..Default::default() };
        let p = gc_point(Some(&report), 1.5);
        assert_eq!((p.indexes[0].as_str(), p.blobs[0].as_str(), p.blobs[2].as_str()), ("gc", "run", "ok"));
        assert_eq!(p.doubles, [1.0, 1.5, 2.0, 900.0, 1.0, 0.0]);
        assert_eq!(gc_point(None, f64::NAN).blobs[2], "error");
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
