//! The steps of a run, phase by phase (docs/gc.md, "A run"). Each step re-reads what it acts on
//! and acts by conditional writes, so repeating a step after a crash is harmless.

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;

use super::guard::{mark_key, Mark, MARKS};
use super::io::Io;
use super::retention;
use super::{parse_condemned, Checkpoint, GcOptions, Phase, Within};
use crate::error::Result;
use crate::manifests::{parse_manifest, Parsed};
use crate::names::{parse_digest, Digest, RepoName};
use crate::records::{
    blob_prefix, digest_of_key, manifest_key, manifest_prefix, BlobLink, ManifestRecord, BLOBS, MANIFESTS,
    REPOS, UPLOADS,
};
use crate::storage::{BlobStore, MetaStore, Precondition};
use crate::uploads::Session;

/// One step of the phase the checkpoint is in; advances the checkpoint. A phase with nothing
/// to do in this registry (no retention rules, no quotas) is passed over within the step.
pub(super) async fn step<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    now: u64,
) -> Result<()> {
    let next = |cp: &mut Checkpoint, phase| {
        cp.phase = phase;
        cp.cursor = None;
        cp.within = None;
    };
    pass_over_empty(io, cp);
    match cp.phase {
        Phase::Retention => {
            if retention::repository(io, opts, cp, now).await? {
                next(cp, Phase::Policy);
            }
        }
        Phase::Policy => {
            policy(io, opts, cp, now).await?;
            next(cp, Phase::Uploads);
        }
        Phase::Uploads => {
            if uploads(io, opts, cp, now).await? {
                next(cp, Phase::Links);
            }
        }
        Phase::Links => {
            if links(io, opts, cp, now).await? {
                next(cp, Phase::Marks);
            }
        }
        Phase::Marks => {
            if marks(io, opts, cp, now).await? {
                next(cp, Phase::Content);
            }
        }
        Phase::Content => {
            if content(io, opts, cp, now).await? {
                next(cp, Phase::Quotas);
            }
        }
        Phase::Quotas => {
            if retention::recount(io, opts, cp, now).await? {
                next(cp, Phase::Done);
            }
        }
        Phase::Done => {}
    }
    // So that the step that ends the last phase with work ends the run.
    pass_over_empty(io, cp);
    Ok(())
}

fn pass_over_empty<B: BlobStore, M: MetaStore>(io: &Io<'_, B, M>, cp: &mut Checkpoint) {
    loop {
        let next = match cp.phase {
            Phase::Retention if !retention::applies(io) => Phase::Policy,
            Phase::Quotas if !retention::recounts(io) => Phase::Done,
            _ => return,
        };
        cp.phase = next;
        cp.cursor = None;
        cp.within = None;
    }
}

/// Every key under `prefix`, page by page, handed to `f` (memory: one page).
async fn each_key<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    prefix: &str,
    page: usize,
    mut f: impl FnMut(String),
) -> Result<()> {
    let mut after: Option<String> = None;
    loop {
        let keys = io.list(prefix, after.as_deref(), page).await?;
        let done = keys.len() < page;
        after = keys.last().cloned();
        keys.into_iter().for_each(&mut f);
        if done {
            return Ok(());
        }
    }
}

/// One page of upload sessions: aborts the idle ones. True when the phase is done.
async fn uploads<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    now: u64,
) -> Result<bool> {
    let keys = io.list(UPLOADS, cp.cursor.as_deref(), opts.page).await?;
    let lease = io.reg.config.upload_lease_secs.max(1);
    for key in &keys {
        let Some((mut session, version)) = io.get::<Session>(key).await.unwrap_or_else(|e| {
            tracing::warn!(key, "gc: unreadable upload session: {e:?}");
            None
        }) else {
            continue;
        };
        let active = session.started.max(session.touched);
        if session.writing_until > now || now < active.saturating_add(opts.upload_idle_secs) {
            continue;
        }
        // Claimed like any writer: a request arriving now either won (we skip) or is refused.
        session.writing_until = now.saturating_add(lease);
        if !io.put(key, &session, Precondition::Version(version)).await? {
            continue;
        }
        let id = key.strip_prefix(UPLOADS).unwrap_or(key);
        // The data first, the record last: killed in between, the record (claimed, then lapsed)
        // brings the next run back here; aborting twice is harmless.
        if let Err(e) = io.upload_abort(id, &session.backend).await {
            tracing::warn!(upload = id, "gc: could not discard an abandoned upload's data: {e:?}");
        }
        io.delete(key).await?;
        tracing::info!(upload = id, repo = session.repo, bytes = session.offset, "gc: aborted an abandoned upload");
        cp.report.uploads_aborted += 1;
    }
    cp.cursor = keys.last().cloned().or(cp.cursor.take());
    Ok(keys.len() < opts.page)
}

pub(super) async fn read_all<B: BlobStore, M: MetaStore>(io: &Io<'_, B, M>, digest: &Digest) -> Result<Option<bytes::Bytes>> {
    let Some(mut stream) = io.reg.blobs.read_manifest(digest).await? else { return Ok(None) };
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(Some(buf.freeze()))
}

/// Condemns the manifests a policy handed in, unless a live index of their repository lists
/// them (an index's children go with the index, never before it). The links phase deletes
/// them a settle window later (see [`manifests_page`]).
async fn policy<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    now: u64,
) -> Result<()> {
    for (repo, digest) in &opts.condemned_manifests {
        let Some((name, digest)) = parse_condemned(repo, digest) else {
            tracing::warn!(repo, digest, "gc: a condemned manifest that is no valid reference; skipped");
            cp.report.skipped += 1;
            continue;
        };
        let key = manifest_key(&name, &digest);
        let Some((record, version)) = io.get::<ManifestRecord>(&key).await? else { continue };
        if record.deleted || record.condemned_at.is_some() {
            continue;
        }
        let wanted = digest.to_string();
        let mut listed = false;
        let readable = each_live_manifest(io, opts, &name, |_, _, refs| {
            listed |= matches!(refs, Refs::Index(children) if children.contains(&wanted));
        })
        .await?;
        if !readable {
            cp.report.skipped += 1;
            continue;
        }
        if listed {
            tracing::info!(%name, %digest, "gc: kept a condemned manifest a live index lists");
            continue;
        }
        let condemned =
            ManifestRecord { condemned_at: Some(now), generation: record.generation + 1, ..record };
        if io.put(&key, &condemned, Precondition::Version(version)).await? {
            cp.report.manifests_condemned += 1;
        }
    }
    Ok(())
}

/// What one live manifest references.
enum Refs {
    /// An image's config and layers.
    Image(Vec<String>),
    /// An index's child manifests.
    Index(Vec<String>),
}

/// Calls `f` with every live manifest of the repository, one at a time (memory: one page of
/// keys and one manifest), with what it references. False when one cannot be read (its bytes
/// are missing or do not parse): then the caller judges nothing in the repository (a missing
/// reference is never a reason to delete).
async fn each_live_manifest<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    name: &RepoName,
    mut f: impl FnMut(&Digest, &ManifestRecord, Refs),
) -> Result<bool> {
    let prefix = manifest_prefix(name);
    let mut after: Option<String> = None;
    loop {
        let keys = io.list(&prefix, after.as_deref(), opts.page).await?;
        let done = keys.len() < opts.page;
        after = keys.last().cloned();
        for key in keys {
            let Some((record, _)) = io.get::<ManifestRecord>(&key).await? else { continue };
            if record.deleted {
                continue;
            }
            let Some(digest) = digest_of_key(&key).and_then(|d| parse_digest(d).ok()) else { return Ok(false) };
            let Some(bytes) = read_all(io, &digest).await? else {
                tracing::warn!(%name, %digest, "gc: a live manifest's bytes are missing; repository skipped");
                return Ok(false);
            };
            let refs = match parse_manifest(Some(&record.media_type), &bytes) {
                Ok((_, Parsed::Image(m))) => Refs::Image(
                    std::iter::once(m.config().digest().to_string())
                        .chain(m.layers().iter().map(|l| l.digest().to_string()))
                        .collect(),
                ),
                Ok((_, Parsed::Index(i))) => Refs::Index(i.manifests().iter().map(|c| c.digest().to_string()).collect()),
                Err(e) => {
                    tracing::warn!(%name, %digest, "gc: a live manifest does not parse ({e:?}); repository skipped");
                    return Ok(false);
                }
            };
            f(&digest, &record, refs);
        }
        if done {
            return Ok(true);
        }
    }
}

/// What a parent (an index listing a condemned manifest, or its subject) says about it.
#[derive(Default)]
struct Parents {
    /// A live parent no policy condemned: the manifest is needed again, revive it.
    live: bool,
    /// A condemned parent whose settle window has not passed: wait for a later run.
    later: bool,
    /// Parents due now (condemned, settle passed): the manifest goes after them.
    due: Vec<String>,
}

/// One page of the repository's manifest keys: deletes (tombstones) the condemned ones whose
/// settle window has passed, on the version read here, parents first: an index before its
/// children, a subject before its referrers. A condemned manifest waits while something it is
/// part of (an index listing it, its subject) is live and due, goes once that is deleted, and
/// is revived when that is live and not condemned (a push brought it back: it keeps what it
/// needs). One whose parent is condemned but not yet due waits for a later run. A parent due
/// in another page is deleted in its own step; the pass then runs again (the caller) so that
/// what waited for it goes in this run. Returns (deleted, waited); None when the repository's
/// manifests cannot all be read (nothing judged).
async fn delete_due<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    name: &RepoName,
    pending: Vec<(Digest, ManifestRecord, String)>,
    now: u64,
) -> Result<Option<(bool, bool)>> {
    let due = |at: Option<u64>| at.is_some_and(|at| now >= at.saturating_add(opts.settle()));
    // Their parents: the live indexes listing them (a scan of the repository, one manifest at
    // a time), and their subjects (one read each).
    let mut parents: HashMap<String, Parents> = pending.iter().map(|(d, _, _)| (d.to_string(), Parents::default())).collect();
    let readable = each_live_manifest(io, opts, name, |digest, record, refs| {
        let Refs::Index(children) = refs else { return };
        for child in children {
            if let Some(p) = parents.get_mut(&child) {
                note_parent(p, digest.to_string(), record.condemned_at, due(record.condemned_at));
            }
        }
    })
    .await?;
    if !readable {
        return Ok(None);
    }
    for (digest, record, _) in &pending {
        let Some(subject) = record.subject.as_ref().and_then(|s| parse_digest(s).ok()) else { continue };
        let Some((found, _)) = io.get::<ManifestRecord>(&manifest_key(name, &subject)).await? else { continue };
        if found.deleted {
            continue;
        }
        if let Some(p) = parents.get_mut(&digest.to_string()) {
            note_parent(p, subject.to_string(), found.condemned_at, due(found.condemned_at));
        }
    }

    let mut gone: HashSet<String> = HashSet::new();
    let mut deleted_here = false;
    let mut pending = pending;
    loop {
        let mut progress = false;
        let mut waiting = Vec::new();
        for entry in pending {
            let (digest, record, version) = &entry;
            let d = digest.to_string();
            let Some(p) = parents.get(&d) else { continue };
            let key = manifest_key(name, digest);
            if p.live {
                let live = ManifestRecord { condemned_at: None, generation: record.generation + 1, ..record.clone() };
                io.put(&key, &live, Precondition::Version(version.clone())).await?;
                continue;
            }
            if p.later {
                continue;
            }
            if p.due.iter().any(|parent| !gone.contains(parent)) {
                waiting.push(entry);
                continue;
            }
            let deleted = if io.dry() {
                let tombstone = ManifestRecord { deleted: true, ..record.clone() };
                io.put(&key, &tombstone, Precondition::Version(version.clone())).await?
            } else {
                io.reg.tombstone_if_unchanged(name, digest, version).await?
            };
            if deleted {
                tracing::info!(%name, %digest, dry_run = io.dry(), "gc: deleted a manifest a policy condemned");
                if !io.dry() {
                    let reason = format!("condemned by a policy at {}, settle window passed", record.condemned_at.unwrap_or(0));
                    crate::auth::policy_delete(name.as_str(), "manifest", &d, &d, None, &reason, "deleted", now);
                }
                cp.report.manifests_deleted += 1;
                deleted_here = true;
                gone.insert(d);
                progress = true;
            }
        }
        pending = waiting;
        if !progress || pending.is_empty() {
            // What still waits has a parent in another page, or one whose delete lost (a push
            // revived it): the next pass or a later run.
            return Ok(Some((deleted_here, !pending.is_empty())));
        }
    }
}

fn note_parent(p: &mut Parents, parent: String, condemned_at: Option<u64>, due: bool) {
    match (condemned_at, due) {
        (None, _) => p.live = true,
        (Some(_), false) => p.later = true,
        (Some(_), true) => p.due.push(parent),
    }
}

/// One page of the repository's stage (see [`Within`]): a page of its manifests (deleting the
/// due condemned ones), or a page of its links (judged against a fresh scan of its manifests).
/// The phase starts each repository with the manifests, so the links are judged against what
/// the deletions left. True when the phase is done.
async fn links<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    now: u64,
) -> Result<bool> {
    let within = match cp.within.take() {
        Some(w) => w,
        None => {
            let after = cp.cursor.as_ref().map(|r| format!("{REPOS}{r}"));
            let Some(repo_key) = io.list(REPOS, after.as_deref(), 1).await?.pop() else { return Ok(true) };
            let repo = repo_key.strip_prefix(REPOS).unwrap_or(&repo_key).to_owned();
            Within::Manifests { repo, after: None, deleted: false, waited: false }
        }
    };
    let (Within::Manifests { repo, .. } | Within::Links { repo, .. }) = &within;
    let Ok(name) = RepoName::parse(repo) else {
        cp.cursor = Some(repo.clone());
        return Ok(false);
    };
    let next = match within {
        Within::Manifests { repo, after, deleted, waited } => {
            match manifests_page(io, opts, cp, &name, after.as_deref(), now).await? {
                None => None,
                Some((Some(last), d, w)) => {
                    Some(Within::Manifests { repo, after: Some(last), deleted: deleted | d, waited: waited | w })
                }
                // The pass is over; another when it deleted a parent something waited for.
                Some((None, d, w)) if (deleted | d) && (waited | w) => {
                    Some(Within::Manifests { repo, after: None, deleted: false, waited: false })
                }
                Some((None, _, _)) => Some(Within::Links { repo, after: None }),
            }
        }
        Within::Links { repo, after } => match links_page(io, opts, cp, &name, after.as_deref(), now).await? {
            Some(Some(last)) => Some(Within::Links { repo, after: Some(last) }),
            _ => None,
        },
    };
    match next {
        Some(w) => cp.within = Some(w),
        // The repository is done (or skipped: a manifest of it cannot be read).
        None => cp.cursor = Some(name.as_str().to_owned()),
    }
    Ok(false)
}

/// One page of the repository's manifest keys after `after`: deletes the due condemned ones
/// ([`delete_due`]). Returns (the last key when more may follow, deleted, waited); None when the
/// repository is skipped.
async fn manifests_page<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    name: &RepoName,
    after: Option<&str>,
    now: u64,
) -> Result<Option<(Option<String>, bool, bool)>> {
    let keys = io.list(&manifest_prefix(name), after, opts.page).await?;
    let more = (keys.len() >= opts.page).then(|| keys.last().cloned()).flatten();
    let mut pending = Vec::new();
    for key in keys {
        let Some((record, version)) = io.get::<ManifestRecord>(&key).await? else { continue };
        let due = record.condemned_at.is_some_and(|at| now >= at.saturating_add(opts.settle()));
        if record.deleted || !due {
            continue;
        }
        let Some(digest) = digest_of_key(&key).and_then(|d| parse_digest(d).ok()) else { continue };
        pending.push((digest, record, version));
    }
    if pending.is_empty() {
        return Ok(Some((more, false, false)));
    }
    match delete_due(io, opts, cp, name, pending, now).await? {
        Some((deleted, waited)) => Ok(Some((more, deleted, waited))),
        None => {
            cp.report.skipped += 1;
            Ok(None)
        }
    }
}

/// One page of the repository's blob links after `after`: condemn, kill, revive, remove.
/// Returns Some(the last key) when more may follow, Some(None) when the links are done, None
/// when the repository is skipped.
async fn links_page<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    name: &RepoName,
    after: Option<&str>,
    now: u64,
) -> Result<Option<Option<String>>> {
    // The links first, then the manifests: a link's condemned version is read before the scan
    // that decides to kill it (docs/gc.md).
    let keys = io.list(&blob_prefix(name), after, opts.page).await?;
    let more = (keys.len() >= opts.page).then(|| keys.last().cloned()).flatten();
    let mut candidates = Vec::with_capacity(keys.len());
    for key in keys {
        if let Some((link, version)) = io.get::<BlobLink>(&key).await? {
            candidates.push((key, link, version));
        }
    }
    if candidates.is_empty() {
        return Ok(Some(more));
    }
    // Which of this page's digests the repository's live images reference.
    let mut referenced: HashMap<String, bool> =
        candidates.iter().filter_map(|(key, _, _)| digest_of_key(key)).map(|d| (d.to_owned(), false)).collect();
    let readable = each_live_manifest(io, opts, name, |_, _, refs| {
        if let Refs::Image(blobs) = refs {
            for b in blobs {
                if let Some(seen) = referenced.get_mut(&b) {
                    *seen = true;
                }
            }
        }
    })
    .await?;
    if !readable {
        cp.report.skipped += 1;
        return Ok(None);
    }
    let settle = opts.settle();
    let r = &mut cp.report;
    for (key, link, version) in candidates {
        let referenced = digest_of_key(&key).is_some_and(|d| referenced.get(d).copied().unwrap_or(false));
        if link.dead {
            if opts.atomic_batches && !io.dry() && io.delete_if(&key, &version).await? {
                r.links_removed += 1;
            }
            continue;
        }
        if opts.unsafe_sweep {
            if !referenced && now >= link.linked_at.saturating_add(opts.grace_secs) {
                io.delete(&key).await?;
                r.links_removed += 1;
            }
            continue;
        }
        match (referenced, link.condemned_at) {
            (true, None) => {}
            (true, Some(_)) => {
                let live = BlobLink { condemned_at: None, ..link };
                if io.put(&key, &live, Precondition::Version(version)).await? {
                    r.links_revived += 1;
                }
            }
            (false, None) => {
                if now < link.linked_at.saturating_add(opts.grace_secs) {
                    continue;
                }
                let condemned = BlobLink { condemned_at: Some(now), ..link };
                if !io.put(&key, &condemned, Precondition::Version(version)).await? {
                    continue;
                }
                r.links_condemned += 1;
                if settle == 0 {
                    // Only a dry run or a test: no request can be running across a zero window.
                    let Some((current, version)) = io.get::<BlobLink>(&key).await? else { continue };
                    if kill(io, &key, current, version).await? {
                        r.links_killed += 1;
                    }
                }
            }
            (false, Some(at)) => {
                if now >= at.saturating_add(settle) && kill(io, &key, link, version).await? {
                    r.links_killed += 1;
                }
            }
        }
    }
    Ok(Some(more))
}

/// condemned → dead, on the version read before the scan. Exactly one of this and a manifest
/// PUT's revive succeeds.
async fn kill<B: BlobStore, M: MetaStore>(io: &Io<'_, B, M>, key: &str, link: BlobLink, version: String) -> Result<bool> {
    let dead = BlobLink { dead: true, ..link };
    io.put(key, &dead, Precondition::Version(version)).await
}

/// One page of content marks: finishes deletions a killed run left, drops `gone` marks older
/// than the settle window. True when the phase is done.
async fn marks<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    now: u64,
) -> Result<bool> {
    let keys = io.list(MARKS, cp.cursor.as_deref(), opts.page).await?;
    for key in &keys {
        let Some((mark, version)) = io.get::<Mark>(key).await? else { continue };
        let Some(digest) = key.strip_prefix(MARKS).and_then(|d| parse_digest(d).ok()) else { continue };
        match mark {
            Mark::Doomed { size } => finish(io, cp, key, &digest, size, version, now).await?,
            Mark::Gone { at } if now >= at.saturating_add(opts.settle()) => io.delete(key).await?,
            _ => {}
        }
    }
    cp.cursor = keys.last().cloned().or(cp.cursor.take());
    Ok(keys.len() < opts.page)
}

/// Deletes doomed content and marks it gone.
async fn finish<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    cp: &mut Checkpoint,
    key: &str,
    digest: &Digest,
    size: u64,
    version: String,
    now: u64,
) -> Result<()> {
    io.delete_content(digest).await?;
    io.put(key, &Mark::Gone { at: now }, Precondition::Version(version)).await?;
    tracing::info!(%digest, size, dry_run = io.dry(), "gc: deleted content");
    cp.report.content_deleted += 1;
    cp.report.bytes_freed += size;
    Ok(())
}

/// One batch of content: its marks, then a scan of every link and manifest key for references
/// to it, then condemn / doom and delete / clear. True when the phase is done.
async fn content<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    opts: &GcOptions,
    cp: &mut Checkpoint,
    now: u64,
) -> Result<bool> {
    let after = cp.cursor.as_deref().and_then(|d| parse_digest(d).ok());
    let stored = io.reg.blobs.list_blobs(after.as_ref(), opts.batch).await?;
    let Some(last) = stored.last().map(|b| b.digest.to_string()) else { return Ok(true) };
    let done = stored.len() < opts.batch;

    // Marks of the batch, read before the scan (their versions are what a doom is conditional on).
    let mut batch: HashMap<String, (Digest, u64, bool)> =
        stored.into_iter().map(|b| (b.digest.to_string(), (b.digest, b.size, false))).collect();
    let mut marks = HashMap::new();
    let mut mark_keys = Vec::new();
    let from = cp.cursor.as_deref().map(mark_key);
    let mut after_key = from;
    'list: loop {
        let keys = io.list(MARKS, after_key.as_deref(), opts.page).await?;
        let short = keys.len() < opts.page;
        after_key = keys.last().cloned();
        for key in keys {
            if key.strip_prefix(MARKS).is_some_and(|d| d > last.as_str()) {
                break 'list;
            }
            mark_keys.push(key);
        }
        if short {
            break;
        }
    }
    for key in mark_keys {
        let digest = key.strip_prefix(MARKS).unwrap_or_default().to_owned();
        if batch.contains_key(&digest) {
            if let Some(found) = io.get::<Mark>(&key).await? {
                marks.insert(digest, found);
            }
        }
    }

    // References: present links and live manifest records, anywhere. The digest is in the key,
    // so only keys of this batch are read.
    for (prefix, is_link) in [(BLOBS, true), (MANIFESTS, false)] {
        let mut hits = Vec::new();
        each_key(io, prefix, opts.page, |key| {
            if digest_of_key(&key).and_then(|d| batch.get(d)).is_some_and(|(_, _, seen)| !seen) {
                hits.push(key);
            }
        })
        .await?;
        for key in hits {
            let Some(d) = digest_of_key(&key).map(str::to_owned) else { continue };
            if batch.get(&d).is_some_and(|(_, _, seen)| *seen) {
                continue;
            }
            let present = if is_link {
                io.get::<BlobLink>(&key).await?.is_some_and(|(l, _)| !l.dead)
            } else {
                io.get::<ManifestRecord>(&key).await?.is_some_and(|(m, _)| !m.deleted)
            };
            if present {
                if let Some(entry) = batch.get_mut(&d) {
                    entry.2 = true;
                }
            }
        }
    }

    let settle = opts.settle();
    let mut entries: Vec<_> = batch.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (d, (digest, size, referenced)) in entries {
        let key = mark_key(&d);
        let mark = marks.remove(&d);
        if opts.unsafe_sweep {
            if !referenced {
                io.delete_content(&digest).await?;
                cp.report.content_deleted += 1;
                cp.report.bytes_freed += size;
            }
            continue;
        }
        match (referenced, mark) {
            (_, Some((Mark::Gone { .. }, _))) => {}
            // Referenced again (or a crashed run doomed what a request then referenced): keep.
            (true, Some(_)) => io.delete(&key).await?,
            (true, None) => {}
            (false, Some((Mark::Doomed { size }, version))) => finish(io, cp, &key, &digest, size, version, now).await?,
            (false, Some((Mark::Condemned { at, size }, version))) => {
                if now >= at.saturating_add(settle) {
                    doom(io, cp, &key, &digest, size, version, now).await?;
                }
            }
            (false, found) => {
                let cond = match found {
                    Some((_, version)) => Precondition::Version(version),
                    None => Precondition::Absent,
                };
                if !io.put(&key, &Mark::Condemned { at: now, size }, cond).await? {
                    continue;
                }
                cp.report.content_condemned += 1;
                if settle == 0 {
                    // Only a dry run or a test: no request can be running across a zero window.
                    if let Some((_, version)) = io.get_raw(&key).await? {
                        doom(io, cp, &key, &digest, size, version, now).await?;
                    }
                }
            }
        }
    }
    cp.cursor = Some(last);
    Ok(done)
}

/// condemned → doomed (exactly one of this and a request's revive succeeds), then delete.
#[allow(clippy::too_many_arguments)]
async fn doom<B: BlobStore, M: MetaStore>(
    io: &Io<'_, B, M>,
    cp: &mut Checkpoint,
    key: &str,
    digest: &Digest,
    size: u64,
    version: String,
    now: u64,
) -> Result<()> {
    if !io.put(key, &Mark::Doomed { size }, Precondition::Version(version)).await? {
        return Ok(());
    }
    let Some((_, version)) = io.get_raw(key).await? else { return Ok(()) };
    finish(io, cp, key, digest, size, version, now).await
}
