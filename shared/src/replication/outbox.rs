//! On-push replication through the webhooks' durable outbox (src/webhooks/outbox.rs): one
//! entry per (rule, manifest pushed or deleted), written as part of the request that caused
//! it, under `replication/due/`; claimed, retried with backoff and kept as failed exactly as
//! webhook deliveries are (the same record: the event, and the rule's name as the endpoint).
//! [`Registry::replicate_due`] is the step each runtime runs on its schedule.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{CopyReport, ReplicationRule, RuleStatus};
use crate::events::{Event, EventAction, Outcome, TargetKind};
use crate::mirror::UpstreamClient;
use crate::storage::{BatchOp, BlobStore, MetaStore, Precondition, StorageResult};
use crate::webhooks::outbox::{claim, due_keys, failed_ops, move_ops, Queue};
use crate::webhooks::{Delivery, HookEvent, HookKind};
use crate::Registry;

pub const QUEUE: Queue = Queue { due: "replication/due/", failed: "replication/failed/" };

/// A copy may take long (a 1 GiB layer); the claim holds well beyond it.
pub const LEASE_SECS: u64 = 3600;
/// Entries held by other workers that one round looks past to find `batch` it can claim.
const LOOK_PAST: usize = 256;
const MAX_ERROR_CHARS: usize = 300;

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

/// What became of one attempt of an entry (or one copy of a full run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Copied (or deleted) at the destination.
    Done,
    /// Failed; the entry is due again after its backoff.
    Retrying,
    /// Failed for the last time: the entry is kept as failed (a full run's copy: not retried).
    Failed,
}

impl Attempt {
    /// The `result` label of `berth_replication_copies_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Attempt::Done => "done",
            Attempt::Retrying => "retrying",
            Attempt::Failed => "failed",
        }
    }
}

/// One rule's share of a [`DueReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleCounts {
    pub copied: usize,
    pub retrying: usize,
    pub failed: usize,
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
        more: Vec::new(),
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
    /// The same counts by rule (for metrics labelled by rule; names come from the config, or
    /// from entries of a rule since removed).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, RuleCounts>,
}

impl DueReport {
    /// Counts one attempt of `rule`'s.
    pub fn count(&mut self, rule: &str, attempt: Attempt) {
        let r = self.rules.entry(rule.to_owned()).or_default();
        let (total, by_rule) = match attempt {
            Attempt::Done => (&mut self.copied, &mut r.copied),
            Attempt::Retrying => (&mut self.retrying, &mut r.retrying),
            Attempt::Failed => (&mut self.failed, &mut r.failed),
        };
        *total += 1;
        *by_rule += 1;
    }
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// Runs the replication entries due at `now`, up to `batch`, one after the other (a copy
    /// is many requests already). Any number of workers may call it at once.
    ///
    /// An attempt's outcome is recorded in one batch: the rule's status, the webhook event of
    /// a final outcome (`replication_done`, `replication_failed`; src/replication/events.rs),
    /// then the entry's removal or move. On a store with transactions that is one commit; on
    /// one without (R2, S3) the event comes before the move, so a crash in between repeats the
    /// attempt and writes the event again under the same id, never loses it. A crash between
    /// the copy and the batch leaves the entry claimed: it runs again when its lease lapses.
    pub async fn replicate_due(&self, client: &UpstreamClient, now: u64, batch: usize) -> StorageResult<DueReport> {
        let mut report = DueReport::default();
        // Entries other workers hold stay first in the list (a claim does not move them): look
        // past them, or `batch` long copies elsewhere (or claims of killed invocations, for
        // the lease) would stop every other worker.
        for key in due_keys(&*self.meta, QUEUE, now, batch.saturating_add(LOOK_PAST)).await? {
            if report.copied + report.retrying + report.failed >= batch {
                break;
            }
            let Some((mut entry, version)) = claim(&*self.meta, &key, now, LEASE_SECS).await? else {
                report.skipped += 1;
                continue;
            };
            let due_at = entry.next_at;
            let rule = self.replication_rules().iter().find(|r| r.name == entry.endpoint);
            let reference = entry.event.tag.clone().or(entry.event.digest.clone()).unwrap_or_default();
            // Ok(None): a delete, which has no copy report.
            let result: Result<Option<CopyReport>, String> = match (rule, &entry.event.repository) {
                (None, _) => Err("the rule is no longer in the config".to_owned()),
                (_, None) => Err("the entry names no repository".to_owned()),
                (Some(rule), Some(repo)) if entry.event.kind == HookKind::Delete => {
                    self.delete_at(client, rule, repo, &reference, now).await.map(|()| None).map_err(|e| e.message)
                }
                (Some(rule), Some(repo)) => self.copy_to(client, rule, repo, &reference, now).await.map(Some).map_err(|e| e.message),
            };
            entry.attempts += 1;
            let (attempt, transition) = match &result {
                Ok(_) => (Attempt::Done, vec![BatchOp::Delete { key: key.clone(), cond: Precondition::Version(version.clone()) }]),
                Err(e) => {
                    tracing::warn!(rule = %entry.endpoint, attempts = entry.attempts, error = %e, "replication failed");
                    entry.last_error = Some(e.chars().take(MAX_ERROR_CHARS).collect());
                    match rule.filter(|r| entry.attempts < r.max_attempts) {
                        None => (Attempt::Failed, failed_ops(QUEUE, &key, &version, &entry)),
                        Some(rule) => {
                            entry.next_at = now + rule.backoff(entry.attempts);
                            entry.lease_until = 0;
                            (Attempt::Retrying, move_ops(&key, &version, entry.due_key_in(QUEUE), &entry))
                        }
                    }
                }
            };
            let mut ops = Vec::new();
            if let (Some(hooks), Attempt::Done | Attempt::Failed) = (&self.hooks, attempt) {
                let copied = result.as_ref().map(Option::as_ref).map_err(String::as_str);
                ops.extend(hooks.outcome_ops(&super::events::outcome_event(&entry, &key, due_at, rule, copied, now)));
            }
            // The rule's last result, as `berth replicate status` shows it (a delete has none).
            if let (Some(rule), Some(repo), false) = (rule, &entry.event.repository, entry.event.kind == HookKind::Delete) {
                let none = CopyReport::default();
                let copied = match &result {
                    Ok(r) => Ok(r.as_ref().unwrap_or(&none)),
                    Err(e) => Err(e.as_str()),
                };
                let status = RuleStatus::of(&rule.name, repo, &reference, now, copied);
                let value = bytes::Bytes::from(serde_json::to_vec(&status).unwrap_or_default());
                ops.push(BatchOp::Put { key: status.key(), value, cond: Precondition::None });
            }
            ops.extend(transition);
            self.meta.apply(ops).await?;
            report.count(&entry.endpoint, attempt);
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

/// Most entries [`outbox_size`] counts per list (a scrape reads it: bounded).
pub const MAX_COUNTED: usize = 10_000;

/// The outbox's size: entries waiting (due now or retrying later) and kept as failed, each
/// counted up to [`MAX_COUNTED`].
pub async fn outbox_size<M: MetaStore>(meta: &M) -> StorageResult<(usize, usize)> {
    let waiting = meta.list(QUEUE.due, None, MAX_COUNTED).await?.len();
    let failed = meta.list(QUEUE.failed, None, MAX_COUNTED).await?.len();
    Ok((waiting, failed))
}
