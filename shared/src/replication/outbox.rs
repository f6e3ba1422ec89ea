//! On-push replication through the webhooks' durable outbox (src/webhooks/outbox.rs): one
//! entry per (rule, manifest pushed or deleted), written as part of the request that caused
//! it, under `replication/due/`; claimed, retried with backoff and kept as failed exactly as
//! webhook deliveries are (the same record: the event, and the rule's name as the endpoint).
//! [`Registry::replicate_due`] is the step each runtime runs on its schedule.

use serde::Serialize;

use super::ReplicationRule;
use crate::events::{Event, EventAction, Outcome, TargetKind};
use crate::mirror::UpstreamClient;
use crate::storage::{BatchOp, BlobStore, MetaStore, Precondition, StorageResult};
use crate::webhooks::outbox::{claim, due_keys, move_entry, move_to_failed, Queue};
use crate::webhooks::{Delivery, HookEvent, HookKind};
use crate::Registry;

pub const QUEUE: Queue = Queue { due: "replication/due/", failed: "replication/failed/" };

/// A copy may take long (a 1 GiB layer); the claim holds well beyond it.
pub const LEASE_SECS: u64 = 3600;
/// Attempts before an entry is kept as failed (`berth replicate retry` puts it back).
pub const MAX_ATTEMPTS: u32 = 12;
/// Entries held by other workers that one round looks past to find `batch` it can claim.
const LOOK_PAST: usize = 256;
const RETRY_BASE_SECS: u64 = 5;
const RETRY_MAX_SECS: u64 = 1800;
const MAX_ERROR_CHARS: usize = 300;

/// The wait after `attempts` failures: 5 s, 10 s, 20 s... up to half an hour.
pub fn backoff(attempts: u32) -> u64 {
    RETRY_BASE_SECS.saturating_mul(1u64 << attempts.saturating_sub(1).min(30)).min(RETRY_MAX_SECS)
}

/// The outbox entries of a request's event: a manifest pushed (per matching tag, or by digest)
/// or deleted (rules that replicate deletes), for each rule with `on_push`.
pub(crate) fn enqueue_ops(rules: &[ReplicationRule], event: &Event, random: &[u8; 16]) -> Vec<BatchOp> {
    let t = &event.target;
    let (Some(repo), TargetKind::Manifest, Outcome::Ok) = (&event.repository, t.kind, event.outcome) else { return Vec::new() };
    let (kind, references): (HookKind, Vec<Option<String>>) = match event.action {
        EventAction::Push if t.tags.is_empty() => (HookKind::Push, vec![None]),
        EventAction::Push => (HookKind::Push, t.tags.iter().cloned().map(Some).collect()),
        EventAction::Delete => (HookKind::Delete, vec![t.reference.clone().filter(|r| !r.contains(':'))]),
        _ => return Vec::new(),
    };
    let mut ops = Vec::new();
    for rule in rules.iter().filter(|r| r.on_push && (kind != HookKind::Delete || r.deletes)) {
        for (n, tag) in references.iter().enumerate() {
            if !rule.matches(repo, tag.as_deref()) {
                continue;
            }
            let id = crate::webhooks::event_id(event.at, random, n as u32);
            let target = Target { repo, tag: tag.clone(), digest: t.digest.clone() };
            ops.push(entry_op(rule, kind, target, event.at, event.subject.clone(), id));
        }
    }
    ops
}

/// What an outbox entry copies: a repository's tag, or a manifest by digest.
pub(crate) struct Target<'a> {
    pub repo: &'a str,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// The conditional write of one outbox entry of `rule`, due at `at` (pushes, deletes, and the
/// scheduled full runs of src/replication/scheduled.rs).
pub(crate) fn entry_op(rule: &ReplicationRule, kind: HookKind, target: Target, at: u64, actor: String, id: String) -> BatchOp {
    let d = Delivery {
        event: HookEvent {
            id,
            kind,
            at,
            repository: Some(target.repo.to_owned()),
            digest: target.digest,
            media_type: None,
            size: None,
            tag: target.tag,
            previous_digest: None,
            actor,
            request: None,
            detail: None,
        },
        endpoint: rule.name.clone(),
        attempts: 0,
        next_at: at,
        lease_until: 0,
        last_error: None,
    };
    BatchOp::Put { key: d.due_key_in(QUEUE), value: d.encode(), cond: Precondition::Absent }
}

/// What one [`Registry::replicate_due`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DueReport {
    pub copied: usize,
    pub retrying: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// Runs the replication entries due at `now`, up to `batch`, one after the other (a copy
    /// is many requests already). Any number of workers may call it at once.
    pub async fn replicate_due(&self, client: &UpstreamClient, now: u64, batch: usize) -> StorageResult<DueReport> {
        let mut report = DueReport::default();
        // Entries other workers hold stay first in the list (a claim does not move them): look
        // past them, or `batch` long copies elsewhere (or claims of killed invocations, for
        // the lease) would stop every other worker.
        for key in due_keys(&self.meta, QUEUE, now, batch.saturating_add(LOOK_PAST)).await? {
            if report.copied + report.retrying + report.failed >= batch {
                break;
            }
            let Some((mut entry, version)) = claim(&self.meta, &key, now, LEASE_SECS).await? else {
                report.skipped += 1;
                continue;
            };
            let rule = self.replication_rules().iter().find(|r| r.name == entry.endpoint);
            let result = match (rule, &entry.event.repository) {
                (None, _) => Err("the rule is no longer in the config".to_owned()),
                (_, None) => Err("the entry names no repository".to_owned()),
                (Some(rule), Some(repo)) => {
                    let reference = entry.event.tag.clone().or(entry.event.digest.clone()).unwrap_or_default();
                    let outcome = if entry.event.kind == HookKind::Delete {
                        self.delete_at(client, rule, repo, &reference, now).await.map(|_| ())
                    } else {
                        self.replicate(client, rule, repo, &reference, now).await.map(|_| ())
                    };
                    outcome.map_err(|e| e.message)
                }
            };
            entry.attempts += 1;
            match result {
                Ok(()) => {
                    self.meta.apply(vec![BatchOp::Delete { key: key.clone(), cond: Precondition::Version(version) }]).await?;
                    report.copied += 1;
                }
                Err(e) => {
                    tracing::warn!(rule = %entry.endpoint, attempts = entry.attempts, error = %e, "replication failed");
                    entry.last_error = Some(e.chars().take(MAX_ERROR_CHARS).collect());
                    if entry.attempts >= MAX_ATTEMPTS || rule.is_none() {
                        move_to_failed(&self.meta, QUEUE, &key, &version, &entry).await?;
                        report.failed += 1;
                    } else {
                        entry.next_at = now + backoff(entry.attempts);
                        entry.lease_until = 0;
                        move_entry(&self.meta, &key, &version, entry.due_key_in(QUEUE), &entry).await?;
                        report.retrying += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Writes the replication entries of a request's event (none when no rule wants it);
    /// returns how many, so the response can carry the runtime's wake-up (`webhooks::Enqueued`).
    pub(crate) async fn record_replication(&self, event: &Event, ctx: &crate::RequestContext) -> StorageResult<usize> {
        let ops = enqueue_ops(self.replication_rules(), event, &ctx.random);
        if ops.is_empty() {
            return Ok(0);
        }
        let n = ops.len();
        if self.meta.apply(ops).await?.iter().all(|a| *a) {
            Ok(n)
        } else {
            Err(crate::StorageError::new("a replication outbox entry with the same key exists (random ids repeated)"))
        }
    }
}
