//! The webhook events of replication outcomes (docs/webhooks.md): `replication_done` when an
//! on-push entry reached its destination, `replication_failed` when its last attempt failed
//! (as ECR's "Replication Action" SUCCESS/FAILURE and Harbor's REPLICATION with its status: one
//! event per image and final result; attempts that will be retried are not events, they are in
//! the metrics). [`super::outbox`] writes them in the same batch as the entry's removal or move
//! to the failed list, so the outcome and its event are recorded together.
//!
//! Pull mode ([`super::sync`]) emits the same two kinds, one per tag a run copied, removed
//! (`delete_missing`) or failed on, about the local repository: [`sync_event`].

use serde_json::json;
use sha2::{Digest, Sha256};

use super::copy::CopyReport;
use super::sync::{SyncReport, SyncRule};
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
    let kind = kind_of(copied.is_ok());
    let source = &entry.event;
    let report = copied.ok().flatten();
    let destination_repository = match (rule, &source.repository) {
        (Some(rule), Some(repo)) => Some(rule.destination_name(repo)),
        _ => None,
    };
    // What was copied (a tag's digest as the copy resolved it), else what was pushed.
    let digest = report.and_then(|r| r.digest.clone()).or_else(|| source.digest.clone());
    let detail = json!({
        "rule": entry.endpoint,
        "action": if source.kind == HookKind::Delete { "delete" } else { "copy" },
        "destination": rule.map(|r| r.destination.as_str()),
        "destinationRepository": destination_repository,
        "attempts": entry.attempts,
        "error": copied.err(),
        "report": report,
        "cause": { "kind": source.kind, "actor": source.actor, "at": source.at },
    });
    outcome(outcome_id(due_at, key, kind), kind, now, source.repository.clone(), digest, source.tag.clone(), detail)
}

/// What a sync did with one tag (or, with no tag, a repository whose tag list failed).
pub(crate) struct SyncOutcome<'a> {
    /// The remote repository.
    pub repo: &'a str,
    pub tag: Option<&'a str>,
    /// The digest copied (or the one a removed tag named), when known.
    pub digest: Option<String>,
    /// `"sync"` (a copy here) or `"delete"` (a tag removed: `delete_missing`).
    pub action: &'static str,
    /// This tag's share of the run's report, or why it failed.
    pub result: Result<&'a SyncReport, &'a str>,
}

/// The event of one tag of a sync run of `rule` that started at `started`. Its id is derived
/// from the rule, repository, tag, action and the run's start (like [`outcome_id`]): a run
/// repeated at the same second writes the same event again, which receivers deduplicate on.
pub(crate) fn sync_event(rule: &SyncRule, o: &SyncOutcome, started: u64, now: u64) -> HookEvent {
    let kind = kind_of(o.result.is_ok());
    let local = rule.local_name(o.repo);
    let key = format!("sync/{}/{local}@{}/{}", rule.name, o.tag.unwrap_or(""), o.action);
    let detail = json!({
        "rule": rule.name,
        "action": o.action,
        "source": rule.source,
        "sourceRepository": o.repo,
        "error": o.result.err(),
        "report": o.result.ok(),
    });
    outcome(outcome_id(started, &key, kind), kind, now, Some(local), o.digest.clone(), o.tag.map(str::to_owned), detail)
}

fn kind_of(ok: bool) -> HookKind {
    if ok {
        HookKind::ReplicationDone
    } else {
        HookKind::ReplicationFailed
    }
}

/// A replication outcome event (either mode): no request caused it, the actor is [`ACTOR`].
fn outcome(
    id: String,
    kind: HookKind,
    at: u64,
    repository: Option<String>,
    digest: Option<String>,
    tag: Option<String>,
    detail: serde_json::Value,
) -> HookEvent {
    HookEvent {
        id,
        kind,
        at,
        repository,
        digest,
        media_type: None,
        size: None,
        tag,
        previous_digest: None,
        actor: ACTOR.to_owned(),
        request: None,
        detail: Some(detail),
    }
}
