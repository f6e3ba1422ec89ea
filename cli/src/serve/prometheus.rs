//! `berth serve`'s Prometheus endpoint: `/metrics` on its own listen address (`--metrics-addr`),
//! never on the registry's, so a registry open to the internet does not publish its traffic
//! figures with it. What is counted is decided by the core (`berth_core::metrics`); this file
//! measures what only the runtime can (time, body bytes, storage on disk) and serves the text.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_core::metrics::Metrics;

/// How often the bytes under the data directory are summed (a walk of every blob file: not
/// something to do on every scrape).
const STORAGE_REFRESH: Duration = Duration::from_secs(60);

/// Binds the metrics address (a failure stops `berth serve` before it serves anything), then
/// serves `/metrics` (each quota namespace's usage read at each scrape) and keeps the data
/// directory's size fresh on a background task.
pub async fn start(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    registry: Arc<super::LocalRegistry>,
    data_dir: PathBuf,
    capacity: Option<u64>,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (--metrics-addr): {e}"))?;
    let scraped = metrics.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, registry) = (scraped.clone(), registry.clone());
            async move {
                // Read at each scrape: one record per configured quota (docs/quotas.md), cheap
                // and bounded by the config, and exact right after a push.
                match registry.quota_usage().await {
                    Ok(usage) => metrics.set_namespaces(usage.into_iter().map(|q| (q.name, q.used, q.limit)).collect()),
                    Err(e) => tracing::warn!("cannot read quota usage: {e:?}"),
                }
                // The replication outbox's size, likewise: two bounded key listings.
                if !registry.replication_rules().is_empty() {
                    match berth_core::replication::outbox::outbox_size(registry.meta_store()).await {
                        Ok((waiting, failed)) => metrics.set_replication_outbox(waiting as u64, failed as u64),
                        Err(e) => tracing::warn!(error = %e.message, "cannot read the replication outbox"),
                    }
                }
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics listener stopped: {e}");
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STORAGE_REFRESH);
        loop {
            tick.tick().await;
            let dir = data_dir.clone();
            match tokio::task::spawn_blocking(move || bytes_under(&dir)).await {
                Ok(used) => metrics.set_storage(used, capacity),
                Err(e) => tracing::warn!("cannot measure the data directory: {e}"),
            }

        }
    });
    tracing::info!(%addr, "metrics are served at /metrics");
    Ok(())
}

/// The bytes of every file under `dir` (blobs, uploads in progress, the metadata database).
/// Unreadable entries count as nothing: a figure slightly low beats none.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Body bytes of a response as sent: none for HEAD, else its length or declared length.
pub fn bytes_out(head: bool, response: &berth_core::Response) -> u64 {
    if head {
        return 0;
    }
    match response.body() {
        berth_core::Body::Empty => 0,
        berth_core::Body::Full(bytes) => bytes.len() as u64,
        berth_core::Body::Stream(_) => response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_files_in_nested_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("top"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("a/b/deep"), [0u8; 32]).unwrap();
        assert_eq!(bytes_under(dir.path()), 42);
        assert_eq!(bytes_under(&dir.path().join("missing")), 0);
    }
}
