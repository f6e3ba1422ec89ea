//! Replication in `berth serve` (the background task that runs due outbox entries, and the
//! optional full run on a schedule) and `berth replicate` by hand, its status, failed entries
//! and retry (docs/replication.md). What is copied, in which order, and when an entry is
//! retried is the core's (`berth_core::replication`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_core::mirror::UpstreamClient;
use berth_core::native::ReqwestUpstream;
use berth_core::replication::outbox::{DueReport, QUEUE};
use berth_core::replication::ReplicationRule;
use berth_core::webhooks::outbox::{failed_in, redeliver_all_in, redeliver_in, release_claims_in};
use berth_core::{BlobStore, MetaStore, Registry};

use crate::local::{FsBlobStore, RedbMeta};

/// Entries one round of the task looks at.
const BATCH: usize = 16;

/// `berth serve`'s replication settings.
#[derive(clap::Args, Clone, Debug)]
pub struct ReplicationFlags {
    /// How often the replication outbox is checked for due copies, in milliseconds.
    #[arg(long = "replication-interval", env = "BERTH_REPLICATION_INTERVAL", default_value_t = 1000)]
    pub replication_interval_ms: u64,
    /// Also copy everything every rule covers this often, in seconds (0: only on push and by
    /// hand). What the destination has is skipped after one HEAD per manifest.
    #[arg(long = "replication-schedule", env = "BERTH_REPLICATION_SCHEDULE", default_value_t = 0)]
    pub replication_schedule_secs: u64,
    /// Seconds a destination may stay silent (before its answer, between chunks).
    #[arg(long = "replication-timeout", env = "BERTH_REPLICATION_TIMEOUT", default_value_t = 60)]
    pub replication_timeout_secs: u64,
}

pub(crate) fn client(timeout_secs: u64) -> Result<UpstreamClient, String> {
    let http = ReqwestUpstream::with_read_timeout(Duration::from_secs(timeout_secs.max(1)))?;
    Ok(UpstreamClient::new(Arc::new(http)))
}

/// Starts the replication task when rules exist: due entries each round (a full batch is
/// followed at once by the next), and every rule in full on the schedule, if one is set.
/// Each run is counted in `metrics` (berth_replication_*), when `/metrics` is served.
pub async fn spawn<B, M>(
    registry: Arc<Registry<B, M>>,
    flags: &ReplicationFlags,
    metrics: Option<Arc<berth_core::metrics::Metrics>>,
) -> Result<(), String>
where
    B: BlobStore + 'static,
    M: MetaStore + 'static,
{
    crate::pull_sync::spawn(registry.clone(), flags).await?;
    if registry.replication_rules().is_empty() {
        return Ok(());
    }
    for rule in registry.replication_rules() {
        // Never the credentials: only whether there are any.
        tracing::info!(rule = %rule.name, destination = %rule.destination, credentials = rule.username.is_some(),
                       on_push = rule.on_push, deletes = rule.deletes, "replication");
    }
    // One process owns the store: claims left by a killed one are stale; they run now.
    match release_claims_in(registry.meta_store(), QUEUE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "released replication entries claimed by an earlier run"),
        Err(e) => return Err(format!("cannot read the replication outbox: {}", e.message)),
    }
    if let Some(metrics) = &metrics {
        metrics.declare_replication_rules(registry.replication_rules().iter().map(|r| r.name.as_str()));
    }
    let client = Arc::new(client(flags.replication_timeout_secs)?);
    let period = Duration::from_millis(flags.replication_interval_ms.max(10));
    let (reg, c, m) = (registry.clone(), client.clone(), metrics.clone());
    crate::webhooks::spawn_rounds(period, move || {
        let (reg, c, m) = (reg.clone(), c.clone(), m.clone());
        async move {
            match reg.replicate_due(&c, crate::gc::now(), BATCH).await {
                Ok(r) => {
                    if let Some(m) = &m {
                        m.count_replication(&r, crate::gc::now());
                    }
                    if r.copied + r.retrying + r.failed > 0 {
                        tracing::info!(copied = r.copied, retrying = r.retrying, failed = r.failed, "replication round");
                    }
                    r.copied + r.retrying + r.failed >= BATCH
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "replication round failed; the next one retries");
                    false
                }
            }
        }
    });
    if flags.replication_schedule_secs > 0 {
        let every = Duration::from_secs(flags.replication_schedule_secs);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for rule in registry.replication_rules() {
                    let mut tally = DueReport::default();
                    if let Err(e) = run_rule(&registry, &client, rule, None, &mut tally).await {
                        tracing::warn!(rule = %rule.name, error = %e, "scheduled replication failed; the next run retries");
                    }
                    if let Some(m) = &metrics {
                        m.count_replication(&tally, crate::gc::now());
                    }
                }
            }
        });
    }
    Ok(())
}

/// Copies `only` (repo, reference), or everything the rule covers; prints nothing, returns
/// the number of copies and the first error, and counts each copy in `tally`.
async fn run_rule<B: BlobStore, M: MetaStore>(
    registry: &Registry<B, M>,
    client: &UpstreamClient,
    rule: &ReplicationRule,
    only: Option<(String, String)>,
    tally: &mut DueReport,
) -> Result<usize, String> {
    let targets = match only {
        Some(t) => vec![t],
        None => registry.replication_targets(rule).await.map_err(|e| e.message)?,
    };
    let mut first_error = None;
    for (repo, reference) in &targets {
        let result = registry.replicate(client, rule, repo, reference, crate::gc::now()).await;
        tally.count(&rule.name, berth_core::metrics::full_run_attempt(result.is_ok()));
        match result {
            Ok(r) => tracing::info!(rule = %rule.name, repo = %repo, reference = %reference, manifests = r.manifests,
                                    blobs_uploaded = r.blobs_uploaded, blobs_mounted = r.blobs_mounted,
                                    blobs_present = r.blobs_present, "replicated"),
            Err(e) => {
                tracing::warn!(rule = %rule.name, repo = %repo, reference = %reference, error = %e.message, "replication failed");
                first_error.get_or_insert(format!("{repo}:{reference}: {}", e.message));
            }
        }
    }
    match first_error {
        None => Ok(targets.len()),
        Some(e) => Err(e),
    }
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReplicateArgs {
    #[command(subcommand)]
    command: Option<ReplicateCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand)]
enum ReplicateCommand {
    /// Each rule's last result (sync rules too), and the outbox: entries waiting, entries kept
    /// as failed.
    Status(DataDir),
    /// Entries kept as failed after their last attempt.
    Failed(DataDir),
    /// Put failed entries back in the outbox; the next `berth serve` runs them.
    Retry(RetryArgs),
    /// Run a sync rule (pull mode: copy from its source registry into this one) now.
    Sync(crate::pull_sync::SyncArgs),
}

#[derive(clap::Args)]
struct DataDir {
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    data_dir: PathBuf,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RetryArgs {
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    data_dir: PathBuf,
    /// The entry's id, as `berth replicate failed` prints it.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<String>,
    #[arg(long)]
    all: bool,
}

/// A stopped `berth serve`'s data directory and the config holding its rules: the by-hand
/// commands work offline (its database allows one process), like `berth gc`.
#[derive(clap::Args)]
pub(crate) struct StoreArgs {
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    data_dir: PathBuf,
    /// The registry's auth config, for its `[policies]` (same as `berth serve --auth-config`).
    #[arg(long, env = "BERTH_AUTH_CONFIG")]
    auth_config: Option<PathBuf>,
    /// The policies-only file of a registry without auth (`berth serve --policy-config`).
    #[arg(long, env = "BERTH_POLICY_CONFIG")]
    policy_config: Option<PathBuf>,
}

impl StoreArgs {
    pub(crate) async fn open(&self) -> Result<Registry<FsBlobStore, RedbMeta>, String> {
        let meta = RedbMeta::open_offline(&self.data_dir)?;
        let blobs = FsBlobStore::open(&self.data_dir, true).await.map_err(|e| e.to_string())?;
        let auth = self.auth_config.as_deref().map(crate::auth::read_config).transpose()?;
        let policies = crate::auth::policies(auth.as_ref(), self.policy_config.as_deref())?;
        // Nothing here signs upload ids for clients: any key will do.
        Ok(Registry::new(blobs, meta, berth_core::Config::new(vec![0; 32])).with_policies(policies))
    }
}

/// `berth replicate --rule NAME (--all | REPO:TAG | REPO@DIGEST)`.
#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The rule, by name.
    #[arg(long)]
    rule: Option<String>,
    /// Everything the rule covers (every matching tag of every matching repository).
    #[arg(long, conflicts_with = "target")]
    all: bool,
    /// One image: `REPO:TAG` or `REPO@sha256:...`.
    target: Option<String>,
    /// Seconds the destination may stay silent.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// `REPO:TAG` or `REPO@DIGEST` -> (repo, reference).
fn split_target(t: &str) -> Result<(String, String), String> {
    if let Some((repo, digest)) = t.split_once('@') {
        return Ok((repo.to_owned(), digest.to_owned()));
    }
    // The tag is after the last ':' that comes after the last '/' (a port is not a tag).
    let last_slash = t.rfind('/').map(|i| i + 1).unwrap_or(0);
    match t[last_slash..].rfind(':') {
        Some(i) => Ok((t[..last_slash + i].to_owned(), t[last_slash + i + 1..].to_owned())),
        None => Err(format!("{t:?}: give REPO:TAG or REPO@DIGEST")),
    }
}

pub async fn run(args: ReplicateArgs) -> Result<(), String> {
    match args.command {
        None => run_by_hand(args.run).await,
        Some(ReplicateCommand::Sync(a)) => crate::pull_sync::run_by_hand(a).await,
        Some(ReplicateCommand::Status(a)) => {
            let meta = RedbMeta::open_offline(&a.data_dir)?;
            let statuses = berth_core::replication::statuses(&meta).await.map_err(|e| e.message)?;
            for s in &statuses {
                if a.json {
                    println!("{}", serde_json::to_string(s).unwrap_or_default());
                } else {
                    let r = &s.report;
                    println!(
                        "{}\t{}\tat={}\t{}:{}\tmanifests={} uploaded={} mounted={} present={}\t{}",
                        s.rule,
                        if s.ok { "ok" } else { "FAILED" },
                        s.at,
                        s.repository,
                        s.reference,
                        r.manifests,
                        r.blobs_uploaded,
                        r.blobs_mounted,
                        r.blobs_present,
                        s.error.as_deref().unwrap_or("-")
                    );
                }
            }
            crate::pull_sync::print_status(&meta, a.json).await?;
            let (waiting, failed) = berth_core::replication::outbox::outbox_size(&meta).await.map_err(|e| e.message)?;
            if !a.json {
                println!("outbox: {waiting} waiting, {failed} failed");
            }
            Ok(())
        }
        Some(ReplicateCommand::Failed(a)) => {
            let meta = RedbMeta::open_offline(&a.data_dir)?;
            for d in failed_in(&meta, QUEUE, None, 10_000).await.map_err(|e| e.message)? {
                let e = &d.event;
                let reference = e.tag.clone().or(e.digest.clone()).unwrap_or_default();
                if a.json {
                    println!("{}", serde_json::json!({ "id": d.id(), "rule": d.endpoint, "kind": e.kind, "repository": e.repository,
                        "reference": reference, "attempts": d.attempts, "last_error": d.last_error }));
                } else {
                    println!("{}\t{}\t{}\t{}:{}\tattempts={}\t{}", d.id(), d.endpoint, e.kind.as_str(),
                             e.repository.as_deref().unwrap_or("-"), reference, d.attempts, d.last_error.as_deref().unwrap_or("-"));
                }
            }
            Ok(())
        }
        Some(ReplicateCommand::Retry(a)) => {
            let meta = RedbMeta::open_offline(&a.data_dir)?;
            let now = crate::gc::now();
            if a.all {
                let n = redeliver_all_in(&meta, QUEUE, now).await.map_err(|e| e.message)?;
                println!("{n} entries are back in the outbox");
                return Ok(());
            }
            let id = a.id.unwrap_or_default();
            match redeliver_in(&meta, QUEUE, &id, now).await.map_err(|e| e.message)? {
                true => {
                    println!("{id} is back in the outbox");
                    Ok(())
                }
                false => Err(format!("no failed entry has id {id:?} (see `berth replicate failed`)")),
            }
        }
    }
}

async fn run_by_hand(args: RunArgs) -> Result<(), String> {
    let Some(name) = args.rule else { return Err("give --rule NAME (and --all or REPO:TAG), or a subcommand".into()) };
    let only = match (&args.target, args.all) {
        (Some(t), false) => Some(split_target(t)?),
        (None, true) => None,
        _ => return Err("give --all or one REPO:TAG".into()),
    };
    let registry = args.store.open().await?;
    let Some(rule) = registry.replication_rules().iter().find(|r| r.name == name).cloned() else {
        let names: Vec<_> = registry.replication_rules().iter().map(|r| r.name.as_str()).collect();
        return Err(format!("no replication rule is named {name:?} (the config has: {})", names.join(", ")));
    };
    let client = client(args.timeout)?;
    let n = run_rule(&registry, &client, &rule, only, &mut DueReport::default()).await?;
    println!("{n} images replicated by rule {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn targets_split_at_the_tag_or_digest() {
        let s = |t| super::split_target(t).unwrap();
        assert_eq!(s("app/web:v1"), ("app/web".into(), "v1".into()));
        assert_eq!(s("app/web@sha256:ab"), ("app/web".into(), "sha256:ab".into()));
        assert!(super::split_target("app/web").is_err());
    }
}
