//! Replication on the Worker (docs/replication.md): requests write the outbox through the core
//! and mark their response, so src/webhooks.rs sends the same queue wake-up as for webhooks;
//! the queue consumer and the Cron Trigger run the core's step here, through the Workers
//! `fetch` (src/upstream.rs, which streams blob bodies from R2). Which copies run, when they
//! are retried, and when a full run is due is berth-core's (`replication::scheduled`).

use worker::Env;

/// Due entries taken per round (each a whole copy: many requests); the budget is checked
/// between rounds.
const BATCH: usize = 4;
/// How long one trigger or queue message runs copies before GC (or the next message) gets its
/// turn; `BERTH_REPLICATION_BUDGET` changes it. A copy under way when it ends is finished.
const DEFAULT_BUDGET_SECS: u64 = 120;

/// Runs due replication entries for the budget; with `full` (the Cron Trigger), first enqueues
/// each rule's full run when `BERTH_REPLICATION_SCHEDULE` (a duration: `6h`, `1d`; unset:
/// off, as `berth serve --replication-schedule`) has passed since its last. `label` starts the
/// log line (which caller ran it).
pub async fn run(env: &Env, label: &str, full: bool) -> Result<(), String> {
    let registry = crate::worker_main::background_registry(env)?;
    if registry.replication_rules().is_empty() && (!full || registry.sync_rules().is_empty()) {
        return Ok(());
    }
    let var = |name: &str| env.var(name).ok().map(|v| v.to_string());
    let duration = |name: &str, default: u64| match var(name) {
        Some(v) => berth_core::gc::parse_duration(&v).map_err(|e| format!("{name}: {e}")),
        None => Ok(default),
    };
    let budget_secs = duration("BERTH_REPLICATION_BUDGET", DEFAULT_BUDGET_SECS)?;
    let clock = || (js_sys::Date::now() / 1000.0) as u64;
    if full {
        let every = duration("BERTH_REPLICATION_SCHEDULE", 0)?;
        let n = registry.enqueue_full_runs(clock(), every).await.map_err(|e| e.message)?;
        if n > 0 {
            worker::console_log!("berth: {label}: a scheduled full run enqueued {n} copies");
        }
    }
    let settings = crate::settings::Settings::from_env(env)?;
    let client = crate::upstream::client(settings.upstream_timeout_secs);
    if full {
        // Pull mode (sync rules): each rule whose interval has passed, one caller at a time.
        let r = registry.sync_due(&client, clock()).await.map_err(|e| e.message)?;
        if r.ran > 0 {
            worker::console_log!("berth: {label}: sync rules run: {}, failed: {}", r.ran, r.failed);
        }
    }
    if registry.replication_rules().is_empty() {
        return Ok(());
    }
    let budget = berth_core::Budget { clock: &clock, deadline: Some(clock().saturating_add(budget_secs)), max_steps: None };
    let started = js_sys::Date::now();
    let report = registry.replicate_for(&client, BATCH, &budget).await.map_err(|e| e.message)?;
    let point = crate::analytics::replication_point(&report, (js_sys::Date::now() - started) / 1000.0);
    crate::analytics::record_run(env, settings.analytics_echo, &point);
    worker::console_log!("berth: {label}: {}", serde_json::to_string(&report).unwrap_or_default());
    Ok(())
}
