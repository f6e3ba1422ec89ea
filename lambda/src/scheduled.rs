//! The function's second event source: an EventBridge schedule (terraform/modules/aws-region)
//! invokes it with a "Scheduled Event", and it runs the core's garbage collection
//! (`berth_core::gc`, docs/gc.md) until a margin before the invocation's deadline. The run's
//! checkpoint is in the metadata bucket, so the next scheduled invocation continues it.

use std::time::{SystemTime, UNIX_EPOCH};

use berth_core::{BlobStore, Budget, GcReport, MetaStore, Registry};
use serde_json::Value;


/// Time left for the last step and the checkpoint write after the deadline GC stops at.
const MARGIN_SECS: u64 = 60;

/// Whether the event is EventBridge's scheduled event (an HTTP event never has these fields).
pub fn is_scheduled(event: &Value) -> bool {
    event.get("source").and_then(Value::as_str) == Some("aws.events")
        && event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One scheduled invocation: GC until `deadline_ms` (the invocation's, Unix milliseconds)
/// minus a margin. The report is the invocation's result and a log line.
pub async fn collect<B: BlobStore, M: MetaStore>(registry: &Registry<B, M>, deadline_ms: u64) -> Result<GcReport, String> {
    // S3 has no multi-key transactions: dead link records stay (docs/gc.md).
    let opts = crate::config::gc_options()?;
    let deadline = (deadline_ms / 1000).saturating_sub(MARGIN_SECS);
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
