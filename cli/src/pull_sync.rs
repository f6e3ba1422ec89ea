//! Pull-mode replication (`[[policies.sync]]`, docs/replication.md "Pull mode") in `berth
//! serve` (a task calling the core's scheduler step) and by hand (`berth replicate sync`).
//! Which rule is due, what is copied and how it is verified is the core's
//! (`berth_core::replication::sync`).

use std::sync::Arc;
use std::time::Duration;

use berth_core::replication::SyncState;
use berth_core::{BlobStore, MetaStore, Registry};

use crate::local::RedbMeta;
use crate::replicate::{client, ReplicationFlags, StoreArgs};

/// Starts the sync task when rules exist: every `--replication-interval` it asks the core
/// which rules are due and runs them (one at a time; a long run delays the next check only).
pub async fn spawn<B, M>(registry: Arc<Registry<B, M>>, flags: &ReplicationFlags) -> Result<(), String>
where
    B: BlobStore + 'static,
    M: MetaStore + 'static,
{
    if registry.sync_rules().is_empty() {
        return Ok(());
    }
    for rule in registry.sync_rules() {
        // Never the credentials: only whether there are any.
        tracing::info!(rule = %rule.name, source = %rule.source, credentials = rule.username.is_some(),
                       every = %rule.every, prefix = %rule.prefix, "sync");
    }
    // One process owns the store: a lease left by a killed one is stale.
    match registry.release_sync_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(rules = n, "released sync rules held by an earlier run"),
        Err(e) => return Err(format!("cannot read the sync state: {}", e.message)),
    }
    let client = client(flags.replication_timeout_secs)?;
    let period = Duration::from_millis(flags.replication_interval_ms.max(10));
    tokio::spawn(async move {
        loop {
            match registry.sync_due(&client, crate::gc::now()).await {
                Ok(r) if r.ran > 0 => tracing::info!(ran = r.ran, failed = r.failed, "sync round"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e.message, "sync round failed; the next one retries"),
            }
            tokio::time::sleep(period).await;
        }
    });
    Ok(())
}

/// `berth replicate sync --rule NAME`: offline, on a stopped `berth serve`'s data directory.
#[derive(clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The sync rule, by name.
    #[arg(long)]
    rule: String,
    /// Seconds the source may stay silent.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

pub async fn run_by_hand(args: SyncArgs) -> Result<(), String> {
    let registry = args.store.open().await?;
    let Some(rule) = registry.sync_rules().iter().find(|r| r.name == args.rule).cloned() else {
        let names: Vec<_> = registry.sync_rules().iter().map(|r| r.name.as_str()).collect();
        return Err(format!("no sync rule is named {:?} (the config has: {})", args.rule, names.join(", ")));
    };
    let r = registry.sync(&client(args.timeout)?, &rule, crate::gc::now()).await.map_err(|e| e.message)?;
    println!("rule {}: {} tags, {} synced, {} unchanged, {} blobs fetched ({} bytes), {} referrers, {} deleted", rule.name,
             r.tags, r.synced, r.unchanged, r.blobs_fetched, r.bytes_fetched, r.referrers, r.deleted);
    Ok(())
}

/// The sync rules' lines of `berth replicate status`.
pub async fn print_status(meta: &RedbMeta, json: bool) -> Result<(), String> {
    let states: Vec<SyncState> = berth_core::replication::sync::states(meta).await.map_err(|e| e.message)?;
    for s in &states {
        if json {
            println!("{}", serde_json::to_string(s).unwrap_or_default());
            continue;
        }
        let Some(last) = &s.last else {
            println!("{}\trunning\tat={}\tsync", s.rule, s.started);
            continue;
        };
        let r = &last.report;
        println!(
            "{}\t{}\tat={}\tsync\ttags={} synced={} unchanged={} failed={} fetched={} referrers={} deleted={}\t{}",
            s.rule,
            if last.ok { "ok" } else { "FAILED" },
            last.at,
            r.tags,
            r.synced,
            r.unchanged,
            r.failed,
            r.blobs_fetched,
            r.referrers,
            r.deleted,
            last.error.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
