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
//! [`Registry::sync_due`] is the scheduler's step: each rule whose interval has passed since
//! its last start is claimed with a conditional write of its state record (a lease), so two
//! processes or isolates calling it at once do not both run it.

pub mod config;

use serde::{Deserialize, Serialize};

pub use config::SyncRule;

use crate::error::{RegistryError, Result};
use crate::manifests::{stored_blobs, Parsed};
use crate::mirror::upstream::{bad_gateway, resolve_location};
use crate::mirror::{upstream_status, Fetched, MirrorRule, UpstreamClient};
use crate::names::{parse_digest, Digest, Reference, RepoName};
use crate::reply::names::DOCKER_CONTENT_DIGEST;
use crate::storage::{BlobStore, MetaStore, Precondition, PutOutcome};
use crate::{header_str, ErrorCode, Registry, RequestContext};
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
        let mut run = Run { reg: self, client, rule, remote: rule.remote(), now, report: SyncReport::default() };
        let mut first_error = None;
        for repo in &rule.repositories {
            let tags = match run.remote_tags(repo).await {
                Ok(tags) => tags,
                Err(e) => {
                    tracing::warn!(rule = %rule.name, repository = %repo, error = %e.message, "sync: cannot list the remote tags");
                    run.report.failed += 1;
                    first_error.get_or_insert(about(e, repo));
                    continue;
                }
            };
            for tag in tags.iter().filter(|t| rule.matches_tag(t)) {
                run.report.tags += 1;
                match run.tag(repo, tag).await {
                    Ok(true) => run.report.synced += 1,
                    Ok(false) => run.report.unchanged += 1,
                    Err(e) => {
                        tracing::warn!(rule = %rule.name, repository = %repo, tag = %tag, error = %e.message, "sync failed");
                        run.report.failed += 1;
                        first_error.get_or_insert(about(e, &format!("{repo}:{tag}")));
                    }
                }
            }
        }
        if first_error.is_none() {
            tracing::info!(rule = %rule.name, tags = run.report.tags, synced = run.report.synced,
                           blobs_fetched = run.report.blobs_fetched, "sync");
        }
        (run.report, first_error)
    }
}

/// What a manifest step does: fetch (and look at what it names), or store once that is here.
enum Step {
    Fetch { reference: Reference, tags: Vec<String> },
    Store { fetched: Fetched, tags: Vec<String> },
}

struct Run<'a, B, M> {
    reg: &'a Registry<B, M>,
    client: &'a UpstreamClient,
    rule: &'a SyncRule,
    remote: MirrorRule,
    now: u64,
    report: SyncReport,
}

impl<B: BlobStore, M: MetaStore> Run<'_, B, M> {
    /// The remote repository's tags, every page (`Link: <...>; rel="next"`).
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

    /// Syncs one tag; true when it moved here.
    async fn tag(&mut self, repo: &str, tag: &str) -> Result<bool> {
        let local = RepoName::parse(&self.rule.local_name(repo))?;
        let here = match self.reg.resolve(&local, &Reference::Tag(tag.to_owned())).await {
            Ok(found) => Some(found.digest),
            Err(e) if e.code == ErrorCode::ManifestUnknown => None,
            Err(e) => return Err(e),
        };
        let by_tag = Reference::Tag(tag.to_owned());
        let Some(head) = self.reg.upstream_manifest(self.client, &self.remote, repo, Method::HEAD, &by_tag, self.now).await? else {
            // Deleted there since the list: kept here (a sync never deletes).
            return Ok(false);
        };
        let announced = header_str(&head.headers, DOCKER_CONTENT_DIGEST.as_str()).and_then(|d| parse_digest(d).ok());
        if announced.is_some() && announced == here {
            return Ok(false);
        }
        let root = announced.map_or(by_tag, Reference::Digest);
        let mut stack = vec![Step::Fetch { reference: root, tags: vec![tag.to_owned()] }];
        while let Some(step) = stack.pop() {
            match step {
                Step::Fetch { reference, tags } => {
                    let Some(fetched) = self.fetch(&local, repo, &reference, &tags).await? else { continue };
                    // A source that names no digest in its HEAD: the bytes say it.
                    if !tags.is_empty() && here.as_ref() == Some(&fetched.digest) {
                        return Ok(false);
                    }
                    // An index's children are fetched (and stored) before it.
                    let children: Vec<Step> = match &fetched.parsed {
                        Parsed::Index(index) => index
                            .manifests()
                            .iter()
                            .map(|c| Ok(Step::Fetch { reference: Reference::Digest(parse_digest(c.digest().as_ref())?), tags: Vec::new() }))
                            .collect::<Result<_>>()?,
                        Parsed::Image(_) => Vec::new(),
                    };
                    stack.push(Step::Store { fetched, tags });
                    stack.extend(children);
                }
                Step::Store { fetched, tags } => {
                    let Fetched { digest, media_type, bytes, parsed } = fetched;
                    self.reg.accept_manifest(&local, &digest, &media_type, &bytes, &tags, &parsed, self.now).await?;
                    self.report.manifests += 1;
                }
            }
        }
        Ok(true)
    }

    /// Fetches and verifies a manifest, and an image's blobs. None: a child this repository
    /// has already (with all it names: a manifest is only stored after them).
    async fn fetch(&mut self, local: &RepoName, repo: &str, reference: &Reference, tags: &[String]) -> Result<Option<Fetched>> {
        if let (Reference::Digest(_), true) = (reference, tags.is_empty()) {
            if self.reg.resolve(local, reference).await.is_ok() {
                return Ok(None);
            }
        }
        let Some(response) = self.reg.upstream_manifest(self.client, &self.remote, repo, Method::GET, reference, self.now).await? else {
            return Err(bad_gateway(format!("{}/{repo}: manifest {reference} is gone", self.remote.base())));
        };
        let fetched = self.reg.read_upstream_manifest(reference, &self.remote, repo, response).await?;
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
