//! Quotas: charging a namespace's usage when content enters one of its repositories, so a push
//! over the limit is refused before anything becomes visible. The design, and why it holds
//! under concurrent pushes, is docs/quotas.md; in short: a per-digest membership record
//! (created on condition "absent") says a digest is counted, and only new digests reserve
//! bytes on the namespace's usage record (a conditional read-modify-write).

use serde::{Deserialize, Serialize};

use crate::error::{oci, ErrorCode, RegistryError, Result};
use crate::names::{Digest, RepoName};
use crate::storage::{BlobStore, MetaStore, Precondition, PutOutcome};
use crate::Registry;

use super::config::QuotaRule;
use super::{any_match, Policies};

/// How often a write retries after losing a race on the usage record before answering 429.
const ATTEMPTS: usize = 8;

fn usage_key(quota: &str) -> String {
    format!("quota/{quota}")
}
fn member_key(quota: &str, digest: &Digest) -> String {
    format!("quota-blobs/{quota}@{digest}")
}

/// A namespace's usage: the bytes of the digests counted in it.
#[derive(Serialize, Deserialize, Default)]
struct Usage {
    bytes: u64,
}

/// "This digest is counted in the namespace's usage". `linked_at` is rewritten by every push
/// that links it, so a recount can tell a digest a push is linking right now (docs/quotas.md).
#[derive(Serialize, Deserialize)]
struct Member {
    size: u64,
    linked_at: u64,
}

/// One quota as the usage endpoint reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuotaReport {
    pub name: String,
    pub repositories: Vec<String>,
    pub limit: u64,
    pub used: u64,
}

/// A size for people: `10 GiB`, `300 MiB`, `512 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Policies {
    /// The quotas covering `repo`, with their number in the file and their limit in bytes.
    fn quotas_for(&self, repo: &str) -> Vec<(usize, &QuotaRule, u64)> {
        self.config
            .quotas
            .iter()
            .enumerate()
            .filter(|(_, q)| any_match(&q.repositories, repo))
            // Limits were checked at load; a failure here cannot happen, and means "no limit".
            .map(|(i, q)| (i + 1, q, q.limit.bytes().unwrap_or(u64::MAX)))
            .collect()
    }
}

fn over_quota(rule_no: usize, rule: &QuotaRule, limit: u64, used: u64, adding: u64) -> RegistryError {
    oci(
        ErrorCode::Denied,
        format!(
            "quota {} exceeded: {} ({limit} bytes) allowed, {} ({used} bytes) used, this push adds {} ({adding} bytes) \
             (policies.quotas rule {rule_no})",
            rule.name,
            human(limit),
            human(used),
            human(adding)
        ),
    )
    .with_detail(serde_json::json!({ "quota": rule.name, "limit": limit, "used": used, "adding": adding }))
}

fn busy(quota: &str) -> RegistryError {
    oci(ErrorCode::TooManyRequests, format!("the usage of quota {quota} is being changed by many pushes at once; retry"))
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// Counts `digest` (`size` bytes) in every quota covering `name`, or refuses with 403 if
    /// that would take one over its limit. Called before the content is linked or recorded, so
    /// a refused push leaves nothing visible. All quotas are checked before any is charged;
    /// only a push that loses a race between the check and its charge can leave charges made
    /// in other quotas behind, counted until a recount (over-counted, never under).
    pub(crate) async fn charge_quotas(&self, name: &RepoName, digest: &Digest, size: u64, now: u64) -> Result<()> {
        let quotas = self.policies.quotas_for(name.as_str());
        for (rule_no, rule, limit) in &quotas {
            if self.meta.get(&member_key(&rule.name, digest)).await?.is_some() {
                continue;
            }
            let used = self.get_record::<Usage>(&usage_key(&rule.name)).await?.map_or(0, |u| u.bytes);
            if used.checked_add(size).is_none_or(|total| total > *limit) {
                return Err(over_quota(*rule_no, rule, *limit, used, size));
            }
        }
        for (rule_no, rule, limit) in quotas {
            self.charge_one(rule_no, rule, limit, digest, size, now).await?;
        }
        Ok(())
    }

    /// Charges one quota; true if this call counted the digest (false: it was counted already).
    async fn charge_one(&self, rule_no: usize, rule: &QuotaRule, limit: u64, digest: &Digest, size: u64, now: u64) -> Result<bool> {
        let key = member_key(&rule.name, digest);
        let member = Member { size, linked_at: now };
        if let Some(found) = self.meta.get(&key).await? {
            // Counted already. Losing this write means another push touched it just now: fine.
            self.put_record(&key, &member, Precondition::Version(found.version)).await?;
            return Ok(false);
        }
        self.reserve(rule_no, rule, limit, size).await?;
        match self.put_record(&key, &member, Precondition::Absent).await? {
            PutOutcome::Written { .. } => Ok(true),
            PutOutcome::Conflict => {
                // Another push counted it at the same moment: give the reservation back.
                self.adjust(&rule.name, |bytes| Ok(bytes.saturating_sub(size))).await?;
                Ok(false)
            }
        }
    }

    /// Adds `size` to the usage if it stays within `limit`.
    async fn reserve(&self, rule_no: usize, rule: &QuotaRule, limit: u64, size: u64) -> Result<()> {
        self.adjust(&rule.name, |used| match used.checked_add(size).filter(|total| *total <= limit) {
            Some(total) => Ok(total),
            None => Err(over_quota(rule_no, rule, limit, used, size)),
        })
        .await
    }

    /// A conditional read-modify-write of a usage record: concurrent changes serialize.
    async fn adjust(&self, quota: &str, change: impl Fn(u64) -> Result<u64>) -> Result<()> {
        let key = usage_key(quota);
        for _ in 0..ATTEMPTS {
            let (used, cond) = match self.get_versioned::<Usage>(&key).await? {
                Some((usage, version)) => (usage.bytes, Precondition::Version(version)),
                None => (0, Precondition::Absent),
            };
            let bytes = change(used)?;
            if let PutOutcome::Written { .. } = self.put_record(&key, &Usage { bytes }, cond).await? {
                return Ok(());
            }
        }
        Err(busy(quota))
    }

    /// Every configured quota with its usage now.
    pub async fn quota_usage(&self) -> Result<Vec<QuotaReport>> {
        let mut reports = Vec::new();
        for rule in &self.policies.config.quotas {
            let used = self.get_record::<Usage>(&usage_key(&rule.name)).await?.map_or(0, |u| u.bytes);
            reports.push(QuotaReport {
                name: rule.name.clone(),
                repositories: rule.repositories.clone(),
                limit: rule.limit.bytes().unwrap_or(u64::MAX),
                used,
            });
        }
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(10 << 30), "10.0 GiB");
        assert_eq!(human(1536), "1.5 KiB");
    }
}
