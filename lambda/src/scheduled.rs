//! The function's second event source: an EventBridge schedule (terraform/modules/aws-region)
//! invokes it with a "Scheduled Event", and it runs the core's garbage collection
//! (`berth_core::gc`, docs/gc.md) until a margin before the invocation's deadline. The run's
//! checkpoint is in the metadata bucket, so the next scheduled invocation continues it.
//! Before GC, it delivers the webhook events that are due (docs/webhooks.md): the core's
//! `deliver` step, as `berth serve` runs it, so delivery is as often as the schedule; then
//! due replication copies and the scheduled full runs (docs/replication.md).

use std::time::{SystemTime, UNIX_EPOCH};

use berth_core::{BlobStore, Budget, GcReport, MetaStore, Registry};
use serde_json::Value;

/// The most time left for the step under way and the checkpoint write after GC stops.
const MAX_MARGIN_SECS: u64 = 60;

/// When GC stops: before the invocation's deadline (Unix milliseconds) by a quarter of the time
/// left, at most [`MAX_MARGIN_SECS`]. A fixed 60 s margin made every run of a function with a
/// timeout of 60 s or less (Terraform allows 10) stop before its first step: nothing was ever
/// collected.
fn stop_at(deadline_ms: u64, now: u64) -> u64 {
    let deadline = deadline_ms / 1000;
    let left = deadline.saturating_sub(now);
    deadline.saturating_sub((left / 4).min(MAX_MARGIN_SECS))
}

/// Whether the event is EventBridge's scheduled event (an HTTP event never has these fields).
pub fn is_scheduled(event: &Value) -> bool {
    event.get("source").and_then(Value::as_str) == Some("aws.events")
        && event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Delivers due webhook events in batches until none is left or a quarter of the invocation's
/// time is used (GC gets the rest). A failed round is logged; its entries stay due.
pub async fn deliver<B: BlobStore, M: MetaStore>(registry: &Registry<B, M>, deadline_ms: u64) {
    let Some(hooks) = registry.webhooks() else { return };
    let sender = match berth_core::native::WebhookPost::new() {
        Ok(sender) => sender,
        Err(e) => return tracing::error!("{e}"),
    };
    let start = now();
    let stop = start + (deadline_ms / 1000).saturating_sub(start) / 4;
    let batch = berth_core::webhooks::outbox::DEFAULT_BATCH;
    let concurrency = berth_core::webhooks::outbox::DEFAULT_CONCURRENCY;
    loop {
        match hooks.deliver(registry.meta_store(), &sender, now(), batch, concurrency).await {
            Ok(r) => {
                tracing::info!(delivered = r.delivered, retrying = r.retrying, failed = r.failed, "webhook deliveries");
                if r.delivered + r.retrying + r.failed < batch || now() >= stop {
                    return;
                }
            }
            Err(e) => return tracing::warn!(error = %e.message, "webhook delivery round failed; the next invocation retries"),
        }
    }
}

/// Runs due replication copies (docs/replication.md) until none is left or `share` of the
/// time to the invocation's deadline has passed (checked between batches); with `full` (the
/// schedule), first enqueues each rule's full run when `BERTH_REPLICATION_SCHEDULE` says it is
/// due. A failed round is logged; its entries stay due.
pub async fn replicate<B: BlobStore, M: MetaStore>(
    registry: &Registry<B, M>,
    emf: Option<&crate::emf::Emf>,
    deadline_ms: u64,
    full: bool,
    share: f64,
) {
    if registry.replication_rules().is_empty() && (!full || registry.sync_rules().is_empty()) {
        return;
    }
    let Some(client) = registry.upstream() else {
        return tracing::error!("replication rules but no HTTP client (the function's init makes one)");
    };
    if full {
        let every = match crate::config::replication_schedule() {
            Ok(every) => every,
            Err(e) => return tracing::error!("{e}"),
        };
        match registry.enqueue_full_runs(now(), every).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "scheduled full replication run enqueued"),
            Err(e) => tracing::warn!(error = %e.message, "scheduled replication run not enqueued; the next invocation retries"),
        }
        // Pull mode (sync rules): each rule whose interval has passed, one caller at a time.
        match registry.sync_due(client, now()).await {
            Ok(r) if r.ran > 0 => tracing::info!(ran = r.ran, failed = r.failed, "sync rules run"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e.message, "sync rules not run; the next invocation retries"),
        }
    }
    let start = now();
    let stop = start + ((deadline_ms / 1000).saturating_sub(start) as f64 * share) as u64;
    let clock = now;
    let budget = Budget { clock: &clock, deadline: Some(stop), max_steps: None };
    let started = std::time::Instant::now();
    match registry.replicate_for(client, BATCH, &budget).await {
        Ok(r) => {
            tracing::info!(copied = r.copied, retrying = r.retrying, failed = r.failed, skipped = r.skipped, "replication");
            if let Some(emf) = emf {
                emf.replication_run(&r, started.elapsed().as_secs_f64());
            }
        }
        Err(e) => tracing::warn!(error = %e.message, "replication round failed; the next invocation retries"),
    }
}

/// Replication entries taken per round (each a whole copy); the time is checked between rounds.
const BATCH: usize = 4;

/// One scheduled invocation: GC until `deadline_ms` (the invocation's, Unix milliseconds)
/// minus a margin. The report is the invocation's result and a log line.
pub async fn collect<B: BlobStore, M: MetaStore>(registry: &Registry<B, M>, deadline_ms: u64) -> Result<GcReport, String> {
    // S3 has no multi-key transactions: dead link records stay (docs/gc.md).
    let opts = crate::config::gc_options()?;
    let deadline = stop_at(deadline_ms, now());
    let clock = now;
    let budget = Budget { clock: &clock, deadline: Some(deadline), max_steps: None };
    let report = registry.gc(&opts, &budget).await.map_err(|e| format!("garbage collection: {}", e.message))?;
    tracing::info!(
        finished = report.finished,
        steps = report.steps,
        content_deleted = report.content_deleted,
        bytes_freed = report.bytes_freed,
        uploads_aborted = report.uploads_aborted,
        dry_run = report.dry_run,
        "garbage collection invocation"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_timeouts_still_leave_time_to_collect() {
        let now = 1_800_000_000;
        // A 30 s function: stops 7 s before its deadline, so 23 s of collecting.
        assert_eq!(stop_at((now + 30) * 1000, now), now + 23);
        // 10 s, Terraform's smallest: 8 s.
        assert_eq!(stop_at((now + 10) * 1000, now), now + 8);
        // 15 minutes: the margin is capped at 60 s.
        assert_eq!(stop_at((now + 900) * 1000, now), now + 840);
        // A deadline already past never underflows.
        assert_eq!(stop_at((now - 5) * 1000, now), now - 5);
    }

    #[test]
    fn tells_a_schedule_from_http() {
        let scheduled = serde_json::json!({
            "version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "1", "time": "2026-01-01T00:00:00Z", "region": "eu-west-1",
            "resources": ["arn:aws:events:eu-west-1:1:rule/berth-gc"], "detail": {}
        });
        assert!(is_scheduled(&scheduled));
        let http = serde_json::json!({ "version": "2.0", "rawPath": "/v2/", "requestContext": { "http": { "method": "GET" } } });
        assert!(!is_scheduled(&http));
    }
}
