//! The webhook events of replication outcomes (docs/webhooks.md): `replication_done` when an
//! on-push entry reached its destination, `replication_failed` when its last attempt failed
//! (as ECR's "Replication Action" SUCCESS/FAILURE and Harbor's REPLICATION with its status: one
//! event per image and final result; attempts that will be retried are not events, they are in
//! the metrics). [`super::outbox`] writes them in the same batch as the entry's removal or move
//! to the failed list, so the outcome and its event are recorded together.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::copy::CopyReport;
use super::ReplicationRule;
use crate::webhooks::{Delivery, HookEvent, HookKind};

/// Who a replication event names as its actor (the push that caused it is in `detail`).
pub const ACTOR: &str = "berth-replication";

/// The event id of an entry's outcome: the time the attempt was due, then 64 bits of a hash of
/// the entry's outbox key and the outcome. Derived, not random: an attempt repeated because
/// the process died before it could record the outcome writes the same id again, which
/// receivers deduplicate on. (A failed entry put back by an admin has a new key: its next
/// outcome is a new event.)
pub(crate) fn outcome_id(due_at: u64, key: &str, kind: HookKind) -> String {
    let digest = Sha256::new()
        .chain_update(b"berth replication outcome\0")
        .chain_update(key.as_bytes())
        .chain_update(b"\0")
        .chain_update(kind.as_str().as_bytes())
        .finalize();
    format!("{due_at:010}-{}-0", hex::encode(&digest[..8]))
}

/// The event of an entry's final outcome at `now`. `entry` is the entry after the attempt
/// (its attempts counted, its last error set); `due_at` and `key` are the attempt's.
pub(crate) fn outcome_event(
    entry: &Delivery,
    key: &str,
    due_at: u64,
    rule: Option<&ReplicationRule>,
    copied: Result<Option<&CopyReport>, &str>,
    now: u64,
) -> HookEvent {
    let kind = if copied.is_ok() { HookKind::ReplicationDone } else { HookKind::ReplicationFailed };
    let source = &entry.event;
    let report = copied.ok().flatten();
    let destination_repository = match (rule, &source.repository) {
        (Some(rule), Some(repo)) => Some(rule.destination_name(repo)),
        _ => None,
    };
    HookEvent {
        id: outcome_id(due_at, key, kind),
        kind,
        at: now,
        repository: source.repository.clone(),
        // What was copied (a tag's digest as the copy resolved it), else what was pushed.
        digest: report.and_then(|r| r.digest.clone()).or_else(|| source.digest.clone()),
        media_type: None,
        size: None,
        tag: source.tag.clone(),
        previous_digest: None,
        actor: ACTOR.to_owned(),
        request: None,
        detail: Some(json!({
            "rule": entry.endpoint,
            "action": if source.kind == HookKind::Delete { "delete" } else { "copy" },
            "destination": rule.map(|r| r.destination.as_str()),
            "destinationRepository": destination_repository,
            "attempts": entry.attempts,
            "error": copied.err(),
            "report": report,
            "cause": { "kind": source.kind, "actor": source.actor, "at": source.at },
        })),
    }
}
