//! Replication (docs/replication.md): copies of local repositories at other registries, by
//! the `[[policies.replication]]` rules. The core holds the copy step ([`Registry::copy_to`])
//! and each rule's last result in the [`MetaStore`]; runtimes call it by hand (`berth
//! replicate`) and on their schedules, through the same [`crate::mirror::Upstream`] HTTP seam
//! as the pull-through cache.

pub mod config;
pub mod copy;
pub mod events;
pub mod outbox;
pub mod sync;
pub mod scheduled;

use serde::{Deserialize, Serialize};

pub use config::ReplicationRule;
pub use copy::CopyReport;
pub use sync::{SyncReport, SyncRule, SyncState};

use crate::error::Result;
use crate::mirror::UpstreamClient;
use crate::storage::{BlobStore, MetaStore, Precondition};
use crate::Registry;

/// Under this: each rule's last result (`<rule>`).
pub const STATUS: &str = "replication/status/";
/// Tag records' prefix (`records::tag_prefix` is per repository).
const TAGS: &str = "tags/";

/// A rule's last result, as `berth replicate status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub rule: String,
    /// Unix seconds.
    pub at: u64,
    pub repository: String,
    pub reference: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub report: CopyReport,
}

impl RuleStatus {
    /// The result of one copy of `repo:reference` by `rule` at `now`.
    pub fn of(rule: &str, repo: &str, reference: &str, now: u64, result: std::result::Result<&CopyReport, &str>) -> RuleStatus {
        RuleStatus {
            rule: rule.to_owned(),
            at: now,
            repository: repo.to_owned(),
            reference: reference.to_owned(),
            ok: result.is_ok(),
            error: result.err().map(str::to_owned),
            report: result.ok().cloned().unwrap_or_default(),
        }
    }

    /// Where it is kept: one record per rule, its last result.
    pub(crate) fn key(&self) -> String {
        format!("{STATUS}{}", self.rule)
    }
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// The rules of this registry's policies.
    pub fn replication_rules(&self) -> &[ReplicationRule] {
        &self.policies.config().replication
    }

    /// [`Registry::copy_to`], with the result kept as the rule's last (a failure to keep it is
    /// logged: the copy itself is what counts).
    pub async fn replicate(
        &self,
        client: &UpstreamClient,
        rule: &ReplicationRule,
        repo: &str,
        reference: &str,
        now: u64,
    ) -> Result<CopyReport> {
        let result = self.copy_to(client, rule, repo, reference, now).await;
        let status = RuleStatus::of(&rule.name, repo, reference, now, result.as_ref().map_err(|e| e.message.as_str()));
        if let Err(e) = self.put_record(&status.key(), &status, Precondition::None).await {
            tracing::warn!(rule = %rule.name, error = %e.message, "the replication status could not be kept");
        }
        result
    }

    /// Every (repository, tag) here that `rule` covers, for a full run (`berth replicate --all`,
    /// a schedule).
    pub async fn replication_targets(&self, rule: &ReplicationRule) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for key in self.list_all(TAGS).await? {
            let Some((repo, tag)) = key[TAGS.len()..].rsplit_once('@') else { continue };
            if rule.matches(repo, Some(tag)) {
                out.push((repo.to_owned(), tag.to_owned()));
            }
        }
        Ok(out)
    }
}

/// Every rule's last result (rules never run have none).
pub async fn statuses<M: MetaStore>(meta: &M) -> crate::storage::StorageResult<Vec<RuleStatus>> {
    per_rule(meta, STATUS).await
}

/// The records under `prefix`, one per rule (up to 1000; unreadable ones are left out).
pub(crate) async fn per_rule<M: MetaStore, T: serde::de::DeserializeOwned>(
    meta: &M,
    prefix: &str,
) -> crate::storage::StorageResult<Vec<T>> {
    let mut out = Vec::new();
    for key in meta.list(prefix, None, 1000).await? {
        if let Some(v) = meta.get(&key).await? {
            if let Ok(s) = serde_json::from_slice(&v.value) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
