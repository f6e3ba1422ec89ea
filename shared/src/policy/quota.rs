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
        self.check_quotas(name, digest, size).await?;
        for (rule_no, rule, limit) in self.policies.quotas_for(name.as_str()) {
            self.charge_one(rule_no, rule, limit, digest, size, now).await?;
        }
        Ok(())
    }

    /// Refuses with 403 if counting `digest` (`size` bytes) would take a quota covering `name`
    /// over its limit; charges nothing. Also asked before a first pull through the cache starts
    /// answering, while a refusal can still be a status.
    pub(crate) async fn check_quotas(&self, name: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        for (rule_no, rule, limit) in self.policies.quotas_for(name.as_str()) {
            if self.meta.get(&member_key(&rule.name, digest)).await?.is_some() {
                continue;
            }
            let used = self.get_record::<Usage>(&usage_key(&rule.name)).await?.map_or(0, |u| u.bytes);
            if used.checked_add(size).is_none_or(|total| total > limit) {
                return Err(over_quota(rule_no, rule, limit, used, size));
            }
        }
        Ok(())
    }

    /// Charges one quota; true if this call counted the digest (false: it was counted already).
    async fn charge_one(&self, rule_no: usize, rule: &QuotaRule, limit: u64, digest: &Digest, size: u64, now: u64) -> Result<bool> {
        let key = member_key(&rule.name, digest);
        let member = Member { size, linked_at: now };
        // Counted already: touch it, so a recount running now does not drop it. If the touch
        // loses, either another push touched it (it stays: done) or a recount dropped it (it
        // is absent: charge it as new). Found by a_recount_racing_a_push_never_under_counts.
        let mut touched = false;
        for _ in 0..ATTEMPTS {
            let Some(found) = self.meta.get(&key).await? else { break };
            if let PutOutcome::Written { .. } = self.put_record(&key, &member, Precondition::Version(found.version)).await? {
                touched = true;
                break;
            }
        }
        if touched {
            return Ok(false);
        }
        if self.meta.get(&key).await?.is_some() {
            return Err(busy(&rule.name));
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

    /// Recounts quota `name` from what its repositories hold now (blob links and live
    /// manifests, each digest once), for garbage collection to call after it unlinks content
    /// (or an admin): the only way usage shrinks. A counted digest no repository holds is
    /// dropped only if no push touched it for `grace_secs` (at least the upload lease), and only
    /// on condition that it is unchanged since it was read; the new total is written on
    /// condition that no push reserved meanwhile, else the recount starts again. So a digest a
    /// push is linking right now is never dropped and usage is never under-counted
    /// (docs/quotas.md). Digests held but not counted (content from before the quota existed)
    /// are counted. Returns the usage after.
    pub async fn recount_quota(&self, name: &str, now: u64, grace_secs: u64) -> Result<QuotaReport> {
        let Some(rule) = self.policies.config.quotas.iter().find(|q| q.name == name) else {
            return Err(crate::StorageError::new(format!("no quota named {name:?} is configured")).into());
        };
        let key = usage_key(name);
        for _ in 0..ATTEMPTS {
            let cond = match self.meta.get(&key).await? {
                Some(found) => Precondition::Version(found.version),
                None => Precondition::Absent,
            };
            let held = self.held_by(&rule.repositories).await?;
            let members_prefix = format!("quota-blobs/{name}@");
            let mut total: u64 = 0;
            let mut counted = std::collections::BTreeSet::new();
            for member_key in self.list_all(&members_prefix).await? {
                let Some((member, version)) = self.get_versioned::<Member>(&member_key).await? else { continue };
                let digest = member_key[members_prefix.len()..].to_owned();
                let idle = now.saturating_sub(member.linked_at) >= grace_secs;
                if !held.contains_key(&digest) && idle {
                    let op = crate::storage::BatchOp::Delete { key: member_key, cond: Precondition::Version(version) };
                    if self.meta.apply(vec![op]).await?.first() == Some(&true) {
                        continue;
                    }
                    // Touched since it was read: a push is linking it; it stays counted.
                }
                total = total.saturating_add(member.size);
                counted.insert(digest);
            }
            for (digest, size) in held.iter().filter(|(d, _)| !counted.contains(*d)) {
                let Ok(parsed) = crate::names::parse_digest(digest) else { continue };
                let member = Member { size: *size, linked_at: now };
                // Absent: a push that counted it meanwhile also reserved, and the write below fails.
                self.put_record(&member_key(name, &parsed), &member, Precondition::Absent).await?;
                total = total.saturating_add(*size);
            }
            if let PutOutcome::Written { .. } = self.put_record(&key, &Usage { bytes: total }, cond).await? {
                return Ok(QuotaReport {
                    name: rule.name.clone(),
                    repositories: rule.repositories.clone(),
                    limit: rule.limit.bytes().unwrap_or(u64::MAX),
                    used: total,
                });
            }
        }
        Err(busy(name))
    }

    /// Every digest the repositories matching `patterns` hold (linked blobs, live manifests),
    /// with its size.
    async fn held_by(&self, patterns: &[String]) -> Result<std::collections::BTreeMap<String, u64>> {
        use crate::records::{BlobLink, ManifestRecord, REPOS};
        let mut held = std::collections::BTreeMap::new();
        for repo_key in self.list_all(REPOS).await? {
            let repo = &repo_key[REPOS.len()..];
            if !any_match(patterns, repo) {
                continue;
            }
            for prefix in [format!("blobs/{repo}@"), format!("manifests/{repo}@")] {
                for key in self.list_all(&prefix).await? {
                    let size = if prefix.starts_with("blobs/") {
                        // A dead link (GC removed it) holds nothing.
                        self.get_record::<BlobLink>(&key).await?.filter(|l| !l.dead).map(|l| l.size)
                    } else {
                        self.get_record::<ManifestRecord>(&key).await?.filter(|m| !m.deleted).map(|m| m.size)
                    };
                    if let Some(size) = size {
                        held.insert(key[prefix.len()..].to_owned(), size);
                    }
                }
            }
        }
        Ok(held)
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
