//! The durable outbox in the [`MetaStore`], and the `deliver` step every runtime runs outside
//! requests.
//!
//! One record per (event, endpoint), under `webhooks/due/<next_at>-<event id>.<endpoint>`: keys
//! sort by when they are due, so a worker lists from the start and stops at the first entry in
//! the future. A worker claims an entry with a conditional write of a lease (`lease_until`) on
//! the version it read: of two workers, one write fails and that worker skips the entry. A
//! delivered entry is deleted on condition that it is still the claimed version; a failed one
//! moves to a later key with one more attempt (put new, then delete old, in one batch); after
//! the last attempt it moves to `webhooks/failed/<event id>.<endpoint>`.
//!
//! At least once: an entry leaves `due/` only after its receiver answered 2xx (or it was
//! moved to `failed/`). A worker that dies mid-delivery leaves its lease, which lapses; the next
//! worker sends the entry again with the same event id, which receivers deduplicate on.

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::config::WebhookConfig;
use super::payload::{self, HookEvent};
use super::{HttpPost, Webhooks};
use crate::error::StorageError;
use crate::storage::{BatchOp, MetaStore, Precondition, PutOutcome, StorageResult};

pub const DUE: &str = "webhooks/due/";
pub const FAILED: &str = "webhooks/failed/";

/// Which outbox: the same records, claims, retries and admin listing serve webhooks and
/// replication (src/replication/outbox.rs), under their own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub due: &'static str,
    pub failed: &'static str,
}

pub const WEBHOOKS: Queue = Queue { due: DUE, failed: FAILED };

/// How long a claim holds: well over a delivery's timeout (runtimes cut a delivery off after a
/// few seconds), so a live worker never loses its claim mid-delivery.
pub const LEASE_SECS: u64 = 120;
/// Most entries one `deliver` call looks at, and sends at once.
pub const DEFAULT_BATCH: usize = 64;
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The last error kept on a record (a receiver's status line or a connection error).
const MAX_ERROR_CHARS: usize = 300;

/// One delivery of one event (or, for pulls, a batch of events) to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub event: HookEvent,
    /// Events sent in the same request after `event`: pulls batched by
    /// [`super::Webhooks::flush_pulls`] (up to [`MAX_BATCH_EVENTS`] in all). Empty for the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<HookEvent>,
    pub endpoint: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix seconds at which the next attempt is due.
    pub next_at: u64,
    /// A worker holds the entry until then (0: nobody).
    #[serde(default)]
    pub lease_until: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Events one batched delivery carries at most: one POST of about 50 KB of pulls.
pub const MAX_BATCH_EVENTS: usize = 100;

impl Delivery {
    /// A first delivery of `event` to `endpoint`, due at once.
    pub(crate) fn new(event: HookEvent, endpoint: &str) -> Self {
        Delivery { next_at: event.at, event, more: Vec::new(), endpoint: endpoint.to_owned(), attempts: 0, lease_until: 0, last_error: None }
    }

    /// The events this delivery sends, in order.
    pub fn events(&self) -> impl Iterator<Item = &HookEvent> {
        std::iter::once(&self.event).chain(&self.more)
    }

    /// `<event id>.<endpoint>`: names the delivery in admin commands.
    pub fn id(&self) -> String {
        format!("{}.{}", self.event.id, self.endpoint)
    }

    pub(crate) fn due_key(&self) -> String {
        self.due_key_in(WEBHOOKS)
    }

    pub(crate) fn due_key_in(&self, q: Queue) -> String {
        format!("{}{:012}-{}", q.due, self.next_at, self.id())
    }

    pub(crate) fn failed_key_in(&self, q: Queue) -> String {
        format!("{}{}", q.failed, self.id())
    }

    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(key: &str, bytes: &[u8]) -> StorageResult<Delivery> {
        serde_json::from_slice(bytes).map_err(|e| StorageError::new(format!("outbox entry {key} is unreadable: {e}")))
    }
}

/// The ops that enqueue `event` for every endpoint that wants it (none: no op).
pub(crate) fn enqueue_ops(config: &WebhookConfig, event: &HookEvent) -> Vec<BatchOp> {
    // Absent: ids are random, so this holds; a collision must not overwrite an event.
    enqueue_ops_with(config, event, Precondition::Absent)
}

/// [`enqueue_ops`] with each put's condition: `None` for an event whose id is derived, not
/// random (a replication's outcome), which a repeated attempt may write again, identical.
pub(crate) fn enqueue_ops_with(config: &WebhookConfig, event: &HookEvent, cond: Precondition) -> Vec<BatchOp> {
    config
        .endpoints
        .iter()
        .filter(|e| e.wants(event.kind, event.repository.as_deref()))
        .map(|e| {
            let d = Delivery::new(event.clone(), &e.name);
            BatchOp::Put { key: d.due_key(), value: d.encode(), cond: cond.clone() }
        })
        .collect()
}

/// The endpoints that want `event`, each with its first delivery of it (not yet in the outbox).
pub(crate) fn deliveries(config: &WebhookConfig, event: &HookEvent) -> Vec<Delivery> {
    config.endpoints.iter().filter(|e| e.wants(event.kind, event.repository.as_deref())).map(|e| Delivery::new(event.clone(), &e.name)).collect()
}

/// `held` deliveries (single events, in order) as outbox entries of up to [`MAX_BATCH_EVENTS`]
/// events per endpoint, each written under its first event's id: one POST carries a batch.
pub(crate) fn batched_ops(held: &[Delivery]) -> Vec<BatchOp> {
    let mut by_endpoint: Vec<(&str, Vec<&Delivery>)> = Vec::new();
    for d in held {
        match by_endpoint.iter_mut().find(|(e, _)| *e == d.endpoint) {
            Some((_, list)) => list.push(d),
            None => by_endpoint.push((&d.endpoint, vec![d])),
        }
    }
    let mut ops = Vec::new();
    for (_, list) in by_endpoint {
        for chunk in list.chunks(MAX_BATCH_EVENTS) {
            let mut first = chunk[0].clone();
            first.more = chunk[1..].iter().flat_map(|d| d.events().cloned()).collect();
            ops.push(BatchOp::Put { key: first.due_key(), value: first.encode(), cond: Precondition::Absent });
        }
    }
    ops
}

/// What one `deliver` call did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliverReport {
    pub delivered: usize,
    /// Failed attempts that will be retried.
    pub retrying: usize,
    /// Moved to `failed/` (last attempt failed, or the endpoint is gone from the config).
    pub failed: usize,
    /// Claimed by another worker first.
    pub skipped: usize,
}

enum Outcome {
    Delivered,
    Retrying,
    Failed,
    Skipped,
}

impl Webhooks {
    /// Delivers what is due at `now`: up to `batch` entries, `concurrency` at a time. Call it on
    /// a schedule, outside requests; any number of workers may call it at once.
    pub async fn deliver<M: MetaStore>(
        &self,
        meta: &M,
        sender: &dyn HttpPost,
        now: u64,
        batch: usize,
        concurrency: usize,
    ) -> StorageResult<DeliverReport> {
        let due = due_keys(meta, WEBHOOKS, now, batch).await?;
        let outcomes: Vec<StorageResult<Outcome>> = futures_util::stream::iter(due)
            .map(|key| async move { self.deliver_one(meta, sender, &key, now).await })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut report = DeliverReport::default();
        for outcome in outcomes {
            match outcome? {
                Outcome::Delivered => report.delivered += 1,
                Outcome::Retrying => report.retrying += 1,
                Outcome::Failed => report.failed += 1,
                Outcome::Skipped => report.skipped += 1,
            }
        }
        Ok(report)
    }

    async fn deliver_one<M: MetaStore>(&self, meta: &M, sender: &dyn HttpPost, key: &str, now: u64) -> StorageResult<Outcome> {
        let Some(claimed) = claim(meta, key, now, LEASE_SECS).await? else { return Ok(Outcome::Skipped) };
        let (mut delivery, version) = claimed;
        let Some(endpoint) = self.config.endpoint(&delivery.endpoint) else {
            delivery.last_error = Some("the endpoint is no longer in the config".into());
            self.move_to_failed(meta, key, &version, &delivery).await?;
            return Ok(Outcome::Failed);
        };
        let events: Vec<&HookEvent> = delivery.events().collect();
        let body = payload::body_of(&events, endpoint.format, &self.registry_url);
        let headers = vec![
            ("content-type".to_owned(), payload::content_type_of(endpoint.format, events.len()).to_owned()),
            (payload::EVENT_ID_HEADER.to_owned(), delivery.event.id.clone()),
            (payload::EVENT_KIND_HEADER.to_owned(), delivery.event.kind.as_str().to_owned()),
            (payload::SIGNATURE_HEADER.to_owned(), payload::sign(endpoint.secret.as_bytes(), now, &body)),
            ("user-agent".to_owned(), "berth-webhooks/1".to_owned()),
        ];
        let result = match sender.post(&endpoint.url, endpoint.allow_private, headers, body).await {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => Err(format!("the receiver answered {status}")),
            Err(e) => Err(e),
        };
        delivery.attempts += 1;
        match result {
            Ok(()) => {
                // Only while the claim is ours: if it lapsed and another worker took the entry,
                // that worker removes it (the event went twice, with the same id).
                meta.apply(vec![BatchOp::Delete { key: key.to_owned(), cond: Precondition::Version(version) }]).await?;
                Ok(Outcome::Delivered)
            }
            Err(e) => {
                delivery.last_error = Some(e.chars().take(MAX_ERROR_CHARS).collect());
                if delivery.attempts >= self.config.max_attempts {
                    self.move_to_failed(meta, key, &version, &delivery).await?;
                    return Ok(Outcome::Failed);
                }
                delivery.next_at = now + self.config.backoff(delivery.attempts);
                delivery.lease_until = 0;
                move_entry(meta, key, &version, delivery.due_key(), &delivery).await?;
                Ok(Outcome::Retrying)
            }
        }
    }

    async fn move_to_failed<M: MetaStore>(&self, meta: &M, key: &str, version: &str, delivery: &Delivery) -> StorageResult<()> {
        move_to_failed(meta, WEBHOOKS, key, version, delivery).await
    }
}

/// Moves our claimed entry to the queue's failed list.
pub(crate) async fn move_to_failed<M: MetaStore>(meta: &M, q: Queue, key: &str, version: &str, delivery: &Delivery) -> StorageResult<()> {
    meta.apply(failed_ops(q, key, version, delivery)).await?;
    Ok(())
}

/// The ops of [`move_to_failed`], for a caller that writes more in the same batch.
pub(crate) fn failed_ops(q: Queue, key: &str, version: &str, delivery: &Delivery) -> Vec<BatchOp> {
    let d = Delivery { lease_until: 0, ..delivery.clone() };
    move_ops(key, version, d.failed_key_in(q), &d)
}

/// The due time in an outbox key.
fn due_time(q: Queue, key: &str) -> Option<u64> {
    key.strip_prefix(q.due)?.get(..12)?.parse().ok()
}

/// The keys of up to `batch` entries due at `now`, soonest first.
pub(crate) async fn due_keys<M: MetaStore>(meta: &M, q: Queue, now: u64, batch: usize) -> StorageResult<Vec<String>> {
    let keys = meta.list(q.due, None, batch.max(1)).await?;
    // Keys sort by due time: stop at the first one in the future.
    Ok(keys
        .into_iter()
        .take_while(|k| due_time(q, k).is_none_or(|t| t <= now))
        .filter(|k| due_time(q, k).is_some())
        .collect())
}

/// Takes the entry at `key` for this worker until `now + lease`, or None if it is gone
/// or another worker holds it. Returns the entry and the version our claim wrote.
pub(crate) async fn claim<M: MetaStore>(meta: &M, key: &str, now: u64, lease: u64) -> StorageResult<Option<(Delivery, String)>> {
    let Some(current) = meta.get(key).await? else { return Ok(None) };
    let delivery = match Delivery::decode(key, &current.value) {
        Ok(d) => d,
        Err(e) => {
            // Not ours to send (a newer version's record, or damage): left where it is, said
            // once per round, and never in the way of the others.
            tracing::warn!(error = %e.message, "skipping an outbox entry");
            return Ok(None);
        }
    };
    if delivery.lease_until > now {
        return Ok(None);
    }
    let claimed = Delivery { lease_until: now + lease, ..delivery };
    match meta.put(key, claimed.encode(), Precondition::Version(current.version)).await? {
        PutOutcome::Written { version } => Ok(Some((claimed, version))),
        PutOutcome::Conflict => Ok(None),
    }
}

/// Moves our claimed entry from `key` (at `version`) to `to`. The new record is written first:
/// a crash between the two writes leaves the entry twice (sent twice, same id), never zero times.
pub(crate) async fn move_entry<M: MetaStore>(meta: &M, key: &str, version: &str, to: String, d: &Delivery) -> StorageResult<()> {
    meta.apply(move_ops(key, version, to, d)).await?;
    Ok(())
}

/// The ops of [`move_entry`], in its order, for a caller that writes more in the same batch.
pub(crate) fn move_ops(key: &str, version: &str, to: String, d: &Delivery) -> Vec<BatchOp> {
    vec![
        BatchOp::Put { key: to, value: d.encode(), cond: Precondition::None },
        BatchOp::Delete { key: key.to_owned(), cond: Precondition::Version(version.to_owned()) },
    ]
}

/// Lets go of every claim in the outbox; returns how many there were. Only for a runtime that
/// knows no other worker is delivering (`berth serve` at start: one process owns the store),
/// so that entries a killed process had claimed go out now rather than when their lease lapses.
pub async fn release_claims<M: MetaStore>(meta: &M) -> StorageResult<usize> {
    release_claims_in(meta, WEBHOOKS).await
}

/// [`release_claims`] of one queue.
pub async fn release_claims_in<M: MetaStore>(meta: &M, q: Queue) -> StorageResult<usize> {
    let mut n = 0;
    let mut after: Option<String> = None;
    loop {
        let keys = meta.list(q.due, after.as_deref(), 100).await?;
        let Some(last) = keys.last().cloned() else { return Ok(n) };
        for key in keys {
            let Some(current) = meta.get(&key).await? else { continue };
            let d = Delivery::decode(&key, &current.value)?;
            if d.lease_until > 0 {
                let free = Delivery { lease_until: 0, ..d };
                meta.put(&key, free.encode(), Precondition::Version(current.version)).await?;
                n += 1;
            }
        }
        after = Some(last);
    }
}

/// Deliveries kept as failed, up to `limit` after the id `after` (admin listing).
pub async fn failed<M: MetaStore>(meta: &M, after: Option<&str>, limit: usize) -> StorageResult<Vec<Delivery>> {
    failed_in(meta, WEBHOOKS, after, limit).await
}

/// [`failed`] of one queue.
pub async fn failed_in<M: MetaStore>(meta: &M, q: Queue, after: Option<&str>, limit: usize) -> StorageResult<Vec<Delivery>> {
    let after = after.map(|a| format!("{}{a}", q.failed));
    let keys = meta.list(q.failed, after.as_deref(), limit).await?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some(v) = meta.get(&key).await? {
            out.push(Delivery::decode(&key, &v.value)?);
        }
    }
    Ok(out)
}

/// Puts a failed delivery back in the outbox, due at `now`, with its attempts reset. Returns
/// false if there is no failed delivery with that id.
pub async fn redeliver<M: MetaStore>(meta: &M, id: &str, now: u64) -> StorageResult<bool> {
    redeliver_in(meta, WEBHOOKS, id, now).await
}

/// [`redeliver`] in one queue.
pub async fn redeliver_in<M: MetaStore>(meta: &M, q: Queue, id: &str, now: u64) -> StorageResult<bool> {
    let key = format!("{}{id}", q.failed);
    let Some(current) = meta.get(&key).await? else { return Ok(false) };
    let delivery = Delivery::decode(&key, &current.value)?;
    let again = Delivery { attempts: 0, next_at: now, lease_until: 0, ..delivery };
    move_entry(meta, &key, &current.version, again.due_key_in(q), &again).await?;
    Ok(true)
}

/// Every failed delivery back in the outbox; returns how many.
pub async fn redeliver_all<M: MetaStore>(meta: &M, now: u64) -> StorageResult<usize> {
    redeliver_all_in(meta, WEBHOOKS, now).await
}

/// [`redeliver_all`] in one queue.
pub async fn redeliver_all_in<M: MetaStore>(meta: &M, q: Queue, now: u64) -> StorageResult<usize> {
    let mut n = 0;
    let mut after: Option<String> = None;
    loop {
        let keys = meta.list(q.failed, after.as_deref(), 100).await?;
        let Some(last) = keys.last().cloned() else { return Ok(n) };
        for key in keys {
            if redeliver_in(meta, q, &key[q.failed.len()..], now).await? {
                n += 1;
            }
        }
        after = Some(last);
    }
}
