//! `berth gc` (offline, on a stopped `berth serve`'s data directory) and the collection
//! schedule inside `berth serve` (`--gc-interval`). The algorithm is the core's
//! (`berth_core::gc`, docs/gc.md); this file parses durations, opens the stores and prints.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::gc::{DEFAULT_GRACE_SECS, DEFAULT_SETTLE_SECS, DEFAULT_UPLOAD_IDLE_SECS};
use berth_core::{BlobStore, Budget, GcOptions, GcReport, MetaStore, Registry};

use crate::local::{FsBlobStore, RedbMeta};

pub use berth_core::gc::{parse_duration, parse_millis};

/// The settings `berth gc` and `berth serve --gc-interval` share.
#[derive(clap::Args, Clone, Debug)]
pub struct GcFlags {
    /// How long an uploaded or mounted blob no manifest references is kept (docs/gc.md).
    #[arg(long = "gc-grace", visible_alias = "grace", env = "BERTH_GC_GRACE", value_parser = parse_duration,
          default_value = "24h")]
    pub grace: u64,
    /// Upload sessions untouched this long are aborted with their data.
    #[arg(long = "gc-upload-idle", visible_alias = "upload-idle", env = "BERTH_GC_UPLOAD_IDLE",
          value_parser = parse_duration, default_value = "24h")]
    pub upload_idle: u64,
    /// Test-only: a plain mark-and-sweep without the safety rule (breaks images under
    /// concurrent pushes; the race tests use it to show they can fail).
    #[arg(long = "gc-unsafe-sweep", hide = true)]
    pub unsafe_sweep: bool,
}

impl GcFlags {
    fn options(&self, settle: u64) -> GcOptions {
        // Defaults are the core's; the flags' defaults above say the same.
        debug_assert_eq!(DEFAULT_GRACE_SECS, 24 * 3600);
        debug_assert_eq!(DEFAULT_UPLOAD_IDLE_SECS, 24 * 3600);
        GcOptions {
            grace_secs: self.grace,
            settle_secs: settle,
            upload_idle_secs: self.upload_idle,
            // redb: `apply` is one transaction (local/meta.rs).
            atomic_batches: true,
            // One process owns the data directory (redb's lock): no other GC can hold the run,
            // and a lease left by a killed process must not block the next one.
            take_over: true,
            unsafe_sweep: self.unsafe_sweep,
            ..GcOptions::default()
        }
    }
}

#[derive(clap::Args)]
pub struct GcArgs {
    /// The data directory of a `berth serve` that is not running (its database allows one
    /// process; a running server collects with --gc-interval instead).
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    data_dir: PathBuf,
    /// fsync as `berth serve` does (GC only deletes; kept for the same flags as serve).
    #[arg(long, env = "BERTH_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
    /// Report what would be removed and the bytes it would free; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The settle window (docs/gc.md). No request runs while `berth gc` holds the database, so
    /// 0 by default: one run removes everything past its grace period.
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    settle: u64,
    /// The auth config of the registry, for its `[policies]` (retention rules, quotas; see
    /// docs/policies.md). Same setting as `berth serve --auth-config`.
    #[arg(long, env = "BERTH_AUTH_CONFIG")]
    auth_config: Option<PathBuf>,
    /// The policies-only file of a registry without auth (`berth serve --policy-config`).
    /// Without either, no retention rule applies and no quota is recounted.
    #[arg(long, env = "BERTH_POLICY_CONFIG")]
    policy_config: Option<PathBuf>,
    #[command(flatten)]
    flags: GcFlags,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One glibc malloc arena for the whole process, set before any thread starts. The local blob
/// store's file I/O runs on tokio's blocking threads, each of which would otherwise get an
/// arena of its own, and glibc keeps freed memory in them: about 3 MiB of `berth gc`'s peak on
/// larger stores was that, not GC's state (BENCHMARKS.md, bench/gc.sh). A collection is not
/// bound by malloc contention, so it gives nothing up. A no-op where glibc is not the libc.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

pub async fn run(args: GcArgs) -> Result<(), String> {
    if !args.data_dir.join("meta.redb").exists() {
        return Err(format!("{} holds no berth data (no meta.redb)", args.data_dir.display()));
    }
    let blobs = FsBlobStore::open(&args.data_dir, args.fsync).await.map_err(|e| e.to_string())?;
    let meta = RedbMeta::open(&args.data_dir.join("meta.redb")).map_err(|e| {
        format!("cannot open {}: {e} (is `berth serve` running on it? stop it, or use `berth serve --gc-interval`)", args.data_dir.display())
    })?;
    // The same policies as the server's: retention decides what goes, quotas are recounted.
    let auth = args.auth_config.as_deref().map(crate::auth::read_config).transpose()?;
    let policies = crate::auth::policies(auth.as_ref(), args.policy_config.as_deref())?;
    // GC never signs upload ids: any key will do.
    let hooks = crate::webhooks::load(auth.as_ref(), args.policy_config.as_deref(), "")?;
    let registry = Registry::new(blobs, meta, berth_core::Config::new(vec![0; 32])).with_policies(policies).with_webhooks(hooks);
    let opts = GcOptions { dry_run: args.dry_run, ..args.flags.options(args.settle) };
    let report = collect(&registry, &opts).await?;
    crate::webhooks::gc_finished(&registry, &report).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", human(&report));
    }
    Ok(())
}

async fn collect<B: BlobStore, M: MetaStore>(registry: &Registry<B, M>, opts: &GcOptions) -> Result<GcReport, String> {
    let clock = now;
    let budget = Budget { clock: &clock, deadline: None, max_steps: None };
    registry.gc(opts, &budget).await.map_err(|e| format!("garbage collection failed: {}", e.message))
}

fn human(r: &GcReport) -> String {
    let verb = if r.dry_run { "would be" } else { "were" };
    format!(
        "garbage collection{}: {} steps, {}\n\
         upload sessions aborted: {}\n\
         retention: {} repositories judged, {} tags deleted\n\
         manifests condemned by policies: {}, deleted: {}\n\
         blob links condemned: {}, revived: {}, removed from their repository: {}, records deleted: {}\n\
         content condemned: {}, deleted: {}\n\
         bytes {verb} freed: {}\n\
         quotas recounted: {}\n\
         left alone (unreadable, see the log): {}\n",
        if r.dry_run { " (dry run: nothing changed)" } else { "" },
        r.steps,
        if r.finished { "finished" } else { "not finished (the next run continues)" },
        r.uploads_aborted,
        r.retention_repositories,
        r.tags_deleted,
        r.manifests_condemned,
        r.manifests_deleted,
        r.links_condemned,
        r.links_revived,
        r.links_killed,
        r.links_removed,
        r.content_condemned,
        r.content_deleted,
        r.bytes_freed,
        r.quotas_recounted,
        r.skipped,
    )
}

/// `berth serve --gc-interval`: a run every interval, on the serving registry, while it serves.
#[derive(clap::Args, Clone, Debug)]
pub struct ScheduleFlags {
    /// Collect garbage every this often while serving (e.g. 1h). Off unless given: a
    /// registry that deletes data says so on its command line.
    #[arg(long = "gc-interval", env = "BERTH_GC_INTERVAL", value_parser = parse_millis)]
    pub interval_ms: Option<u64>,
    /// The settle window: an upper bound on how long a request takes between its reads and
    /// its writes (docs/gc.md). Capped at the grace period.
    #[arg(long = "gc-settle", env = "BERTH_GC_SETTLE", value_parser = parse_duration, default_value = "1h")]
    pub settle: u64,
    #[command(flatten)]
    pub flags: GcFlags,
}

impl ScheduleFlags {
    /// Starts the schedule, if asked for. Each run goes to completion (a local run has no time
    /// limit); a failed one is logged and the next interval tries again (from its checkpoint).
    /// Each run is counted in `metrics` (berth_gc_*), when `/metrics` is served.
    pub fn spawn<B, M>(&self, registry: Arc<Registry<B, M>>, metrics: Option<Arc<berth_core::metrics::Metrics>>)
    where
        B: BlobStore + 'static,
        M: MetaStore + 'static,
    {
        let Some(interval_ms) = self.interval_ms else { return };
        debug_assert_eq!(DEFAULT_SETTLE_SECS, 3600);
        let opts = self.flags.options(self.settle);
        tracing::info!(interval_ms, grace_secs = opts.grace_secs, settle_secs = opts.settle_secs, "garbage collection is scheduled");
        let period = Duration::from_millis(interval_ms.max(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let started = std::time::Instant::now();
                let result = collect(&registry, &opts).await;
                if let Some(metrics) = &metrics {
                    metrics.count_gc(result.as_ref().ok(), started.elapsed().as_secs_f64(), now());
                }
                match result {
                    Ok(r) => {
                        crate::webhooks::gc_finished(&registry, &r).await;
                        tracing::info!(
                        tags_deleted = r.tags_deleted,
                        manifests_deleted = r.manifests_deleted,
                        links_removed = r.links_killed,
                        content_deleted = r.content_deleted,
                        bytes_freed = r.bytes_freed,
                        uploads_aborted = r.uploads_aborted,
                        "garbage collection run finished"
                    )
                    }
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        });
    }
}
