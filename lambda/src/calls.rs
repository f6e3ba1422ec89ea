//! Counts the S3 requests each Lambda request makes, for the request-cost table in
//! BENCHMARKS.md (bench/request-cost.sh). Off unless BERTH_COUNT_BACKEND_CALLS is set; then an
//! SDK interceptor on every S3 client notes each response it gets (retries count; presigning,
//! which sends nothing, does not), and every
//! response carries `Berth-Backend-Calls: blobs.HeadObject=1 meta.GetObject=2 …`.
//!
//! One tally per process, reset when a request starts: a Lambda instance runs one request at a
//! time, so the count is the request's own.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

static TALLY: Mutex<Option<BTreeMap<String, u32>>> = Mutex::new(None);

/// Read once: the environment of a Lambda instance does not change, and `start` runs on every
/// request.
pub fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("BERTH_COUNT_BACKEND_CALLS").is_some_and(|v| !v.is_empty()))
}

/// Starts a request's count (when counting is on).
pub fn start() {
    if let Ok(mut tally) = TALLY.lock() {
        *tally = enabled().then(BTreeMap::new);
    }
}

fn note(operation: String) {
    if let Ok(mut tally) = TALLY.lock() {
        if let Some(tally) = tally.as_mut() {
            *tally.entry(operation).or_default() += 1;
        }
    }
}

/// The header value for the request so far; None when counting is off.
pub fn summary() -> Option<String> {
    let tally = TALLY.lock().ok()?;
    let tally = tally.as_ref()?;
    let parts: Vec<String> = tally.iter().map(|(op, n)| format!("{op}={n}")).collect();
    Some(if parts.is_empty() { "none".to_owned() } else { parts.join(" ") })
}

/// The interceptor, labelled with what the client is for (`blobs`, `home`, `meta`).
#[derive(Debug)]
pub struct Counter(pub &'static str);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "berth-backend-calls"
    }

    fn read_before_deserialization(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        note(format!("{}.{operation}", self.0));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_by_label_and_operation() {
        *TALLY.lock().unwrap() = Some(BTreeMap::new());
        note("meta.GetObject".into());
        note("blobs.HeadObject".into());
        note("meta.GetObject".into());
        assert_eq!(summary().as_deref(), Some("blobs.HeadObject=1 meta.GetObject=2"));
        *TALLY.lock().unwrap() = None;
        note("meta.GetObject".into());
        assert_eq!(summary(), None);
    }
}
