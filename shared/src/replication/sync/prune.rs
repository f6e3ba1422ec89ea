//! `delete_missing` (docs/replication.md, "Deletions"): a tag the rule put here is removed once
//! the remote's complete tag list no longer has it. Conservative by construction:
//!
//! - only tags the rule owns: one record per tag it moved here, or found here already at the
//!   remote's digest (`sync/owned/<rule>/<local repo>@<tag>` -> the digest), written only while
//!   `delete_missing` is on;
//! - only while the tag still names that digest (a push here since then makes it the pusher's:
//!   the record is dropped, the tag stays), and still matches the rule's `tags`;
//! - only after a complete, successful tag list: a failed page, a 404 for the repository, an
//!   error of any kind removes nothing ([`Run::remote_tags`] is all-or-error);
//! - only the tag: the manifest stays (untagged, for retention and GC to judge), and a tag a
//!   policy keeps (immutable, protected) is left with a warning.
//!
//! The tag is removed with a conditional delete against the version read, so a push moving it
//! at the same moment wins.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::Run;
use crate::error::Result;
use crate::names::{Digest, RepoName};
use crate::records::{tag_key, TagDigest};
use crate::replication::events::SyncOutcome;
use crate::storage::{BatchOp, BlobStore, MetaStore, Precondition};

/// Under this: the tags each sync rule owns (`<rule>/<local repo>@<tag>`).
pub const OWNED: &str = "sync/owned/";

/// What an ownership record holds: the digest the rule left the tag at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Owned {
    digest: String,
}

fn owned_prefix(rule: &str, local: &RepoName) -> String {
    format!("{OWNED}{rule}/{local}@")
}

impl<B: BlobStore, M: MetaStore> Run<'_, B, M> {
    /// Notes that the rule left `tag` at `digest` here (with `delete_missing` only).
    pub(super) async fn own(&self, local: &RepoName, tag: &str, digest: &Digest) -> Result<()> {
        if !self.rule.delete_missing {
            return Ok(());
        }
        let key = format!("{}{tag}", owned_prefix(&self.rule.name, local));
        let record = Owned { digest: digest.to_string() };
        if self.reg.get_record::<Owned>(&key).await?.as_ref() != Some(&record) {
            self.reg.put_record(&key, &record, Precondition::None).await?;
        }
        Ok(())
    }

    /// Removes the owned tags of `repo` (the remote name) that `remote_tags`, its complete tag
    /// list, lacks. Each removal is counted and is a `replication_done` event (`delete`).
    pub(super) async fn prune(&mut self, repo: &str, remote_tags: &[String]) -> Result<()> {
        let local = RepoName::parse(&self.rule.local_name(repo))?;
        let prefix = owned_prefix(&self.rule.name, &local);
        let there: HashSet<&str> = remote_tags.iter().map(String::as_str).collect();
        for key in self.reg.list_all(&prefix).await? {
            let tag = &key[prefix.len()..];
            if there.contains(tag) {
                continue;
            }
            let Some(owned) = self.reg.get_record::<Owned>(&key).await? else { continue };
            let drop_record = BatchOp::Delete { key: key.clone(), cond: Precondition::None };
            let tag_key = tag_key(&local, tag);
            let current = self.reg.get_versioned::<TagDigest>(&tag_key).await?;
            let version = match current {
                // Out of the rule's tags now, gone already, or pushed here since: not ours.
                _ if !self.rule.matches_tag(tag) => None,
                Some((t, version)) if t.digest == owned.digest => Some(version),
                _ => None,
            };
            let Some(version) = version else {
                self.reg.meta.apply(vec![drop_record]).await?;
                continue;
            };
            if let Err(e) = self.reg.policies.check_tag_delete(local.as_str(), tag) {
                tracing::warn!(rule = %self.rule.name, repository = %local, tag, error = %e.message,
                               "sync: a tag gone at the remote is kept here by policy");
                continue;
            }
            let ops = vec![BatchOp::Delete { key: tag_key, cond: Precondition::Version(version) }, drop_record];
            if self.reg.meta.apply(ops).await?.first() != Some(&true) {
                // Moved by a push meanwhile: the next run sees it is not ours.
                continue;
            }
            self.report.deleted += 1;
            tracing::info!(rule = %self.rule.name, repository = %local, tag, "sync: removed a tag gone at the remote");
            let share = super::SyncReport { deleted: 1, ..Default::default() };
            self.emit(&SyncOutcome { repo, tag: Some(tag), digest: Some(owned.digest), action: "delete", result: Ok(&share) }).await;
        }
        Ok(())
    }
}
