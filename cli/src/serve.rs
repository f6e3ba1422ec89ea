//! `berth serve`: the core registry behind axum, on local storage. This file only translates
//! HTTP in and out; every protocol rule lives in berth-core.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::{Body, Config, Registry, StorageError};
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::local::{FsBlobStore, RedbMeta};

mod prometheus;

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
    /// Tag and retention policies for a registry without --auth-config: a TOML file with only
    /// `[policies]` (see docs/policies.md). With --auth-config, put them in that file instead.
    /// Giving this file never turns auth on or off.
    #[arg(long, env = "BERTH_POLICY_CONFIG")]
    policy_config: Option<PathBuf>,
    /// Most client connections open at once; more wait in the listen queue. Every connection
    /// costs a file descriptor, and the registry needs some for its own files.
    #[arg(long, env = "BERTH_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a connection may take to send a request's headers, and may sit idle between
    /// requests, before it is closed (slow or idle clients cannot hold connections for ever).
    #[arg(long, env = "BERTH_HEADER_TIMEOUT", default_value_t = 30)]
    header_timeout: u64,
    /// Seconds a request body may send nothing before the request fails. Well under the
    /// upload claim's lease (900 s): a stalled upload lets go of its session long before then.
    #[arg(long, env = "BERTH_BODY_TIMEOUT", default_value_t = 60)]
    body_timeout: u64,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain; needs --tls-key.
    /// Both files are reloaded when they change, or on SIGHUP, without dropping connections.
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds a request may hold an upload session while it writes (the claim's lease).
    #[arg(long, env = "BERTH_UPLOAD_LEASE", default_value_t = berth_core::DEFAULT_UPLOAD_LEASE_SECS, hide = true)]
    upload_lease: u64,
    /// Seconds an upstream registry of a pull-through cache may stay silent (before its answer
    /// and between two chunks of a body) before the pull fails (docs/mirror.md).
    #[arg(long, env = "BERTH_UPSTREAM_TIMEOUT", default_value_t = 30)]
    upstream_timeout: u64,
    /// Serve Prometheus metrics at /metrics on this address (e.g. 127.0.0.1:9500), never on
    /// the registry's. Off when not given: no port is opened that the operator did not ask
    /// for, and nothing is counted (see docs/observability.md).
    #[arg(long, env = "BERTH_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// How many repositories get their own `repository` label value; the rest share `_other`.
    #[arg(long, env = "BERTH_METRICS_MAX_REPOSITORIES", default_value_t = berth_core::metrics::DEFAULT_MAX_REPOSITORIES)]
    metrics_max_repositories: usize,
    /// The storage capacity or quota, in bytes, exported as berth_storage_capacity_bytes so
    /// that the shipped alert fires when the data directory passes 85 % of it.
    #[arg(long, env = "BERTH_STORAGE_CAPACITY")]
    storage_capacity: Option<u64>,
    /// Garbage collection while serving (--gc-interval; docs/gc.md).
    #[command(flatten)]
    gc: crate::gc::ScheduleFlags,
    /// Webhook delivery (the `[webhooks]` of --auth-config or --policy-config; docs/webhooks.md).
    #[command(flatten)]
    webhooks: crate::webhooks::DeliveryFlags,
    /// Replication (the `[[policies.replication]]` rules; docs/replication.md).
    #[command(flatten)]
    replication: crate::replicate::ReplicationFlags,
}

type LocalRegistry = Registry<FsBlobStore, RedbMeta>;

/// Pull events held for webhooks between two delivery rounds (outbox entries; beyond it they
/// are dropped and logged): about a second of pulls at tens of thousands per second.
const PULL_EVENTS_HELD: usize = 65_536;

pub async fn run(args: ServeArgs) -> Result<(), String> {
    keep_files_private();
    raise_open_file_limit(args.max_connections);
    tokio::fs::create_dir_all(&args.data_dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    // Private content and the upload key live here: only berth's own user may enter it (this
    // also closes files an older version created readable by everyone).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(|e| format!("cannot make {} private: {e}", args.data_dir.display()))?;
    }
    let secret = load_or_create_secret(&args.data_dir).await?;
    let blobs = FsBlobStore::open(&args.data_dir, args.fsync).await.map_err(|e| e.to_string())?;
    let meta = RedbMeta::open(&args.data_dir.join("meta.redb")).map_err(|e| e.to_string())?;
    let mut config = Config::new(secret);
    config.upload_lease_secs = args.upload_lease.max(1);
    let mut registry = Registry::new(blobs, meta, config);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::Tls::load(cert, key)?),
        _ => None,
    };
    let mut auth_config = None;
    if let Some(path) = &args.auth_config {
        // The token realm is derived from the request (unless the config names one): its
        // scheme is what this server speaks, unless a proxy in front says X-Forwarded-Proto.
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (auth, config) = crate::auth::load(path, scheme)?;
        registry = registry.with_auth(auth);
        auth_config = Some(config);
        tracing::info!(config = %path.display(), "token auth is on");
    }
    let policies = crate::auth::policies(auth_config.as_ref(), args.policy_config.as_deref())?;
    if !policies.is_empty() {
        let p = policies.config();
        tracing::info!(
            immutable_tags = p.immutable_tags.len(),
            refused_tags = p.refused_tags.len(),
            retention = p.retention.len(),
            "tag policies are on"
        );
    }
    if !policies.config().mirrors.is_empty() {
        for rule in &policies.config().mirrors {
            // Never the credentials: only whether there are any.
            tracing::info!(prefix = %rule.prefix, upstream = %rule.base(), credentials = rule.username.is_some(), ttl = rule.tag_ttl_secs, "pull-through cache");
        }
        let http = berth_core::native::ReqwestUpstream::with_read_timeout(Duration::from_secs(args.upstream_timeout.max(1)))?;
        registry = registry.with_upstream(berth_core::mirror::UpstreamClient::new(Arc::new(http)));
    }
    registry = registry.with_policies(policies);
    let hooks = crate::webhooks::load(auth_config.as_ref(), args.policy_config.as_deref(), &args.webhooks.public_url)?;
    if !hooks.is_empty() {
        tracing::info!(endpoints = hooks.config().endpoints.len(), "webhooks are on");
        // Pull events are written by the delivery task in batches, not by each GET.
        registry = registry.with_webhooks(hooks.buffer_pulls(PULL_EVENTS_HELD));
    }
    let registry = Arc::new(registry);
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let metrics = Arc::new(berth_core::metrics::Metrics::new(args.metrics_max_repositories));
            prometheus::start(addr, metrics.clone(), registry.clone(), args.data_dir.clone(), args.storage_capacity).await?;
            Some(metrics)
        }
        None => None,
    };
    // One process serves this directory, so no request is in flight: claims left by a crash
    // are stale, and a client resuming its upload must not wait for them to lapse.
    match registry.release_all_upload_claims().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(uploads = n, "released upload claims left by an earlier run"),
        Err(e) => return Err(format!("cannot read upload sessions: {e:?}")),
    }
    if registry.webhooks().is_some() {
        // Likewise for webhook deliveries a killed process had claimed: they go out now.
        match berth_core::webhooks::release_claims(registry.meta_store()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "released webhook deliveries claimed by an earlier run"),
            Err(e) => return Err(format!("cannot read the webhook outbox: {}", e.message)),
        }
    }
    args.gc.spawn(registry.clone(), metrics.clone());
    crate::webhooks::spawn(registry.clone(), &args.webhooks, metrics.clone())?;
    crate::replicate::spawn(registry.clone(), &args.replication, metrics.clone()).await?;

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %args.addr, scheme, data_dir = %args.data_dir.display(), "berth is serving the OCI distribution API");
    if let Some(tls) = &tls {
        tls.watch();
    }
    let limits = Limits {
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout.max(1)),
    };
    serve_connections(listener, registry.clone(), limits, tls, metrics).await;
    // The pull events of the last interval, once the requests in flight have finished.
    if let Some(hooks) = registry.webhooks() {
        if let Err(e) = hooks.flush_pulls(registry.meta_store()).await {
            tracing::warn!(error = %e.message, "pull events not written to the webhook outbox");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

#[derive(Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    body_timeout: Duration,
}

/// The accept loop: at most `max_connections` at once (the rest wait in the kernel's listen
/// queue), each with a header-read and idle timeout; on SIGTERM, stop accepting and let the
/// requests in flight finish.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    registry: Arc<LocalRegistry>,
    limits: Limits,
    tls: Option<Arc<crate::tls::Tls>>,
    metrics: Option<Arc<berth_core::metrics::Metrics>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builders = Arc::new(Builders::new(limits.header_timeout));
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot { Ok(slot) => slot, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: keep serving the connections we have.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Headers and body go out as separate writes; without NODELAY, Nagle plus delayed
        // ACKs hold the body back ~40 ms on every small response.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {e}");
        }
        let (registry, metrics) = (registry.clone(), metrics.clone());
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (registry, metrics) = (registry.clone(), metrics.clone());
            async move {
                Ok::<_, Infallible>(handle(registry, metrics.as_deref(), peer, req.map(axum::body::Body::new), limits).await)
            }
        });
        let (builders, graceful, tls) = (builders.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let Some((io, builder)) = open(tcp, tls.as_deref(), &builders, limits.header_timeout).await else {
                return;
            };
            let connection = builder.serve_connection(TokioIo::new(io), service);
            if let Err(e) = graceful.watch(connection).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in flight");
    graceful.shutdown().await;
}

type ConnBuilder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

/// One connection builder per way of telling the protocol: by sniffing the first bytes (plain
/// TCP), or by what TLS's ALPN negotiated (no sniffing, so no unbounded wait for bytes).
struct Builders {
    sniff: ConnBuilder,
    http1: ConnBuilder,
    http2: ConnBuilder,
}

impl Builders {
    fn new(header_timeout: Duration) -> Self {
        let configure = |mut builder: ConnBuilder| {
            // hyper's header-read timeout runs from the moment a connection waits for a
            // request's first byte, so it also closes keep-alive connections left idle.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                // The read buffer per connection, stated rather than left to hyper's default:
                // it bounds memory per connection and holds the longest URI `http` parses.
                .max_buf_size(MAX_READ_BUFFER);
            builder.http2().timer(TokioTimer::new()).keep_alive_interval(header_timeout);
            builder
        };
        Builders {
            sniff: configure(ConnBuilder::new(TokioExecutor::new())),
            http1: configure(ConnBuilder::new(TokioExecutor::new()).http1_only()),
            http2: configure(ConnBuilder::new(TokioExecutor::new()).http2_only()),
        }
    }
}

/// Any byte stream a connection is served over (plain TCP, or TLS over it).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The connection's byte stream and the builder that serves it, once the client has shown it
/// is there: a TLS handshake, or (plain) the first bytes of a request, within `timeout`.
async fn open<'b>(
    tcp: tokio::net::TcpStream,
    tls: Option<&crate::tls::Tls>,
    builders: &'b Builders,
    timeout: Duration,
) -> Option<(Box<dyn Io>, &'b ConnBuilder)> {
    let Some(tls) = tls else {
        // hyper-util reads bytes to tell HTTP/1 from HTTP/2 with no timeout of its own: a
        // client that connects and sends nothing would hold its slot for ever.
        return sends_a_request_head(&tcp, timeout).await.then(|| (Box::new(tcp) as Box<dyn Io>, &builders.sniff));
    };
    let stream = match tokio::time::timeout(timeout, tls.acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake failed: {e}");
            return None;
        }
        Err(_) => return None,
    };
    let builder = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => &builders.http2,
        _ => &builders.http1,
    };
    Some((Box::new(stream), builder))
}

async fn handle(
    registry: Arc<LocalRegistry>,
    metrics: Option<&berth_core::metrics::Metrics>,
    peer: SocketAddr,
    req: http::Request<axum::body::Body>,
    limits: Limits,
) -> axum::response::Response {
    use tracing::Instrument;
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    // The web interface (docs/ui.md): the core decides which paths are its own.
    let accept = parts.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
    if let Some(page) = berth_core::ui::respond(&parts.method, parts.uri.path(), accept) {
        return page.map(|b| match b {
            Body::Full(bytes) => axum::body::Body::from(bytes),
            _ => axum::body::Body::empty(),
        });
    }
    parts.extensions.insert(berth_core::auth::ClientAddr(peer.ip().to_string()));
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let ctx = berth_core::native::request_context();
    // The id the core puts on the response, on every log line of the request (audit included).
    let request_id = berth_core::observe::request_id(&parts.headers, &ctx);
    let span = tracing::info_span!("request", id = %request_id);
    // The body is read on this (the connection's) task and handed over through a short queue,
    // so receiving the next chunk overlaps with hashing and writing this one.
    let (stream, pump, received) = pump_body(body, limits.body_timeout);
    let req = http::Request::from_parts(parts, stream);
    // Run the protocol on its own task: when a client hangs up, hyper drops this handler's
    // future, and a request cut off between two storage steps (or holding an upload claim)
    // must still finish its bookkeeping. Its body stream then ends with an error instead.
    let task = tokio::spawn(async move { registry.handle(req, ctx).await }.instrument(span.clone()));
    let (_, joined) = tokio::join!(pump, task);
    let _entered = span.enter();
    let response = match joined {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(%method, uri = %uri, "request task failed: {e}");
            let mut response = berth_core::internal_error();
            berth_core::observe::stamp_request_id(&mut response, &request_id);
            response
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    tracing::info!(
        %method, uri = %uri, status = response.status().as_u16(), peer = %peer,
        ms = elapsed * 1000.0, "request"
    );
    if let Some(metrics) = metrics {
        metrics.observe(&berth_core::metrics::Exchange {
            method: &method,
            path: uri.path(),
            status: response.status(),
            response_headers: response.headers(),
            seconds: elapsed,
            bytes_in: received.load(std::sync::atomic::Ordering::Relaxed),
            bytes_out: prometheus::bytes_out(method == http::Method::HEAD, &response),
        });
    }
    response.map(|body| match body {
        Body::Empty => axum::body::Body::empty(),
        Body::Full(bytes) => axum::body::Body::from(bytes),
        Body::Stream(stream) => axum::body::Body::from_stream(stream),
    })
}

/// hyper's read buffer per connection (its default size), and so the longest request head it
/// takes. Smaller costs push speed: `bench/ab-push.sh OLD NEW 5` (1 GiB pushes) gave medians of
/// 0.81 s at 128 KiB and 0.76 s at 256 KiB against 0.71 and 0.72 s for the build before this
/// accept loop, and 0.75 s at this size against 0.78 s; 40 uploads stalled after 6 MiB each
/// held 34, 39 and 46 MiB RSS at the three sizes (release builds).
const MAX_READ_BUFFER: usize = 408 * 1024;

/// Waits until the client has sent enough to tell its protocol (a byte that rules out the
/// HTTP/2 preface, or the whole preface), at most `timeout`; false if it sent nothing in time
/// or closed.
async fn sends_a_request_head(tcp: &tokio::net::TcpStream, timeout: Duration) -> bool {
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 24];
    loop {
        let Ok(peeked) = tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await else {
            return false;
        };
        match peeked {
            Ok(0) | Err(_) => return false,
            Ok(n) if n == H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] => return true,
            // A prefix of the HTTP/2 preface: wait for the rest (peek does not consume).
            Ok(_) => {
                if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(20))).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Chunks queued between the connection and the request's task (each at most hyper's read
/// buffer, MAX_READ_BUFFER): bounds what a request holds in memory.
const PUMP_DEPTH: usize = 4;

enum Frame {
    Data(bytes::Bytes),
    Failed(String),
    End,
}

/// Splits a request body into a stream for the core and the future that feeds it. The stream
/// ends cleanly only after `End`: if the feeder is dropped midway (the client went away), the
/// core sees an error, never a silently shortened body.
/// The third value counts the body bytes received (for metrics).
fn pump_body(
    body: axum::body::Body,
    idle: Duration,
) -> (berth_core::ByteStream, impl std::future::Future<Output = ()> + Send, Arc<std::sync::atomic::AtomicU64>) {
    use http_body::Body as _;
    let empty = body.is_end_stream();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(PUMP_DEPTH);
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let pump = async move {
        if empty {
            return;
        }
        let mut data = body.into_data_stream();
        loop {
            let frame = match tokio::time::timeout(idle, data.next()).await {
                Ok(Some(Ok(chunk))) => {
                    counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    Frame::Data(chunk)
                }
                Ok(Some(Err(e))) => Frame::Failed(format!("client body: {e}")),
                Ok(None) => Frame::End,
                // A stalled client must not hold its upload (and its buffers) for ever.
                Err(_) => Frame::Failed(format!("client body: nothing received for {} s", idle.as_secs())),
            };
            let last = !matches!(frame, Frame::Data(_));
            // A closed queue: the core answered without reading the rest.
            if tx.send(frame).await.is_err() || last {
                return;
            }
        }
    };
    if empty {
        return (Box::pin(futures_util::stream::empty()), pump, received);
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
    (Box::pin(stream), pump, received)
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

/// Everything berth serve creates (blobs, uploads, the database, keys) is readable by its own
/// user only: a blob of a private repository is as secret as the repository.
fn keep_files_private() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Each connection and each open blob costs a file descriptor; the default soft limit (often
/// 1024) would be exhausted by the connection cap alone. Raise the soft limit to the hard one.
fn raise_open_file_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit read and write the struct we pass, nothing else.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            if limit.rlim_cur < limit.rlim_max {
                let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                    limit = wanted;
                }
            }
        }
        // Room for the connections plus two descriptors per request (blob, upload) and the rest.
        let needed = (max_connections as u64).saturating_mul(3).saturating_add(64);
        if (limit.rlim_cur as u64) < needed {
            tracing::warn!(
                open_files = limit.rlim_cur as u64, max_connections,
                "the open-file limit is low for --max-connections; lower it or raise `ulimit -n`"
            );
        }
    }
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
}
