//! Metrics of the registry's background runs: garbage collection and replication. The core
//! says what a run's report counts for ([`Metrics::count_gc`], [`Metrics::count_replication`]);
//! the runtime times the run and reads the clock, and calls them after each run. Rule names
//! come from the config (and from outbox entries of rules since removed): bounded.

use std::collections::BTreeMap;

use super::{Metrics, Sample};
use crate::replication::outbox::{Attempt, DueReport};
use crate::GcReport;

/// What the background runs added up to in this process.
#[derive(Debug, Default)]
pub(super) struct Runs {
    /// GC runs by result: ok, error.
    gc_runs: [u64; 2],
    gc_deleted_blobs: u64,
    gc_deleted_manifests: u64,
    gc_freed_bytes: u64,
    gc_last_run: Option<u64>,
    gc_last_success: Option<u64>,
    gc_duration: Option<f64>,
    /// Copies by (rule, result: done, retrying, failed).
    copies: BTreeMap<(String, &'static str), u64>,
    /// Unix seconds of each rule's last copy that reached its destination.
    last_copied: BTreeMap<String, u64>,
    /// Replication outbox entries waiting and kept as failed, as last read.
    outbox: Option<(u64, u64)>,
}

const ATTEMPTS: [Attempt; 3] = [Attempt::Done, Attempt::Retrying, Attempt::Failed];

impl Metrics {
    /// Counts one GC run that ended at `at` (Unix seconds) after `seconds`: its report, or
    /// None when it failed. A dry run deletes nothing and counts as a run.
    pub fn count_gc(&self, report: Option<&GcReport>, seconds: f64, at: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = &mut s.runs;
        r.gc_runs[usize::from(report.is_none())] += 1;
        r.gc_last_run = Some(at);
        r.gc_duration = Some(if seconds.is_finite() && seconds > 0.0 { seconds } else { 0.0 });
        if let Some(report) = report {
            r.gc_last_success = Some(at);
            if !report.dry_run {
                r.gc_deleted_blobs += report.content_deleted;
                r.gc_deleted_manifests += report.manifests_deleted;
                r.gc_freed_bytes += report.bytes_freed;
            }
        }
    }

    /// Counts what one replication run did (`Registry::replicate_due`, or a full run's copies
    /// tallied the same way), at `at`.
    pub fn count_replication(&self, report: &DueReport, at: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = &mut s.runs;
        for (rule, counts) in &report.rules {
            for (attempt, n) in ATTEMPTS.into_iter().zip([counts.copied, counts.retrying, counts.failed]) {
                *r.copies.entry((rule.clone(), attempt.as_str())).or_default() += n as u64;
            }
            if counts.copied > 0 {
                r.last_copied.insert(rule.clone(), at);
            }
        }
    }

    /// Makes each rule's copy counters exist at 0 before its first copy, so that `increase()`
    /// sees the first one.
    pub fn declare_replication_rules<'a>(&self, rules: impl IntoIterator<Item = &'a str>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for rule in rules {
            for attempt in ATTEMPTS {
                s.runs.copies.entry((rule.to_owned(), attempt.as_str())).or_default();
            }
        }
    }

    /// The replication outbox's size: entries waiting (due now or later) and kept as failed.
    pub fn set_replication_outbox(&self, waiting: u64, failed: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.runs.outbox = Some((waiting, failed));
    }
}

impl Runs {
    /// The samples, grouped by name.
    pub(super) fn samples(&self, v: &mut Vec<Sample>) {
        let mut push = |name, labels: Vec<(&'static str, String)>, value: f64| v.push(Sample { name, labels, value });
        for (result, n) in ["ok", "error"].into_iter().zip(self.gc_runs) {
            push("berth_gc_runs_total", vec![("result", result.to_owned())], n as f64);
        }
        push("berth_gc_deleted_blobs_total", vec![], self.gc_deleted_blobs as f64);
        push("berth_gc_deleted_manifests_total", vec![], self.gc_deleted_manifests as f64);
        push("berth_gc_freed_bytes_total", vec![], self.gc_freed_bytes as f64);
        if let Some(at) = self.gc_last_run {
            push("berth_gc_last_run_timestamp_seconds", vec![], at as f64);
        }
        if let Some(at) = self.gc_last_success {
            push("berth_gc_last_success_timestamp_seconds", vec![], at as f64);
        }
        if let Some(seconds) = self.gc_duration {
            push("berth_gc_duration_seconds", vec![], seconds);
        }
        for ((rule, result), n) in &self.copies {
            push("berth_replication_copies_total", vec![("rule", rule.clone()), ("result", result.to_string())], *n as f64);
        }
        for (rule, at) in &self.last_copied {
            push("berth_replication_last_success_timestamp_seconds", vec![("rule", rule.clone())], *at as f64);
        }
        if let Some((waiting, failed)) = self.outbox {
            push("berth_replication_pending", vec![], waiting as f64);
            push("berth_replication_failed_entries", vec![], failed as f64);
        }
    }
}

/// Type and help text of the families above.
pub(super) fn describe(family: &str) -> Option<(&'static str, &'static str)> {
    Some(match family {
        "berth_gc_runs_total" => ("counter", "Garbage collection runs, by result (ok, error)."),
        "berth_gc_deleted_blobs_total" => ("counter", "Blobs (content) deleted from storage by garbage collection."),
        "berth_gc_deleted_manifests_total" => ("counter", "Manifests deleted by garbage collection (retention, untagged)."),
        "berth_gc_freed_bytes_total" => ("counter", "Bytes of storage freed by garbage collection."),
        "berth_gc_last_run_timestamp_seconds" => ("gauge", "When the last garbage collection run ended (Unix seconds), whatever its result."),
        "berth_gc_last_success_timestamp_seconds" => ("gauge", "When the last garbage collection run that did not fail ended (Unix seconds)."),
        "berth_gc_duration_seconds" => ("gauge", "How long the last garbage collection run took."),
        "berth_replication_copies_total" => (
            "counter",
            "Replication copies, by rule and result: done, retrying (failed, tried again later), failed (last attempt failed, or a full run's copy failed).",
        ),
        "berth_replication_last_success_timestamp_seconds" => ("gauge", "When each rule last copied an image to its destination (Unix seconds)."),
        "berth_replication_pending" => ("gauge", "Replication outbox entries waiting to be copied (due now or retrying later)."),
        "berth_replication_failed_entries" => ("gauge", "Replication outbox entries kept as failed after their last attempt."),
        _ => return None,
    })
}

/// The tally of a full run's copies (not through the outbox), for [`Metrics::count_replication`]:
/// a copy that failed is not retried by that run.
pub fn full_run_attempt(ok: bool) -> Attempt {
    if ok {
        Attempt::Done
    } else {
        Attempt::Failed
    }
}
