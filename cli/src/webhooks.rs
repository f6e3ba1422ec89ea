//! Webhooks in `berth serve`: the delivery task (the core's `deliver` step on an interval, in
//! the background, so a slow receiver never slows a request), its HTTP client, and the
//! offline admin commands `berth webhooks failed` and `berth webhooks redeliver`
//! (docs/webhooks.md). What is delivered, when and how often is the core's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_core::native::WebhookPost;
use berth_core::webhooks::{self, Webhooks};
use berth_core::{BlobStore, MetaStore, Registry};

use crate::local::RedbMeta;


/// `berth serve`'s webhook settings.
#[derive(clap::Args, Clone, Debug)]
pub struct DeliveryFlags {
    /// How often the outbox is checked for due deliveries, in milliseconds.
    #[arg(long = "webhook-interval", env = "BERTH_WEBHOOK_INTERVAL", default_value_t = 1000)]
    pub webhook_interval_ms: u64,
    /// Deliveries sent at once.
    #[arg(long = "webhook-concurrency", env = "BERTH_WEBHOOK_CONCURRENCY", default_value_t = webhooks::outbox::DEFAULT_CONCURRENCY)]
    pub webhook_concurrency: usize,
    /// The registry's public URL (e.g. https://registry.example.com), for the `url` of event
    /// targets and the event's `source`.
    #[arg(long = "public-url", env = "BERTH_PUBLIC_URL", default_value = "")]
    pub public_url: String,
}

/// Starts the delivery task when webhooks are configured. Each round delivers a batch; a
/// full batch is followed at once by the next (a backlog drains), otherwise it waits.
pub fn spawn<B, M>(
    registry: Arc<Registry<B, M>>,
    flags: &DeliveryFlags,
    metrics: Option<Arc<berth_core::metrics::Metrics>>,
) -> Result<(), String>
where
    B: BlobStore + 'static,
    M: MetaStore + 'static,
{
    if registry.webhooks().is_none() {
        return Ok(());
    }
    let sender = Arc::new(WebhookPost::new()?);
    let period = Duration::from_millis(flags.webhook_interval_ms.max(10));
    let concurrency = flags.webhook_concurrency.max(1);
    // Pull events dropped so far (Webhooks::buffer_pulls), to log each new loss once.
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    spawn_rounds(period, move || {
        let (registry, sender, metrics, dropped) = (registry.clone(), sender.clone(), metrics.clone(), dropped.clone());
        async move {
            let Some(hooks) = registry.webhooks() else { return false };
            // Pull events the requests left in memory, in one write.
            if let Err(e) = hooks.flush_pulls(registry.meta_store()).await {
                tracing::warn!(error = %e.message, "pull events not written to the outbox; the next round retries");
            }
            let now_dropped = hooks.pulls_dropped();
            if now_dropped > dropped.swap(now_dropped, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(dropped = now_dropped, "pull events dropped: more pulls than one delivery interval holds");
            }
            let batch = webhooks::outbox::DEFAULT_BATCH;
            match hooks.deliver(registry.meta_store(), &*sender, crate::gc::now(), batch, concurrency).await {
                Ok(r) => {
                    if let Some(metrics) = &metrics {
                        metrics.count_webhooks(&r);
                    }
                    if r.delivered + r.retrying + r.failed > 0 {
                        tracing::info!(delivered = r.delivered, retrying = r.retrying, failed = r.failed, "webhook deliveries");
                    }
                    r.delivered + r.retrying + r.failed >= batch
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "webhook delivery round failed; the next one retries");
                    false
                }
            }
        }
    });
    Ok(())
}

/// Runs `round` in the background, again at once while it says it had a full batch (a backlog
/// drains), else after `period`: the outbox tasks of webhooks and replication.
pub fn spawn_rounds<F, Fut>(period: Duration, mut round: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            if !round().await {
                tokio::time::sleep(period).await;
            }
        }
    });
}

/// Loads `[webhooks]` from the auth config or the policies-only file.
pub fn load(
    auth: Option<&berth_core::auth::AuthConfig>,
    policy_file: Option<&std::path::Path>,
    public_url: &str,
) -> Result<Webhooks, String> {
    let text = match policy_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?),
        None => None,
    };
    Webhooks::from_settings(auth, text.as_deref(), public_url)
}

#[derive(clap::Subcommand)]
pub enum WebhooksCommand {
    /// List deliveries kept as failed after their last attempt (offline: on a stopped
    /// `berth serve`'s data directory, like `berth gc`).
    Failed(FailedArgs),
    /// Put failed deliveries back in the outbox; the next `berth serve` sends them.
    Redeliver(RedeliverArgs),
}

#[derive(clap::Args)]
pub struct FailedArgs {
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    data_dir: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RedeliverArgs {
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    data_dir: PathBuf,
    /// The delivery's id, as `berth webhooks failed` prints it.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<String>,
    /// Every failed delivery.
    #[arg(long)]
    all: bool,
}

pub async fn run(cmd: WebhooksCommand) -> Result<(), String> {
    match cmd {
        WebhooksCommand::Failed(args) => {
            let meta = RedbMeta::open_offline(&args.data_dir)?;
            let mut after: Option<String> = None;
            loop {
                let page = webhooks::failed(&meta, after.as_deref(), 100).await.map_err(|e| e.message)?;
                for d in &page {
                    if args.json {
                        println!("{}", serde_json::json!({
                            "id": d.id(), "endpoint": d.endpoint, "kind": d.event.kind, "repository": d.event.repository,
                            "attempts": d.attempts, "last_error": d.last_error, "event": d.event,
                        }));
                    } else {
                        println!(
                            "{}\t{}\t{}\tattempts={}\t{}",
                            d.id(),
                            d.event.kind.as_str(),
                            d.event.repository.as_deref().unwrap_or("-"),
                            d.attempts,
                            d.last_error.as_deref().unwrap_or("-")
                        );
                    }
                }
                match page.last() {
                    Some(last) if page.len() == 100 => after = Some(last.id()),
                    _ => return Ok(()),
                }
            }
        }
        WebhooksCommand::Redeliver(args) => {
            let meta = RedbMeta::open_offline(&args.data_dir)?;
            let now = crate::gc::now();
            if args.all {
                let n = webhooks::redeliver_all(&meta, now).await.map_err(|e| e.message)?;
                println!("{n} deliveries are back in the outbox");
                return Ok(());
            }
            let id = args.id.unwrap_or_default();
            match webhooks::redeliver(&meta, &id, now).await.map_err(|e| e.message)? {
                true => {
                    println!("{id} is back in the outbox");
                    Ok(())
                }
                false => Err(format!("no failed delivery has id {id:?} (see `berth webhooks failed`)")),
            }
        }
    }
}

/// Tells the webhooks that asked for it that a GC run finished (it is written to the outbox;
/// a failure to write it is logged and does not fail the run).
pub async fn gc_finished<B: BlobStore, M: MetaStore>(registry: &Registry<B, M>, report: &berth_core::GcReport) {
    let Some(hooks) = registry.webhooks() else { return };
    if report.dry_run {
        return;
    }
    let now = crate::gc::now();
    let random = berth_core::native::request_context().random;
    if let Err(e) = hooks.enqueue(registry.meta_store(), webhooks::gc_finished(now, report), random, 0).await {
        tracing::warn!(error = %e.message, "the gc_finished webhook event could not be written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::webhooks::HttpPost;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A local server that answers every connection with `answer` (None: never answers) and
    /// counts connections.
    async fn server(answer: Option<String>) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    match answer {
                        Some(a) => {
                            let _ = conn.write_all(a.as_bytes()).await;
                            // Hold the connection (a body that never ends).
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        (port, hits)
    }

    async fn post(client: &WebhookPost, url: &str, allow_private: bool) -> Result<u16, String> {
        client.post(url, allow_private, vec![("content-type".into(), "application/json".into())], b"{}".to_vec()).await
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (target, target_hits) = server(Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into())).await;
        let answer = format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{target}/\r\ncontent-length: 0\r\n\r\n");
        let (port, _) = server(Some(answer)).await;
        let client = WebhookPost::new().unwrap();
        assert_eq!(post(&client, &format!("http://127.0.0.1:{port}/hook"), true).await, Ok(307));
        assert_eq!(target_hits.load(Ordering::SeqCst), 0, "the redirect's target was never called");
    }

    #[tokio::test]
    async fn names_that_resolve_to_internal_addresses_are_refused_unless_allowed() {
        let (port, hits) = server(Some("HTTP/1.1 204 No Content\r\n\r\n".into())).await;
        let client = WebhookPost::new().unwrap();
        let err = post(&client, &format!("http://localhost:{port}/hook"), false).await.unwrap_err();
        assert!(err.contains("localhost resolves to") && err.contains("an internal address"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        assert_eq!(post(&client, &format!("http://localhost:{port}/hook"), true).await, Ok(204));
    }

    #[tokio::test]
    async fn a_receiver_that_hangs_is_cut_off_and_a_huge_body_is_never_read() {
        let (hangs, _) = server(None).await;
        let client = WebhookPost::with_timeout(Duration::from_millis(300)).unwrap();
        let start = Instant::now();
        assert!(post(&client, &format!("http://127.0.0.1:{hangs}/"), true).await.is_err());
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
        // 200 with a 10 GB body that never comes: the status is enough.
        let (huge, _) = server(Some("HTTP/1.1 200 OK\r\ncontent-length: 10000000000\r\n\r\nxxxx".into())).await;
        let start = Instant::now();
        assert_eq!(post(&client, &format!("http://127.0.0.1:{huge}/"), true).await, Ok(200));
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
