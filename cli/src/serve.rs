//! `berth serve`: the core registry behind axum, on local storage. This file only translates
//! HTTP in and out; every protocol rule lives in berth-core.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::response::IntoResponse;
use axum::serve::ListenerExt;
use berth_core::{Body, Config, Registry, StorageError};
use futures_util::StreamExt;

use crate::local::{FsBlobStore, RedbMeta};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BERTH_ADDR", default_value = "127.0.0.1:5000")]
    addr: SocketAddr,
    /// Where blobs and metadata are kept.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    data_dir: PathBuf,
    /// fsync blob data before acknowledging a write, so it survives power loss as well as a
    /// crash of berth. `--fsync false` trades that for speed (page-cache durability only, as
    /// Distribution and zot do by default). Metadata is always committed durably.
    #[arg(long, env = "BERTH_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
    /// Turn on token auth with this config file (TOML; see docs/auth.md). Without it the
    /// registry is open to anyone who can reach it.
    #[arg(long, env = "BERTH_AUTH_CONFIG")]
    auth_config: Option<PathBuf>,
}

type LocalRegistry = Registry<FsBlobStore, RedbMeta>;

pub async fn run(args: ServeArgs) -> Result<(), String> {
    tokio::fs::create_dir_all(&args.data_dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    let secret = load_or_create_secret(&args.data_dir).await?;
    let blobs = FsBlobStore::open(&args.data_dir, args.fsync).await.map_err(|e| e.to_string())?;
    let meta = RedbMeta::open(&args.data_dir.join("meta.redb")).map_err(|e| e.to_string())?;
    let mut registry = Registry::new(blobs, meta, Config::new(secret));
    if let Some(path) = &args.auth_config {
        registry = registry.with_auth(crate::auth::load(path)?);
        tracing::info!(config = %path.display(), "token auth is on");
    }
    let registry = Arc::new(registry);
    // One process serves this directory, so no request is in flight: claims left by a crash
    // are stale, and a client resuming its upload must not wait for them to lapse.
    match registry.release_all_upload_claims().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(uploads = n, "released upload claims left by an earlier run"),
        Err(e) => return Err(format!("cannot read upload sessions: {e:?}")),
    }

    let app = axum::Router::new().fallback(handle).with_state(registry);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?
        // Headers and body go out as separate writes; without NODELAY, Nagle plus delayed ACKs
        // hold the body back ~40 ms on every small response.
        .tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("cannot set TCP_NODELAY: {e}");
            }
        });
    tracing::info!(addr = %args.addr, data_dir = %args.data_dir.display(), "berth is serving the OCI distribution API");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

async fn handle(
    State(registry): State<Arc<LocalRegistry>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(berth_core::auth::ClientAddr(peer.ip().to_string()));
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    // The body is read on this (the connection's) task and handed over through a short queue,
    // so receiving the next chunk overlaps with hashing and writing this one.
    let (stream, pump) = pump_body(body);
    let req = http::Request::from_parts(parts, stream);
    // Run the protocol on its own task: when a client hangs up, hyper drops this handler's
    // future, and a request cut off between two storage steps (or holding an upload claim)
    // must still finish its bookkeeping. Its body stream then ends with an error instead.
    let task = tokio::spawn(async move { registry.handle(req, berth_core::native::request_context()).await });
    let (_, joined) = tokio::join!(pump, task);
    let response = match joined {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(%method, uri = %uri, "request task failed: {e}");
            let body = r#"{"errors":[{"code":"UNKNOWN","message":"internal error"}]}"#;
            return (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                [(http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    };
    tracing::info!(
        %method, uri = %uri, status = response.status().as_u16(), peer = %peer,
        ms = started.elapsed().as_secs_f64() * 1000.0, "request"
    );
    response.map(|body| match body {
        Body::Empty => axum::body::Body::empty(),
        Body::Full(bytes) => axum::body::Body::from(bytes),
        Body::Stream(stream) => axum::body::Body::from_stream(stream),
    })
}

/// Chunks queued between the connection and the request's task.
const PUMP_DEPTH: usize = 8;

enum Frame {
    Data(bytes::Bytes),
    Failed(String),
    End,
}

/// Splits a request body into a stream for the core and the future that feeds it. The stream
/// ends cleanly only after `End`: if the feeder is dropped midway (the client went away), the
/// core sees an error, never a silently shortened body.
fn pump_body(
    body: axum::body::Body,
) -> (berth_core::ByteStream, impl std::future::Future<Output = ()> + Send) {
    use http_body::Body as _;
    let empty = body.is_end_stream();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(PUMP_DEPTH);
    let pump = async move {
        if empty {
            return;
        }
        let mut data = body.into_data_stream();
        loop {
            let frame = match data.next().await {
                Some(Ok(chunk)) => Frame::Data(chunk),
                Some(Err(e)) => Frame::Failed(format!("client body: {e}")),
                None => Frame::End,
            };
            let last = !matches!(frame, Frame::Data(_));
            // A closed queue: the core answered without reading the rest.
            if tx.send(frame).await.is_err() || last {
                return;
            }
        }
    };
    if empty {
        return (Box::pin(futures_util::stream::empty()), pump);
    }
    let mut ended = false;
    let stream = futures_util::stream::poll_fn(move |cx| {
        if ended {
            return std::task::Poll::Ready(None);
        }
        rx.poll_recv(cx).map(|frame| match frame {
            Some(Frame::Data(chunk)) => Some(Ok(chunk)),
            Some(Frame::Failed(e)) => {
                ended = true;
                Some(Err(StorageError::new(e)))
            }
            Some(Frame::End) => {
                ended = true;
                None
            }
            None => {
                ended = true;
                Some(Err(StorageError::new("client body: the connection closed mid-body")))
            }
        })
    });
    (Box::pin(stream), pump)
}

/// The key that signs upload ids, kept in the data directory so ids survive restarts.
async fn load_or_create_secret(dir: &Path) -> Result<Vec<u8>, String> {
    let path = dir.join("upload-secret");
    match tokio::fs::read(&path).await {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) | Err(_) => {}
    }
    let mut secret = vec![0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness for the upload key: {e}"))?;
    write_private(&path, &secret).await.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(secret)
}

async fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    use tokio::io::AsyncWriteExt;
    let mut file = options.open(path).await?;
    file.write_all(content).await?;
    file.sync_all().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}
