//! What is counted about each request, decided once for every runtime. The adapter measures
//! what only it can (time taken, body bytes: the core never reads a clock) and hands it over in
//! an [`Exchange`]; this module names the route, says whether the request was an image pull or
//! push, an upload session opening or closing, or an auth failure, and updates the counters.
//! [`Metrics::render`] writes them in Prometheus's text exposition format (version 0.0.4);
//! [`Metrics::snapshot`] gives the same values to runtimes that ship metrics another way.
//!
//! Hand-written rather than `prometheus-client`: what is exported is a dozen counters and one
//! histogram, the text format for them is short, and this way the core keeps its wasm32 build
//! free of new dependencies and the Lambda adapter can read the values back (for CloudWatch's
//! embedded metric format), which prometheus-client's registry does not offer.
//!
//! Cardinality is bounded: routes, methods and auth-failure reasons are fixed lists, statuses
//! are three digits, and repositories beyond [`Metrics::new`]'s limit share the label value
//! [`OTHER_REPOSITORIES`]. Only successful pulls and pushes name a repository, so a caller
//! cannot mint label values with names that do not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;

use http::{HeaderMap, Method, StatusCode};

use crate::auth::TOKEN_PATH;
use crate::observe::Health;
use crate::routes::Endpoint;

/// How many repositories get a label value of their own by default.
pub const DEFAULT_MAX_REPOSITORIES: usize = 500;
/// The label value every repository beyond the limit shares.
pub const OTHER_REPOSITORIES: &str = "_other";

/// Upper bounds of the latency histogram's buckets, in seconds: from a cached manifest read to
/// a large layer's upload.
pub const LATENCY_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// One request as the adapter saw it: what it asked, what it got, how long it took and how
/// many body bytes went each way.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub status: StatusCode,
    /// The response's headers (the auth challenge tells why a 401 happened).
    pub response_headers: &'a HeaderMap,
    pub seconds: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The route label of a request: its [`Endpoint::label`], or what else it was.
pub fn route_label(method: &Method, path: &str) -> &'static str {
    if path == TOKEN_PATH {
        return "token";
    }
    if let Some(health) = Health::of(path) {
        return health.label();
    }
    match Endpoint::of(method, path) {
        Ok(endpoint) => endpoint.label(),
        Err(_) => "unrouted",
    }
}

/// The method label: the methods the registry serves, and `other` for the rest.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// What one request was, counted nowhere: for runtimes that keep no counters of their own and
/// ship each request as a record (the Worker's Analytics Engine data points). The repository is
/// the request's own name, not folded: such stores take any number of distinct values.
pub fn classify(x: &Exchange<'_>) -> Observation {
    Observation { route: route_label(x.method, x.path), method: method_label(x.method), status: x.status.as_u16(), meaning: meaning(x) }
}

/// What a request meant beyond its route, read from the route and the status. In an
/// [`Observation`] the repository is its label value (possibly [`OTHER_REPOSITORIES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meaning {
    /// A manifest GET answered 200. A HEAD is not a pull (clients HEAD to check for updates;
    /// Docker Hub does not count it either).
    Pull(String),
    /// A manifest PUT answered 201.
    Push(String),
    /// An upload session opened (202; a mount or monolithic upload answers 201 and opens none).
    UploadStarted,
    /// An upload session closed: `completed` (its PUT answered 201) or `cancelled` (DELETE 204).
    UploadFinished(&'static str),
    /// A refusal by auth, and why.
    AuthFailure(&'static str),
    Nothing,
}

fn meaning(x: &Exchange<'_>) -> Meaning {
    if let Some(reason) = auth_failure(x) {
        return Meaning::AuthFailure(reason);
    }
    let Ok(endpoint) = Endpoint::of(x.method, x.path) else { return Meaning::Nothing };
    match (endpoint, x.status) {
        (Endpoint::ManifestGet { name, .. }, StatusCode::OK) if x.method == Method::GET => Meaning::Pull(name),
        (Endpoint::ManifestPut { name, .. }, StatusCode::CREATED) => Meaning::Push(name),
        (Endpoint::UploadStart { .. }, StatusCode::ACCEPTED) => Meaning::UploadStarted,
        (Endpoint::UploadPut { .. }, StatusCode::CREATED) => Meaning::UploadFinished("completed"),
        (Endpoint::UploadCancel { .. }, StatusCode::NO_CONTENT) => Meaning::UploadFinished("cancelled"),
        _ => Meaning::Nothing,
    }
}

/// Why auth refused a request, from its answer: the token endpoint's 401 (wrong credentials)
/// and 429 (too many failed logins); a registry request's 401 says in its challenge whether the
/// token was bad, too weak, or missing; 403 is a token or policy that does not allow it.
fn auth_failure(x: &Exchange<'_>) -> Option<&'static str> {
    let token = x.path == TOKEN_PATH;
    match x.status {
        StatusCode::UNAUTHORIZED if token => Some("bad_credentials"),
        StatusCode::TOO_MANY_REQUESTS if token => Some("rate_limited"),
        StatusCode::UNAUTHORIZED => {
            let challenge = x.response_headers.get(http::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
            Some(match challenge {
                Some(c) if c.contains("error=\"invalid_token\"") => "invalid_token",
                Some(c) if c.contains("error=\"insufficient_scope\"") => "insufficient_scope",
                _ => "no_token",
            })
        }
        StatusCode::FORBIDDEN if !token => Some("denied"),
        _ => None,
    }
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bucket of [`LATENCY_BUCKETS`], not cumulative (summed when rendered).
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let seconds = if seconds.is_finite() && seconds > 0.0 { seconds } else { 0.0 };
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Debug, Default)]
struct State {
    requests: BTreeMap<(&'static str, &'static str, u16), u64>,
    latency: BTreeMap<(&'static str, &'static str), Histogram>,
    bytes_in: BTreeMap<&'static str, u64>,
    bytes_out: BTreeMap<&'static str, u64>,
    pulls: BTreeMap<String, u64>,
    pushes: BTreeMap<String, u64>,
    /// Repositories with a label value of their own.
    labelled: BTreeSet<String>,
    uploads_started: u64,
    uploads_finished: BTreeMap<&'static str, u64>,
    auth_failures: BTreeMap<&'static str, u64>,
    storage_used: Option<u64>,
    storage_capacity: Option<u64>,
    /// Per quota namespace (docs/quotas.md): bytes counted and the limit. Bounded by the config.
    namespaces: Vec<(String, u64, u64)>,
    /// Webhook delivery attempts by result (`delivered`, `retrying`, `failed`).
    webhooks: [u64; 3],
    /// GC and replication runs (src/metrics/runs.rs).
    runs: runs::Runs,
}

impl State {
    /// The label value of a repository: its name while there is room, else the shared one.
    fn repository(&mut self, name: String, max: usize) -> String {
        if self.labelled.contains(&name) {
            return name;
        }
        if self.labelled.len() < max {
            self.labelled.insert(name.clone());
            return name;
        }
        OTHER_REPOSITORIES.to_owned()
    }
}

/// The counters of one process (or isolate). Shared by reference between requests.
#[derive(Debug)]
pub struct Metrics {
    max_repositories: usize,
    state: Mutex<State>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(DEFAULT_MAX_REPOSITORIES)
    }
}

/// What [`Metrics::observe`] counted for one request: its labels and what it meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
    pub meaning: Meaning,
}

/// One value, for runtimes that ship metrics as records rather than a scrape (Lambda's
/// embedded metric format): a name, its labels and a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Metrics {
    /// `max_repositories`: how many repositories get a label value of their own.
    pub fn new(max_repositories: usize) -> Self {
        Metrics { max_repositories, state: Mutex::new(State::default()) }
    }

    /// Counts one request, and returns what it counted (for runtimes that also ship each
    /// request as a record: Lambda's embedded metric format). Never fails: a poisoned lock (a
    /// panic elsewhere while it was held) still holds counters worth keeping.
    pub fn observe(&self, x: &Exchange<'_>) -> Observation {
        let Observation { route, method, mut meaning, .. } = classify(x);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s.requests.entry((route, method, x.status.as_u16())).or_default() += 1;
        s.latency.entry((route, method)).or_default().observe(x.seconds);
        *s.bytes_in.entry(route).or_default() += x.bytes_in;
        *s.bytes_out.entry(route).or_default() += x.bytes_out;
        match &mut meaning {
            Meaning::Pull(name) => {
                *name = s.repository(std::mem::take(name), self.max_repositories);
                *s.pulls.entry(name.clone()).or_default() += 1;
            }
            Meaning::Push(name) => {
                *name = s.repository(std::mem::take(name), self.max_repositories);
                *s.pushes.entry(name.clone()).or_default() += 1;
            }
            Meaning::UploadStarted => s.uploads_started += 1,
            Meaning::UploadFinished(how) => *s.uploads_finished.entry(*how).or_default() += 1,
            Meaning::AuthFailure(reason) => *s.auth_failures.entry(*reason).or_default() += 1,
            Meaning::Nothing => {}
        }
        Observation { route, method, status: x.status.as_u16(), meaning }
    }

    /// Storage in use and (when the operator configured one) the capacity or quota it is
    /// measured against; the runtime measures both.
    pub fn set_storage(&self, used: u64, capacity: Option<u64>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.storage_used = Some(used);
        s.storage_capacity = capacity;
    }

    /// Storage use per namespace: each configured quota's usage record and limit (the runtime
    /// reads them with `Registry::quota_usage`). The label values come from the config, so
    /// they are as many as its quotas, never more.
    pub fn set_namespaces(&self, usage: Vec<(String, u64, u64)>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.namespaces = usage;
    }

    /// Counts what one webhook delivery round did (the runtime's delivery task reports it).
    pub fn count_webhooks(&self, report: &crate::webhooks::DeliverReport) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, n) in s.webhooks.iter_mut().zip([report.delivered, report.retrying, report.failed]) {
            *slot += n as u64;
        }
    }

    /// Every value, as Prometheus's text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut last = "";
        for sample in self.snapshot().into_iter().chain(self.snapshot_histograms()) {
            // Samples come grouped by family: its HELP and TYPE go once, before the first.
            let family = family_name(sample.name);
            if family != last {
                let (kind, help) = describe(family);
                let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
                last = family;
            }
            out.push_str(sample.name);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(sample.value));
        }
        out
    }

    /// Every counter and gauge (not the histogram's buckets), grouped by name.
    pub fn snapshot(&self) -> Vec<Sample> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut v = Vec::new();
        let sample = |name, labels: Vec<(&'static str, String)>, value: u64| Sample { name, labels, value: value as f64 };
        for ((route, method, status), n) in &s.requests {
            v.push(sample(
                "berth_http_requests_total",
                vec![("route", route.to_string()), ("method", method.to_string()), ("status", status.to_string())],
                *n,
            ));
        }
        for (route, n) in &s.bytes_in {
            v.push(sample("berth_http_request_bytes_total", vec![("route", route.to_string())], *n));
        }
        for (route, n) in &s.bytes_out {
            v.push(sample("berth_http_response_bytes_total", vec![("route", route.to_string())], *n));
        }
        for (repo, n) in &s.pulls {
            v.push(sample("docker_image_pulls_total", vec![("repository", repo.clone())], *n));
        }
        for (repo, n) in &s.pushes {
            v.push(sample("docker_image_pushes_total", vec![("repository", repo.clone())], *n));
        }
        v.push(sample("berth_upload_sessions_started_total", vec![], s.uploads_started));
        let mut finished = 0;
        for how in ["cancelled", "completed"] {
            let n = s.uploads_finished.get(how).copied().unwrap_or(0);
            finished += n;
            v.push(sample("berth_upload_sessions_finished_total", vec![("outcome", how.to_owned())], n));
        }
        // Sessions opened by this process and not closed by it; abandoned ones stay counted
        // until it restarts (they expire in storage, not here).
        v.push(sample("berth_upload_sessions_open", vec![], s.uploads_started.saturating_sub(finished)));
        for (reason, n) in &s.auth_failures {
            v.push(sample("berth_auth_failures_total", vec![("reason", reason.to_string())], *n));
        }
        for (result, n) in ["delivered", "retrying", "failed"].into_iter().zip(s.webhooks) {
            v.push(sample("berth_webhook_deliveries_total", vec![("result", result.to_owned())], n));
        }
        if let Some(used) = s.storage_used {
            v.push(sample("berth_storage_used_bytes", vec![], used));
        }
        if let Some(capacity) = s.storage_capacity {
            v.push(sample("berth_storage_capacity_bytes", vec![], capacity));
        }
        for (namespace, used, _) in &s.namespaces {
            v.push(sample("berth_namespace_storage_bytes", vec![("namespace", namespace.clone())], *used));
        }
        for (namespace, _, limit) in &s.namespaces {
            v.push(sample("berth_namespace_quota_bytes", vec![("namespace", namespace.clone())], *limit));
        }
        s.runs.samples(&mut v);
        v
    }

    /// The latency histogram as Prometheus samples: cumulative buckets, sum and count, each
    /// series' lines together as the text format wants.
    fn snapshot_histograms(&self) -> Vec<Sample> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut v = Vec::new();
        for ((route, method), h) in &s.latency {
            let labels = || vec![("route", route.to_string()), ("method", method.to_string())];
            let mut cumulative = 0;
            for (le, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let mut l = labels();
                l.push(("le", number(*le)));
                v.push(Sample { name: "berth_http_request_duration_seconds_bucket", labels: l, value: cumulative as f64 });
            }
            let mut l = labels();
            l.push(("le", "+Inf".to_owned()));
            v.push(Sample { name: "berth_http_request_duration_seconds_bucket", labels: l, value: h.count as f64 });
            v.push(Sample { name: "berth_http_request_duration_seconds_sum", labels: labels(), value: h.sum });
            v.push(Sample { name: "berth_http_request_duration_seconds_count", labels: labels(), value: h.count as f64 });
        }
        v
    }
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum` and `_count` are one).
fn family_name(sample: &str) -> &str {
    const HISTOGRAM: &str = "berth_http_request_duration_seconds";
    if sample.starts_with(HISTOGRAM) {
        HISTOGRAM
    } else {
        sample
    }
}

/// Type and help text of each family. No catch-all beyond "untyped": a new family says what it is.
fn describe(sample: &str) -> (&'static str, &'static str) {
    match family_name(sample) {
        "berth_http_requests_total" => ("counter", "Requests answered, by route, method and status."),
        "berth_http_request_duration_seconds" => {
            ("histogram", "Time from the request's head to the response's head, by route and method.")
        }
        "berth_http_request_bytes_total" => ("counter", "Request body bytes received, by route."),
        "berth_http_response_bytes_total" => ("counter", "Response body bytes sent (as declared by Content-Length), by route."),
        "docker_image_pulls_total" => ("counter", "Image pulls (manifest GETs answered 200), by repository."),
        "docker_image_pushes_total" => ("counter", "Image pushes (manifest PUTs answered 201), by repository."),
        "berth_upload_sessions_started_total" => ("counter", "Blob upload sessions opened."),
        "berth_upload_sessions_finished_total" => ("counter", "Blob upload sessions closed, by outcome."),
        "berth_upload_sessions_open" => ("gauge", "Upload sessions this process opened and has not seen closed."),
        "berth_auth_failures_total" => ("counter", "Requests refused by auth, by reason."),
        "berth_webhook_deliveries_total" => (
            "counter",
            "Webhook delivery attempts, by result: delivered (2xx), retrying (failed, tried again later), failed (last attempt failed).",
        ),
        "berth_storage_used_bytes" => ("gauge", "Bytes of storage in use."),
        "berth_storage_capacity_bytes" => ("gauge", "The storage capacity or quota the operator configured."),
        "berth_namespace_storage_bytes" => ("gauge", "Bytes stored per quota namespace, each blob counted once per namespace."),
        "berth_namespace_quota_bytes" => ("gauge", "The storage limit of each quota namespace."),
        family => runs::describe(family).unwrap_or(("untyped", "A Berth metric.")),
    }
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

mod runs;
pub use runs::full_run_attempt;

#[cfg(test)]
mod tests;
