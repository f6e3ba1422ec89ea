//! The retention phase of a run (docs/gc.md, "Retention"): one repository a retention rule
//! covers per step. The step reads the repository's inventory (its tags, its live manifests
//! with their times, an index's children, a referrer's subject), asks the pure
//! [`policy::retention::plan`] what goes, then condemns the planned manifests (GC's safe path:
//! they stay live for a settle window, the links phase deletes them, parents first) and deletes
//! the planned tags. Memory: one repository's inventory.
//!
//! And the last phase: every quota recounted, one per step, so usage shrinks after a sweep.

use std::collections::HashMap;

use super::io::Io;
use super::{Checkpoint, GcOptions};
use crate::error::Result;
use crate::manifests::{parse_manifest, Parsed, DOCKER_LIST, OCI_INDEX};
use crate::names::{parse_digest, RepoName};
use crate::policy::retention::{self, Deletion, Inventory, ManifestInfo, TagInfo};
use crate::records::{digest_of_key, manifest_key, manifest_prefix, tag_key, tag_prefix, ManifestRecord, TagRecord, REPOS};
use crate::storage::{BlobStore, MetaStore, Precondition};

/// Whether the registry has retention rules at all (else the phase is passed over).
pub(super) fn applies<B: BlobStore, M: MetaStore>(io: &Io<'_, B, M>) -> bool {
    !io.reg.policies.config().retention.is_empty()
}

/// Whether the run ends with a recount: there are quotas, and it is no dry run (a recount
/// writes).
pub(super) fn recounts<B: BlobStore, M: MetaStore>(io: &Io<'_, B, M>) -> bool {
    !io.dry() && !io.reg.policies.config().quotas.is_empty()
}

/// One repository's inventory, with the versions the deletions are conditional on.
struct Found {
    inventory: Inventory,
    tags: HashMap<String, String>,
    manifests: HashMap<String, (ManifestRecord, String)>,
}

/// Passes over repositories no rule covers (a page of names at most), then plans and applies
/// retention in the first one a rule covers. True when the phase is done.
pub(super) async fn repository<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    now: u64,
) -> Result<bool> {
    let after = cp.cursor.as_ref().map(|r| format!("{REPOS}{r}"));
    let keys = io.list(REPOS, after.as_deref(), opts.page).await?;
    let done = keys.len() < opts.page;
    for key in keys {
        let repo = key.strip_prefix(REPOS).unwrap_or(&key).to_owned();
        cp.cursor = Some(repo.clone());
        let Ok(name) = RepoName::parse(&repo) else { continue };
        if io.reg.policies.retention_rule(name.as_str()).is_none() {
            continue;
        }
        apply(io, cp, &name, now).await?;
        return Ok(false);
    }
    Ok(done)
}

/// Plans and applies retention in one repository. Repeating it (a crash mid-step) is
/// harmless and finishes the job: manifests are condemned before tags are deleted, so a
/// repeat sees the same tags and makes the same plan; what is done already is skipped.
async fn apply<B: BlobStore, M: MetaStore>(io: &Io<'_, B, M>, cp: &mut Checkpoint, name: &RepoName, now: u64) -> Result<()> {
    let Some(found) = inventory(io, name).await? else {
        cp.report.skipped += 1;
        return Ok(());
    };
    let policies = &io.reg.policies;
    let plan = retention::plan(policies, name.as_str(), &found.inventory, now);
    cp.report.retention_repositories += 1;
    let dry = io.dry();

    // Manifests first: a condemned manifest stays live (it pulls, its tags resolve) until the
    // links phase deletes it, parents first, a settle window later.
    for deletion in &plan.deletions {
        let Deletion::Manifest { digest, reason } = deletion else { continue };
        let Some((record, version)) = found.manifests.get(digest) else { continue };
        if record.condemned_at.is_some() {
            continue;
        }
        let tags = found.inventory.tags.iter().filter(|t| &t.digest == digest).map(|t| t.name.as_str());
        if let Err(e) = policies.check_manifest_delete(name.as_str(), digest, tags) {
            // plan keeps what immutable tags name; never act against the tag policy.
            tracing::warn!(%name, digest, "gc: retention planned a manifest a policy protects; kept: {}", e.message);
            continue;
        }
        let condemned = ManifestRecord { condemned_at: Some(now), generation: record.generation + 1, ..record.clone() };
        let Ok(parsed) = parse_digest(digest) else { continue };
        if !io.put(&manifest_key(name, &parsed), &condemned, Precondition::Version(version.clone())).await? {
            continue; // pushed (or revived) since the inventory: the next run judges it again
        }
        tracing::info!(%name, digest, %reason, dry_run = dry, "gc: retention condemned a manifest");
        if !dry {
            crate::auth::policy_delete(name.as_str(), "manifest", digest, digest, plan.rule, &reason.to_string(), "condemned", now);
        }
        cp.report.manifests_condemned += 1;
    }

    // Then tags, each on the version read: a tag moved since stays.
    for deletion in &plan.deletions {
        let Deletion::Tag { name: tag, digest, reason } = deletion else { continue };
        if let Err(e) = policies.check_tag_delete(name.as_str(), tag) {
            tracing::warn!(%name, tag, "gc: retention planned an immutable tag; kept: {}", e.message);
            continue;
        }
        let Some(version) = found.tags.get(tag) else { continue };
        let key = tag_key(name, tag);
        if !io.delete_if(&key, version).await? {
            continue;
        }
        tracing::info!(%name, tag, digest, %reason, dry_run = dry, "gc: retention deleted a tag");
        if !dry {
            crate::auth::policy_delete(name.as_str(), "tag", tag, digest, plan.rule, &reason.to_string(), "deleted", now);
        }
        cp.report.tags_deleted += 1;
    }
    Ok(())
}

/// The repository's tags and live manifests as `plan` takes them. None when a live index's
/// bytes cannot be read or parsed: without its children nothing in the repository is judged.
async fn inventory<B: BlobStore, M: MetaStore>(io: &Io<'_, B, M>, name: &RepoName) -> Result<Option<Found>> {
    let mut found = Found { inventory: Inventory::default(), tags: HashMap::new(), manifests: HashMap::new() };
    let prefix = tag_prefix(name);
    for key in io.reg.list_all(&prefix).await? {
        let Some((record, version)) = io.get::<TagRecord>(&key).await? else { continue };
        let tag = key[prefix.len()..].to_owned();
        found.tags.insert(tag.clone(), version);
        found.inventory.tags.push(TagInfo { name: tag, digest: record.digest, tagged_at: record.tagged_at });
    }
    for key in io.reg.list_all(&manifest_prefix(name)).await? {
        let Some((record, version)) = io.get::<ManifestRecord>(&key).await? else { continue };
        if record.deleted {
            continue;
        }
        let Some(digest) = digest_of_key(&key).and_then(|d| parse_digest(d).ok()) else { continue };
        let mut children = Vec::new();
        if record.media_type == OCI_INDEX || record.media_type == DOCKER_LIST {
            let Some(bytes) = super::phases::read_all(io, &digest).await? else {
                tracing::warn!(%name, %digest, "gc: an index's bytes are missing; retention skipped the repository");
                return Ok(None);
            };
            match parse_manifest(Some(&record.media_type), &bytes) {
                Ok((_, Parsed::Index(i))) => children.extend(i.manifests().iter().map(|c| c.digest().to_string())),
                _ => {
                    tracing::warn!(%name, %digest, "gc: an index does not parse; retention skipped the repository");
                    return Ok(None);
                }
            }
        }
        found.inventory.manifests.push(ManifestInfo {
            digest: digest.to_string(),
            pushed_at: record.pushed_at,
            pulled_at: record.pulled_at,
            subject: record.subject.clone(),
            children,
        });
        found.manifests.insert(digest.to_string(), (record, version));
    }
    Ok(Some(found))
}

/// What retention would delete in `name` at `now`, read-only: the same inventory and plan as
/// a run, through a dry-run [`Io`] (it never writes). For `GET /v2/<name>/_berth/retention`
/// (docs/ui.md). None when no rule covers the repository or its inventory is unreadable (a
/// run would skip it too). The caller bounds the repository's size first.
pub(crate) async fn preview<B: BlobStore, M: MetaStore>(
    reg: &crate::Registry<B, M>,
    name: &RepoName,
    now: u64,
) -> Result<Option<retention::Plan>> {
    if reg.policies.retention_rule(name.as_str()).is_none() {
        return Ok(None);
    }
    let io = Io::new(reg, true);
    let Some(found) = inventory(&io, name).await? else { return Ok(None) };
    Ok(Some(retention::plan(&reg.policies, name.as_str(), &found.inventory, now)))
}

/// Recounts the quota after the last one done (one per step). True when the phase is done.
pub(super) async fn recount<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    now: u64,
) -> Result<bool> {
    let quotas = &io.reg.policies.config().quotas;
    let start = match &cp.cursor {
        Some(last) => quotas.iter().position(|q| &q.name == last).map_or(quotas.len(), |i| i + 1),
        None => 0,
    };
    let Some(rule) = quotas.get(start) else { return Ok(true) };
    // A counted digest no repository holds is dropped once no push touched it for this long:
    // a push touches it before it writes its link, within the settle window (docs/quotas.md).
    let report = io.reg.recount_quota(&rule.name, now, opts.settle()).await?;
    tracing::info!(quota = report.name, used = report.used, limit = report.limit, "gc: recounted a quota");
    cp.report.quotas_recounted += 1;
    cp.cursor = Some(rule.name.clone());
    Ok(start + 1 >= quotas.len())
}
