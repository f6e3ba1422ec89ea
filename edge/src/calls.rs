//! Counts the storage operations (R2, KV, the Cache API) a request makes, for the request-cost
//! table in BENCHMARKS.md (bench/request-cost.sh). Off unless the var COUNT_BACKEND_CALLS is
//! set; then every response carries `Berth-Backend-Calls: kv.get=1 r2.get=2 …`.
//!
//! A per-isolate tally, reset when a request starts: exact only while one request is in flight,
//! which is how the bench script sends them. What a request schedules with `waitUntil` (the
//! blob cache's fill) runs after its response and is not in its count.

use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static TALLY: RefCell<Option<BTreeMap<&'static str, u32>>> = const { RefCell::new(None) };
}

/// Starts a request's count (or turns counting off).
pub fn start(enabled: bool) {
    TALLY.with(|t| *t.borrow_mut() = enabled.then(BTreeMap::new));
}

/// One storage operation, named `service.operation`.
pub fn note(operation: &'static str) {
    TALLY.with(|t| {
        if let Some(tally) = t.borrow_mut().as_mut() {
            *tally.entry(operation).or_default() += 1;
        }
    });
}

/// The header value for the request so far; None when counting is off.
pub fn summary() -> Option<String> {
    TALLY.with(|t| {
        let tally = t.borrow();
        let tally = tally.as_ref()?;
        let parts: Vec<String> = tally.iter().map(|(op, n)| format!("{op}={n}")).collect();
        Some(if parts.is_empty() { "none".to_owned() } else { parts.join(" ") })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_when_started() {
        start(false);
        note("r2.get");
        assert_eq!(summary(), None);
        start(true);
        assert_eq!(summary().as_deref(), Some("none"));
        note("r2.get");
        note("kv.get");
        note("r2.get");
        assert_eq!(summary().as_deref(), Some("kv.get=1 r2.get=2"));
    }
}
