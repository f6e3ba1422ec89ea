//! Pull-mode replication (docs/replication.md, "Pull mode"): the `[[policies.sync]]` rules copy
//! tags of a remote registry's repositories into this one on a schedule, the reverse of
//! [`Registry::copy_to`] (Harbor's pull-based replication, zot's `sync`).
//!
//! Per matching remote tag: one `HEAD` of the manifest; a tag here already at that digest is
//! left alone (a run where nothing moved costs one tag list and one HEAD per tag). Otherwise
//! the manifest is fetched by digest and verified, then what it names (an image's blobs, an
//! index's children, deepest first), then the manifest is stored and the tag moved, last.
//! Fetching is the pull-through cache's code (`crate::mirror`): manifests verified in memory,
//! blobs streamed through the upload path and verified before they are linked. Storing is a
//! push's ([`Registry::accept_manifest`]): tag policies, references, quotas.
//!
//! After a manifest is stored, its referrers at the remote (signatures, SBOMs) follow
//! ([`referrers`]); with `delete_missing`, tags the rule put here that the remote's complete
//! tag list no longer has are removed ([`prune`]). Each tag copied, removed or failed on is a
//! `replication_done` / `replication_failed` webhook event (src/replication/events.rs).
//!
//! [`Registry::sync_due`] is the scheduler's step: each rule whose interval has passed since
//! its last start is claimed with a conditional write of its state record (a lease), so two
//! processes or isolates calling it at once do not both run it.

pub mod config;
mod prune;
mod referrers;

use serde::{Deserialize, Serialize};

pub use config::SyncRule;

use crate::error::{RegistryError, Result};
use crate::manifests::{stored_blobs, Parsed};
use crate::mirror::upstream::{bad_gateway, resolve_location};
use crate::manifests::VerifiedManifest;
use crate::mirror::{upstream_status, MirrorRule, UpstreamClient};
use crate::names::{parse_digest, Digest, Reference, RepoName};
use crate::reply::names::DOCKER_CONTENT_DIGEST;
use crate::storage::{BlobStore, MetaStore, Precondition, PutOutcome};
use crate::{header_str, ErrorCode, Registry, RequestContext};
use super::events::{sync_event, SyncOutcome};
use http::{HeaderMap, Method, StatusCode};

/// Under this: each sync rule's [`SyncState`] (`<rule>`).
pub const STATE: &str = "sync/state/";
/// A run may take long (a 1 GiB layer); its claim holds well beyond it. A runtime that died
/// mid-run delays the rule's next run by this much at most (`berth serve` releases its own
/// claims at start).
pub const LEASE_SECS: u64 = 3600;
/// Tags asked for per page of a remote tag list, and pages read at most per repository.
const TAGS_PAGE: usize = 1000;
const MAX_TAG_PAGES: usize = 100;
/// A tag list page bigger than this is refused (1000 tags of 128 characters fit many times).
const MAX_TAGS_BODY: usize = 4 << 20;
/// An error kept in the status is cut to this many characters.
const MAX_ERROR_CHARS: usize = 1000;
/// Conditional writes of a state record tried before giving up.
const ATTEMPTS: usize = 5;

/// What one run of a rule did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Remote tags that matched the rule.
    pub tags: usize,
    /// Of those, tags here already at the remote digest (one HEAD each).
    pub unchanged: usize,
    /// Tags moved (or created) here.
    pub synced: usize,
    pub failed: usize,
    /// Manifests stored (images, indexes, children).
    pub manifests: usize,
    pub blobs_fetched: usize,
    /// Blobs the local repository had already.
    pub blobs_present: usize,
    pub bytes_fetched: u64,
    /// Referrer manifests stored (signatures, SBOMs; with their own children and blobs).
    #[serde(default)]
    pub referrers: usize,
    /// Tags removed here because the remote no longer has them (`delete_missing`).
    #[serde(default)]
    pub deleted: usize,
}

impl SyncReport {
    /// What was done since `before` (a tag's share of a run's report).
    fn since(&self, before: &SyncReport) -> SyncReport {
        SyncReport {
            tags: self.tags - before.tags,
            unchanged: self.unchanged - before.unchanged,
            synced: self.synced - before.synced,
            failed: self.failed - before.failed,
            manifests: self.manifests - before.manifests,
            blobs_fetched: self.blobs_fetched - before.blobs_fetched,
            blobs_present: self.blobs_present - before.blobs_present,
            bytes_fetched: self.bytes_fetched - before.bytes_fetched,
            referrers: self.referrers - before.referrers,
            deleted: self.deleted - before.deleted,
        }
    }
}

/// A run's result, as `berth replicate status` and `GET /v2/_berth/replication` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Unix seconds of the run's start.
    pub at: u64,
    pub ok: bool,
    /// The first failure (`repo:tag: why`); the others are logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub report: SyncReport,
}

/// A rule's record (`sync/state/<rule>`): when it last started, who runs it now, how it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    pub rule: String,
    /// Unix seconds of the last run's start (by schedule or by hand); the next scheduled run
    /// is due `every` after it.
    pub started: u64,
    /// A run under way holds the rule until then (0: none).
    #[serde(default)]
    pub lease_until: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<SyncStatus>,
}

/// What one [`Registry::sync_due`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueReport {
    /// Rules run (claimed by this call).
    pub ran: usize,
    /// Of those, runs with a failure.
    pub failed: usize,
}

/// The error with what it is about in front (`library/alpine:3.19: ...`).
fn about(mut e: RegistryError, what: &str) -> RegistryError {
    e.message = format!("{what}: {}", e.message);
    e
}

fn state_key(rule: &str) -> String {
    format!("{STATE}{rule}")
}

/// Every sync rule's state (rules never run have none).
pub async fn states<M: MetaStore>(meta: &M) -> crate::storage::StorageResult<Vec<SyncState>> {
    super::per_rule(meta, STATE).await
}

/// The `<...>; rel="next"` of a paged answer.
fn next_link(headers: &HeaderMap) -> Option<&str> {
    let link = header_str(headers, "link")?;
    link.split(',').find(|l| l.contains("rel=\"next\"") || l.contains("rel=next")).and_then(|l| {
        let start = l.find('<')? + 1;
        let end = l[start..].find('>')? + start;
        Some(&l[start..end])
    })
}

/// Upload ids of fetched blobs need random bytes, which a scheduled step has not: derived from
/// what makes the fetch unique (one rule's run fetches a digest into a repository once).
fn upload_nonce(rule: &str, repo: &RepoName, digest: &Digest, now: u64) -> [u8; 16] {
    let hash = crate::hash::sha256_of(format!("sync\0{rule}\0{repo}\0{digest}\0{now}").as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[hash.len() - 16..]);
    out
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// The sync rules of this registry's policies.
    pub fn sync_rules(&self) -> &[SyncRule] {
        &self.policies.config().sync
    }

    /// Runs `rule` now (by hand: no lease, no interval) and keeps its result as the rule's
    /// last. Err: the first failure; the other tags were still tried.
    pub async fn sync(&self, client: &UpstreamClient, rule: &SyncRule, now: u64) -> Result<SyncReport> {
        let (report, error) = self.run_sync(client, rule, now).await;
        self.keep_sync_result(rule, now, &report, error.as_ref(), None).await;
        error.map_or(Ok(report), Err)
    }

    /// The scheduler's step: runs every rule whose interval has passed since its last start
    /// and that no other caller holds, one after the other.
    pub async fn sync_due(&self, client: &UpstreamClient, now: u64) -> Result<DueReport> {
        let mut out = DueReport::default();
        for rule in self.sync_rules() {
            let Some(version) = self.claim_sync(rule, now).await? else { continue };
            let (report, error) = self.run_sync(client, rule, now).await;
            self.keep_sync_result(rule, now, &report, error.as_ref(), Some(version)).await;
            out.ran += 1;
            out.failed += usize::from(error.is_some());
        }
        Ok(out)
    }

    /// Clears every rule's lease: for a runtime that owns its store alone (`berth serve` at
    /// start), where a lease left behind is a killed process's.
    pub async fn release_sync_leases(&self) -> Result<usize> {
        let mut n = 0;
        for rule in self.sync_rules() {
            let key = state_key(&rule.name);
            if let Some((state, version)) = self.get_versioned::<SyncState>(&key).await? {
                if state.lease_until != 0 {
                    let state = SyncState { lease_until: 0, ..state };
                    n += usize::from(matches!(self.put_record(&key, &state, Precondition::Version(version)).await?, PutOutcome::Written { .. }));
                }
            }
        }
        Ok(n)
    }

    /// Takes the rule for a run if it is due and free: one conditional write, which only one
    /// of several concurrent callers wins. Returns the state's version for the closing write.
    async fn claim_sync(&self, rule: &SyncRule, now: u64) -> Result<Option<String>> {
        let key = state_key(&rule.name);
        let (state, cond) = match self.get_versioned::<SyncState>(&key).await? {
            Some((s, v)) => (s, Precondition::Version(v)),
            None => (SyncState { rule: rule.name.clone(), ..Default::default() }, Precondition::Absent),
        };
        let due = state.started == 0 || now >= state.started.saturating_add(rule.every_secs());
        if !due || now < state.lease_until {
            return Ok(None);
        }
        let claimed = SyncState { started: now, lease_until: now + LEASE_SECS, ..state };
        Ok(match self.put_record(&key, &claimed, cond).await? {
            PutOutcome::Written { version } => Some(version),
            PutOutcome::Conflict => None,
        })
    }

    /// Writes a run's result and releases its lease (`claim`: the version the claim wrote).
    /// A failure to keep it is logged: the run itself is what counts.
    async fn keep_sync_result(&self, rule: &SyncRule, now: u64, report: &SyncReport, error: Option<&RegistryError>, claim: Option<String>) {
        let status = SyncStatus {
            at: now,
            ok: error.is_none(),
            error: error.map(|e| e.message.chars().take(MAX_ERROR_CHARS).collect()),
            report: report.clone(),
        };
        let key = state_key(&rule.name);
        let mut claim = claim;
        for _ in 0..ATTEMPTS {
            let (state, cond) = match (claim.take(), self.get_versioned::<SyncState>(&key).await) {
                // Our claim: released, unless the record moved (we outlived the lease).
                (Some(version), _) => (SyncState { rule: rule.name.clone(), started: now, lease_until: 0, last: None }, Precondition::Version(version)),
                (None, Ok(Some((s, v)))) => (SyncState { started: s.started.max(now), ..s }, Precondition::Version(v)),
                (None, Ok(None)) => (SyncState { rule: rule.name.clone(), started: now, ..Default::default() }, Precondition::Absent),
                (None, Err(e)) => {
                    tracing::warn!(rule = %rule.name, error = %e.message, "the sync status could not be read");
                    return;
                }
            };
            let state = SyncState { last: Some(status.clone()), ..state };
            match self.put_record(&key, &state, cond).await {
                Ok(PutOutcome::Written { .. }) => return,
                Ok(PutOutcome::Conflict) => continue,
                Err(e) => {
                    tracing::warn!(rule = %rule.name, error = %e.message, "the sync status could not be kept");
                    return;
                }
            }
        }
        tracing::warn!(rule = %rule.name, "the sync status could not be kept (the record kept changing)");
    }

    /// One run: every matching tag of every repository; a failure is counted and the run goes
    /// on. Returns the report and the first failure.
    async fn run_sync(&self, client: &UpstreamClient, rule: &SyncRule, now: u64) -> (SyncReport, Option<RegistryError>) {
        let mut run = Run { reg: self, client, rule, remote: rule.remote(), now, report: SyncReport::default(), referrers_api: true };
        let mut first_error = None;
        for repo in &rule.repositories {
            let tags = match run.remote_tags(repo).await {
                Ok(tags) => tags,
                Err(e) => {
                    // Nothing is removed here on a failed or partial list (`delete_missing`).
                    tracing::warn!(rule = %rule.name, repository = %repo, error = %e.message, "sync: cannot list the remote tags");
                    run.report.failed += 1;
                    run.emit(&SyncOutcome { repo, tag: None, digest: None, action: "sync", result: Err(&e.message) }).await;
                    first_error.get_or_insert(about(e, repo));
                    continue;
                }
            };
            for tag in tags.iter().filter(|t| rule.matches_tag(t)) {
                run.report.tags += 1;
                let before = run.report.clone();
                let mut digest = None;
                match run.tag(repo, tag, &mut digest).await {
                    Ok(true) => {
                        run.report.synced += 1;
                        let share = run.report.since(&before);
                        let digest = digest.map(|d| d.to_string());
                        run.emit(&SyncOutcome { repo, tag: Some(tag), digest, action: "sync", result: Ok(&share) }).await;
                    }
                    Ok(false) => {
                        run.report.unchanged += 1;
                        // Referrers new since the last run (a signature of the tag's image).
                        let share = run.report.since(&before);
                        if share.referrers > 0 {
                            let digest = digest.map(|d| d.to_string());
                            run.emit(&SyncOutcome { repo, tag: Some(tag), digest, action: "sync", result: Ok(&share) }).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(rule = %rule.name, repository = %repo, tag = %tag, error = %e.message, "sync failed");
                        run.report.failed += 1;
                        let digest = digest.map(|d| d.to_string());
                        run.emit(&SyncOutcome { repo, tag: Some(tag), digest, action: "sync", result: Err(&e.message) }).await;
                        first_error.get_or_insert(about(e, &format!("{repo}:{tag}")));
                    }
                }
            }
            if rule.delete_missing {
                if let Err(e) = run.prune(repo, &tags).await {
                    tracing::warn!(rule = %rule.name, repository = %repo, error = %e.message, "sync: cannot remove the tags gone at the remote");
                    run.report.failed += 1;
                    first_error.get_or_insert(about(e, repo));
                }
            }
        }
        if first_error.is_none() {
            tracing::info!(rule = %rule.name, tags = run.report.tags, synced = run.report.synced,
                           blobs_fetched = run.report.blobs_fetched, referrers = run.report.referrers,
                           deleted = run.report.deleted, "sync");
        }
        (run.report, first_error)
    }
}

/// What a manifest step does: fetch (and look at what it names), or store once that is here.
enum Step {
    /// `root`: the manifest asked for (not a child of it).
    Fetch { reference: Reference, tags: Vec<String>, root: bool },
    Store { fetched: VerifiedManifest, tags: Vec<String> },
}

struct Run<'a, B, M> {
    reg: &'a Registry<B, M>,
    client: &'a UpstreamClient,
    rule: &'a SyncRule,
    remote: MirrorRule,
    now: u64,
    report: SyncReport,
    /// False once the remote answered 404 to the referrers API (Distribution): the rest of the
    /// run asks the tag schema straight away.
    referrers_api: bool,
}

impl<B: BlobStore, M: MetaStore> Run<'_, B, M> {
    /// The remote repository's tags, every page (`Link: <...>; rel="next"`). Ok only for a
    /// complete list: what `delete_missing` may act on.
    async fn remote_tags(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let base = self.remote.base();
        let mut url = format!("{base}/v2/{repo}/tags/list?n={TAGS_PAGE}");
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let r = self.client.send_to(&self.remote, repo, "pull", Method::GET, url.clone(), HeaderMap::new(), None, self.now).await?;
            if r.status != StatusCode::OK {
                return Err(upstream_status(&self.remote, &format!("the tags of {repo}"), r.status));
            }
            let next = next_link(&r.headers).map(|n| resolve_location(&url, n));
            let body = crate::body::read_limited(r.body, MAX_TAGS_BODY).await?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| bad_gateway(format!("{base}: the tags of {repo}: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => url = n,
                None => return Ok(tags),
            }
        }
        Err(bad_gateway(format!("{base}: the tags of {repo} run past {MAX_TAG_PAGES} pages")))
    }

    /// Syncs one tag and the referrers of what it names; true when the tag moved here.
    /// `digest`: the remote's digest for it, once known (for the tag's event).
    async fn tag(&mut self, repo: &str, tag: &str, digest: &mut Option<Digest>) -> Result<bool> {
        let local = RepoName::parse(&self.rule.local_name(repo))?;
        let here = match self.reg.resolve(&local, &Reference::Tag(tag.to_owned())).await {
            Ok(found) => Some(found.digest),
            Err(e) if e.code == ErrorCode::ManifestUnknown => None,
            Err(e) => return Err(e),
        };
        let by_tag = Reference::Tag(tag.to_owned());
        let Some(head) = self.reg.upstream_manifest(self.client, &self.remote, repo, Method::HEAD, &by_tag, self.now).await? else {
            // Deleted there since the list: kept here (only a complete tag list removes tags).
            return Ok(false);
        };
        let announced = header_str(&head.headers, DOCKER_CONTENT_DIGEST.as_str()).and_then(|d| parse_digest(d).ok());
        digest.clone_from(&announced);
        let stored = match (&here, &announced) {
            (Some(h), Some(a)) if h == a => None,
            _ => self.manifests(&local, repo, announced.map_or(by_tag, Reference::Digest), Some(tag), here.as_ref(), None).await?,
        };
        let Some(stored) = stored else {
            // Here already. Its referrers may be new (a signature made after the push): the
            // root's are asked (one request), the rest of the tree is not walked again.
            let here = here.ok_or_else(|| bad_gateway("a tag here lost its digest".to_owned()))?;
            *digest = Some(here.clone());
            self.own(&local, tag, &here).await?;
            self.referrers(&local, repo, vec![here]).await?;
            return Ok(false);
        };
        *digest = stored.last().cloned();
        if let Some(root) = stored.last() {
            self.own(&local, tag, root).await?;
        }
        self.referrers(&local, repo, stored).await?;
        Ok(true)
    }

    /// Fetches, verifies and stores the manifest `root` and what it names (an image's blobs, an
    /// index's children, deepest first), tagging the root with `tag`. Returns the digests
    /// stored, the root last; None when the root turns out to be `here` (what the tag names
    /// here already). `subject`: the root is a referrer of it (refused unless it says so).
    async fn manifests(
        &mut self,
        local: &RepoName,
        repo: &str,
        root: Reference,
        tag: Option<&str>,
        here: Option<&Digest>,
        subject: Option<&Digest>,
    ) -> Result<Option<Vec<Digest>>> {
        let tags: Vec<String> = tag.map(str::to_owned).into_iter().collect();
        let mut stored = Vec::new();
        let mut stack = vec![Step::Fetch { reference: root, tags, root: true }];
        while let Some(step) = stack.pop() {
            match step {
                Step::Fetch { reference, tags, root } => {
                    let Some(fetched) = self.fetch(local, repo, &reference, &tags, subject.filter(|_| root)).await? else { continue };
                    // A source that names no digest in its HEAD: the bytes say it.
                    if root && here.is_some() && here == Some(&fetched.digest) {
                        return Ok(None);
                    }
                    // An index's children are fetched (and stored) before it.
                    let children: Vec<Step> = match &fetched.parsed {
                        Parsed::Index(index) => index
                            .manifests()
                            .iter()
                            .map(|c| Ok(Step::Fetch { reference: Reference::Digest(parse_digest(c.digest().as_ref())?), tags: Vec::new(), root: false }))
                            .collect::<Result<_>>()?,
                        Parsed::Image(_) => Vec::new(),
                    };
                    stack.push(Step::Store { fetched, tags });
                    stack.extend(children);
                }
                Step::Store { fetched, tags } => {
                    self.reg.accept_manifest(local, &fetched, &tags, self.now).await?;
                    self.report.manifests += 1;
                    stored.push(fetched.digest);
                }
            }
        }
        Ok(Some(stored))
    }

    /// Writes a tag's webhook event, when webhooks are configured. A failure to write it is
    /// logged: the copy is done, and the tag's next run finds it unchanged (no second event).
    async fn emit(&self, outcome: &SyncOutcome<'_>) {
        let Some(hooks) = &self.reg.hooks else { return };
        let ops = hooks.outcome_ops(&sync_event(self.rule, outcome, self.now, self.now));
        if ops.is_empty() {
            return;
        }
        if let Err(e) = self.reg.meta.apply(ops).await {
            tracing::warn!(rule = %self.rule.name, repository = %outcome.repo, error = %e.message, "the sync's webhook event could not be written");
        }
    }

    /// Fetches and verifies a manifest, and an image's blobs. None: a child this repository
    /// has already (with all it names: a manifest is only stored after them). `subject`: the
    /// manifest was listed as a referrer of it, which it must say before its blobs are fetched.
    async fn fetch(
        &mut self,
        local: &RepoName,
        repo: &str,
        reference: &Reference,
        tags: &[String],
        subject: Option<&Digest>,
    ) -> Result<Option<VerifiedManifest>> {
        if let (Reference::Digest(_), true) = (reference, tags.is_empty()) {
            if self.reg.resolve(local, reference).await.is_ok() {
                return Ok(None);
            }
        }
        let Some(response) = self.reg.upstream_manifest(self.client, &self.remote, repo, Method::GET, reference, self.now).await? else {
            return Err(bad_gateway(format!("{}/{repo}: manifest {reference} is gone", self.remote.base())));
        };
        let fetched = self.reg.read_upstream_manifest(reference, &self.remote, repo, response).await?;
        if let Some(subject) = subject {
            referrers::check_subject(&fetched, subject, &self.remote, repo)?;
        }
        if let Parsed::Image(m) = &fetched.parsed {
            for blob in stored_blobs(m) {
                let digest = parse_digest(blob.digest().as_ref())?;
                self.blob(local, repo, &digest).await?;
            }
        }
        Ok(Some(fetched))
    }

    async fn blob(&mut self, local: &RepoName, repo: &str, digest: &Digest) -> Result<()> {
        if self.reg.blob_link(local, digest).await?.is_some() {
            self.report.blobs_present += 1;
            return Ok(());
        }
        let ctx = RequestContext { now: self.now, random: upload_nonce(&self.rule.name, local, digest, self.now) };
        match self.reg.fetch_blob(self.client, local, digest, &self.remote, repo, &ctx).await? {
            Some(size) => {
                self.report.blobs_fetched += 1;
                self.report.bytes_fetched += size;
                Ok(())
            }
            None => Err(bad_gateway(format!("{}/{repo}: blob {digest} is not there", self.remote.base()))),
        }
    }
}
