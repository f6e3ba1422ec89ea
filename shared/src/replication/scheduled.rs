//! Replication for runtimes that run on events, not in a long-lived task (the Worker's Cron
//! Trigger and queue consumer, Lambda's EventBridge schedule and SQS wake-up): due outbox
//! entries for a bounded time ([`Registry::replicate_for`]), and full runs on a schedule
//! ([`Registry::enqueue_full_runs`]) turned into outbox entries, so they get the outbox's
//! claims, retries and continuation by the next invocation for free. Any number of
//! invocations may run both at once: every step is a conditional write.

use serde::{Deserialize, Serialize};

use super::outbox::{entry_op, DueReport, Target};
use crate::error::Result;
use crate::gc::Budget;
use crate::mirror::UpstreamClient;
use crate::storage::{BlobStore, MetaStore, Precondition, PutOutcome, StorageResult};
use crate::webhooks::HookKind;
use crate::Registry;

/// Under this: when each rule's last scheduled full run was enqueued (`<rule>`).
pub const SCHEDULE: &str = "replication/schedule/";
/// Entries written per store call by a full run.
const WRITE_CHUNK: usize = 100;

#[derive(Serialize, Deserialize)]
struct LastRun {
    /// Unix seconds.
    at: u64,
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// Runs due replication entries, `batch` at a time, until none is left or the budget's
    /// deadline passes (checked between batches: a copy under way is finished, its entry's
    /// lease covers it). Returns what all the batches did.
    pub async fn replicate_for(&self, client: &UpstreamClient, batch: usize, budget: &Budget<'_>) -> StorageResult<DueReport> {
        let mut total = DueReport::default();
        let batch = batch.max(1);
        loop {
            let r = self.replicate_due(client, (budget.clock)(), batch).await?;
            let done = r.copied + r.retrying + r.failed;
            total.copied += r.copied;
            total.retrying += r.retrying;
            total.failed += r.failed;
            total.skipped += r.skipped;
            // Fewer than a batch done: nothing else is due now (or others hold it).
            if done < batch || budget.deadline.is_some_and(|d| (budget.clock)() >= d) {
                return Ok(total);
            }
        }
    }

    /// For each rule whose last full run is `every_secs` old or more (or that never had one),
    /// writes one outbox entry per (repository, tag) it covers ([`Registry::replication_targets`]),
    /// as `berth serve --replication-schedule` copies them. One invocation wins each rule's run:
    /// the run's time is written conditionally first. `every_secs` 0: off. Returns the entries
    /// written.
    pub async fn enqueue_full_runs(&self, now: u64, every_secs: u64) -> Result<usize> {
        if every_secs == 0 {
            return Ok(0);
        }
        let mut written = 0;
        for rule in self.replication_rules() {
            let key = format!("{SCHEDULE}{}", rule.name);
            let cond = match self.get_versioned::<LastRun>(&key).await? {
                Some((last, _)) if now < last.at.saturating_add(every_secs) => continue,
                Some((_, version)) => Precondition::Version(version),
                None => Precondition::Absent,
            };
            if !matches!(self.put_record(&key, &LastRun { at: now }, cond).await?, PutOutcome::Written { .. }) {
                continue; // another invocation took this run
            }
            // Ids from the rule's name and the run's time: unique, as one run per (rule, time).
            let seed: [u8; 16] = {
                use sha2::Digest as _;
                let d = sha2::Sha256::new().chain_update(b"berth scheduled replication\0").chain_update(rule.name.as_bytes()).finalize();
                d[..16].try_into().unwrap_or([0; 16])
            };
            let targets = self.replication_targets(rule).await?;
            let ops: Vec<_> = targets
                .iter()
                .enumerate()
                .map(|(n, (repo, tag))| {
                    let id = crate::webhooks::event_id(now, &seed, n as u32);
                    let target = Target { repo, tag: Some(tag.clone()), digest: None };
                    entry_op(rule, HookKind::Push, target, now, "schedule".to_owned(), id)
                })
                .collect();
            for chunk in ops.chunks(WRITE_CHUNK) {
                self.meta.apply(chunk.to_vec()).await?;
            }
            tracing::info!(rule = %rule.name, entries = ops.len(), "scheduled full replication run enqueued");
            written += ops.len();
        }
        Ok(written)
    }
}
