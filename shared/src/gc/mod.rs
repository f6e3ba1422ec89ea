//! Online garbage collection: removes blob links no manifest references, content nothing
//! references, and abandoned uploads, while the registry serves requests, with no lock. The
//! algorithm and why it is safe: docs/gc.md. Request paths' side of it: [`guard`].
//!
//! A run is a sequence of bounded steps (one page of sessions, one page of a repository's
//! manifests or links, one batch of content); after each, the checkpoint (`gc/run`) is saved with a conditional put, so an
//! invocation with a time limit stops anywhere and the next one continues. Entry point:
//! [`Registry::gc`]. What to delete beyond garbage: the registry's retention policies (the
//! retention phase, [`retention`]) and [`GcOptions::condemned_manifests`]. After the sweep,
//! every quota is recounted so that usage shrinks.

mod guard;
mod io;
mod phases;
mod retention;
pub(crate) use retention::preview as retention_preview;
#[cfg(test)]
mod tests;

pub(crate) use guard::{being_collected, Written};

use serde::{Deserialize, Serialize};

use crate::error::{oci, ErrorCode, Result};
use crate::names::{parse_digest, Digest, RepoName};
use crate::storage::{BlobStore, MetaStore, Precondition};
use crate::Registry;
use io::Io;

/// The checkpoint of the run in progress (or the report of the last one).
pub const CHECKPOINT_KEY: &str = "gc/run";

pub const DEFAULT_GRACE_SECS: u64 = 24 * 3600;
pub const DEFAULT_SETTLE_SECS: u64 = 3600;
pub const DEFAULT_UPLOAD_IDLE_SECS: u64 = 24 * 3600;
/// How long a run holds the checkpoint after its last step: another GC waits this long after a
/// crash before taking over.
pub const DEFAULT_LEASE_SECS: u64 = 600;

/// How a run behaves. `Default` is the documented defaults.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// How long an upload or mount keeps a blob no manifest references.
    pub grace_secs: u64,
    /// An upper bound on how long a request takes between its reads and its last write (plus
    /// clock skew): GC's last step waits this long after its decision (docs/gc.md). Capped at
    /// `grace_secs`.
    pub settle_secs: u64,
    /// Upload sessions untouched this long are aborted with their data.
    pub upload_idle_secs: u64,
    /// Report what would go, write nothing.
    pub dry_run: bool,
    /// The metadata store's `apply` is one transaction (redb, memory): dead link records can be
    /// removed exactly. Elsewhere (R2, S3) they stay (docs/gc.md).
    pub atomic_batches: bool,
    /// Manifests to delete, `(repository, digest)`, as retention policies decide. Handed to
    /// the invocation that starts a run; a manifest a live index of its repository lists stays.
    pub condemned_manifests: Vec<(String, String)>,
    /// Keys or digests per page.
    pub page: usize,
    /// Content digests judged per step (each step scans every link and manifest key once).
    pub batch: usize,
    /// Take the run over even if another GC's lease has not lapsed (a single-process registry
    /// that knows no other GC runs: `berth gc` on a stopped server).
    pub take_over: bool,
    /// Test-only: a plain mark-and-sweep (Distribution's, with the grace period on links):
    /// delete what a scan finds unreferenced at once, with no condemned state, no revive and no
    /// settle window. Breaks images under concurrent
    /// pushes; exists so the race tests can show that they would catch it.
    #[doc(hidden)]
    pub unsafe_sweep: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace_secs: DEFAULT_GRACE_SECS,
            settle_secs: DEFAULT_SETTLE_SECS,
            upload_idle_secs: DEFAULT_UPLOAD_IDLE_SECS,
            dry_run: false,
            atomic_batches: false,
            condemned_manifests: Vec::new(),
            page: 1000,
            batch: 1000,
            take_over: false,
            unsafe_sweep: false,
        }
    }
}

/// `90`, `90s`, `15m`, `24h`, `7d` (and `250ms`): milliseconds. The one syntax of every GC
/// setting, in every runtime's configuration.
pub fn parse_millis(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let scale = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("{s:?} is too long"))
}

/// As [`parse_millis`], in whole seconds.
pub fn parse_duration(s: &str) -> std::result::Result<u64, String> {
    let ms = parse_millis(s)?;
    if ms % 1000 != 0 {
        return Err(format!("{s:?}: whole seconds only here"));
    }
    Ok(ms / 1000)
}

impl GcOptions {
    /// The options of a scheduled run in a serverless runtime, from its settings (environment
    /// variables, Worker vars): `BERTH_GC_GRACE`, `BERTH_GC_SETTLE`, `BERTH_GC_UPLOAD_IDLE`
    /// (durations), `BERTH_GC_DRY_RUN` (`true`). Unset: the defaults. An invalid value is an
    /// error naming the setting, so a deployment learns of it from its first run's log.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> std::result::Result<GcOptions, String> {
        let duration = |name: &str, default: u64| match var(name) {
            None => Ok(default),
            Some(v) if v.trim().is_empty() => Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| format!("{name}: {e}")),
        };
        let dry_run = match var("BERTH_GC_DRY_RUN").as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => return Err(format!("BERTH_GC_DRY_RUN: {other:?} is not true or false")),
        };
        Ok(GcOptions {
            grace_secs: duration("BERTH_GC_GRACE", DEFAULT_GRACE_SECS)?,
            settle_secs: duration("BERTH_GC_SETTLE", DEFAULT_SETTLE_SECS)?,
            upload_idle_secs: duration("BERTH_GC_UPLOAD_IDLE", DEFAULT_UPLOAD_IDLE_SECS)?,
            dry_run,
            ..GcOptions::default()
        })
    }

    /// settle never exceeds grace: content a request just linked must outlive its own
    /// request's settle window.
    fn settle(&self) -> u64 {
        if self.dry_run { 0 } else { self.settle_secs.min(self.grace_secs) }
    }
}

/// What a run did (a dry run: would do). Counts add up across the invocations of one run.
/// Fields missing from a checkpoint an older version wrote read as 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct GcReport {
    pub dry_run: bool,
    /// Every phase done; false when the invocation ran out of time (the next one continues).
    pub finished: bool,
    pub steps: u64,
    pub uploads_aborted: u64,
    /// Repositories a retention rule applied to (their inventory was planned).
    pub retention_repositories: u64,
    /// Tags retention deleted.
    pub tags_deleted: u64,
    /// Manifests a policy condemned, marked (they go a settle window later, unless an index
    /// PUT lists them meanwhile).
    pub manifests_condemned: u64,
    pub manifests_deleted: u64,
    pub links_condemned: u64,
    pub links_revived: u64,
    pub links_killed: u64,
    pub links_removed: u64,
    pub content_condemned: u64,
    pub content_deleted: u64,
    pub bytes_freed: u64,
    /// Quotas recounted after the sweep (their usage now matches what the registry holds).
    pub quotas_recounted: u64,
    /// Things GC left alone because it could not read them (a corrupt record, a manifest whose
    /// bytes are missing): never a reason to delete. See the log.
    pub skipped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    Retention,
    Policy,
    Uploads,
    Links,
    Marks,
    Content,
    Quotas,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub phase: Phase,
    /// Where the phase stands: the last key, repository or digest done.
    pub cursor: Option<String>,
    /// The links phase inside the repository after `cursor`: which stage, and the last key of
    /// it done (one page per step, whatever the repository's size). Absent in checkpoints an
    /// older version wrote: the repository after `cursor` starts afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Within>,
    pub started_at: u64,
    pub lease_until: u64,
    pub report: GcReport,
}

/// Where the links phase stands inside one repository (docs/gc.md, "A run", phase 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "stage")]
pub(crate) enum Within {
    /// A pass over the repository's manifest keys deleting the policy-condemned ones whose
    /// settle window has passed, a page per step. `deleted` and `waited`: whether this pass
    /// deleted one, and left one waiting for a parent due in a later page (then another pass).
    Manifests { repo: String, after: Option<String>, deleted: bool, waited: bool },
    /// Judging the repository's blob links, a page per step.
    Links { repo: String, after: Option<String> },
}

impl Checkpoint {
    fn fresh(now: u64, dry_run: bool) -> Self {
        Checkpoint {
            phase: Phase::Retention,
            cursor: None,
            within: None,
            started_at: now,
            lease_until: 0,
            report: GcReport { dry_run, ..GcReport::default() },
        }
    }
}

/// When an invocation stops.
pub struct Budget<'c> {
    /// The runtime's clock (Unix seconds); the core never reads one itself.
    pub clock: &'c (dyn Fn() -> u64 + Send + Sync),
    /// Stop starting steps at this time (an invocation's time limit minus a margin).
    pub deadline: Option<u64>,
    /// Stop after this many steps (tests: a GC killed after any step).
    pub max_steps: Option<u64>,
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// Runs garbage collection, or continues the run a previous invocation left, until it
    /// finishes or the budget runs out; returns the run's report so far. A dry run always
    /// starts afresh, keeps its state in memory, and writes nothing.
    ///
    /// Errors: another GC holds the run (its lease has not lapsed), or a storage failure (the
    /// checkpoint of the last completed step stays; the next invocation repeats the step).
    pub async fn gc(&self, opts: &GcOptions, budget: &Budget<'_>) -> Result<GcReport> {
        let io = Io::new(self, opts.dry_run);
        let now = (budget.clock)();
        let (mut checkpoint, mut version) = if opts.dry_run {
            (Checkpoint::fresh(now, true), None)
        } else {
            self.take_run(opts, now).await?
        };
        let mut steps = 0;
        while checkpoint.phase != Phase::Done {
            let now = (budget.clock)();
            if budget.deadline.is_some_and(|d| now >= d) || budget.max_steps.is_some_and(|m| steps >= m) {
                break;
            }
            phases::step(&io, opts, &mut checkpoint, now).await?;
            checkpoint.report.steps += 1;
            steps += 1;
            checkpoint.report.finished = checkpoint.phase == Phase::Done;
            if let Some(held) = &version {
                checkpoint.lease_until = (budget.clock)().saturating_add(DEFAULT_LEASE_SECS);
                match self.put_record(CHECKPOINT_KEY, &checkpoint, Precondition::Version(held.clone())).await? {
                    crate::PutOutcome::Written { version: v } => version = Some(v),
                    crate::PutOutcome::Conflict => {
                        return Err(oci(ErrorCode::TooManyRequests, "another garbage collection took this run over"))
                    }
                }
            }
        }
        if let (Some(held), Phase::Done) = (&version, checkpoint.phase) {
            // Done: the lease ends, the report stays readable.
            checkpoint.lease_until = 0;
            self.put_record(CHECKPOINT_KEY, &checkpoint, Precondition::Version(held.clone())).await?;
        }
        Ok(checkpoint.report)
    }

    /// The report of the last run (or of the run in progress), from its checkpoint.
    pub async fn gc_report(&self) -> Result<Option<GcReport>> {
        Ok(self.get_record::<Checkpoint>(CHECKPOINT_KEY).await?.map(|c| c.report))
    }

    /// Continues the run in progress, or starts one; holds it with a lease.
    async fn take_run(&self, opts: &GcOptions, now: u64) -> Result<(Checkpoint, Option<String>)> {
        let current = self.get_versioned::<Checkpoint>(CHECKPOINT_KEY).await?;
        let (mut checkpoint, cond) = match current {
            Some((c, v)) if c.phase != Phase::Done => {
                if c.lease_until > now && !opts.take_over {
                    return Err(oci(
                        ErrorCode::TooManyRequests,
                        format!("another garbage collection holds the run until {}", c.lease_until),
                    ));
                }
                (c, Precondition::Version(v))
            }
            Some((_, v)) => (Checkpoint::fresh(now, false), Precondition::Version(v)),
            None => (Checkpoint::fresh(now, false), Precondition::Absent),
        };
        checkpoint.lease_until = now.saturating_add(DEFAULT_LEASE_SECS);
        match self.put_record(CHECKPOINT_KEY, &checkpoint, cond).await? {
            crate::PutOutcome::Written { version } => Ok((checkpoint, Some(version))),
            crate::PutOutcome::Conflict => {
                Err(oci(ErrorCode::TooManyRequests, "another garbage collection started at the same moment"))
            }
        }
    }
}

/// A `(repository, digest)` pair from a policy, checked.
fn parse_condemned(repo: &str, digest: &str) -> Option<(RepoName, Digest)> {
    Some((RepoName::parse(repo).ok()?, parse_digest(digest).ok()?))
}
