//! `berth relay`: a registry on 127.0.0.1 that forwards to a Berth whose runtime caps request
//! bodies (Lambda: ~6 MB, Workers: the plan's limit), so docker, podman and buildx can push
//! layers of any size to it. Their uploads (one streamed PATCH, or one PUT) are taken apart
//! here: the bytes are hashed on the way and sent on in parts to presigned storage URLs where the
//! upstream offers Berth's direct uploads, else in chunked PATCHes within its advertised limits
//! (upload.rs). Everything else passes through (passthrough.rs). The relay logs in upstream with
//! its own credentials and never forwards the client's.

mod passthrough;
mod upload;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::OnceCell;

use crate::token_client::TokenSource;
use crate::upstream::{is_loopback, Registry};

#[derive(clap::Args)]
pub struct RelayArgs {
    /// The registry to relay to: https://HOST[:PORT], or HOST[:PORT] (HTTPS, plain HTTP for
    /// loopback hosts or with --plain-http).
    #[arg(long, env = "BERTH_RELAY_UPSTREAM")]
    upstream: String,
    /// Where clients reach the relay. Port 0 picks a free port; the address actually bound is
    /// printed on stdout.
    #[arg(long, env = "BERTH_RELAY_LISTEN", default_value = "127.0.0.1:5005")]
    listen: SocketAddr,
    /// Use plain HTTP for an upstream given as HOST[:PORT] that is not on loopback.
    #[arg(long)]
    plain_http: bool,
    #[command(flatten)]
    login: crate::upstream::Login,
    /// Part size in MiB for direct uploads (at least the upstream's minimum, 5 MiB on S3), and
    /// the chunk size otherwise (kept within the upstream's advertised limits).
    #[arg(long, default_value_t = 16)]
    part_mib: u64,
    /// Parts sent at once per upload (direct uploads). Memory per upload is about
    /// (jobs + 1) x part size.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Seconds a client's request body may send nothing before its upload fails.
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
}

const MIB: u64 = 1024 * 1024;

/// What every request handler shares.
pub(crate) struct Relay {
    http: reqwest::Client,
    /// The upstream's scheme and authority, without a trailing slash.
    base: String,
    token: Option<String>,
    credentials: Option<(String, String)>,
    /// One registry handle per repository: tokens are scoped to one. Created on first use; a
    /// failed login is not remembered, so the next request tries again.
    repos: Mutex<HashMap<String, Arc<OnceCell<Arc<Registry>>>>>,
    uploads: upload::Sessions,
    part_size: u64,
    jobs: usize,
    idle: Duration,
}

impl Relay {
    /// The handle for one repository, logging in on first use.
    async fn repo(&self, name: &str) -> Result<Arc<Registry>, String> {
        let cell = {
            let mut repos = self.repos.lock().unwrap_or_else(|e| e.into_inner());
            repos.entry(name.to_owned()).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            let tokens = match &self.token {
                Some(_) => None,
                None => TokenSource::discover(&self.http, &self.base, name, self.credentials.clone()).await?,
            };
            Ok::<_, String>(Arc::new(Registry {
                http: self.http.clone(),
                base: self.base.clone(),
                repo: name.to_owned(),
                token: self.token.clone(),
                tokens,
            }))
        })
        .await
        .cloned()
    }
}

pub async fn run(args: RelayArgs) -> Result<(), String> {
    release_big_buffers_at_once();
    let base = upstream_base(&args.upstream, args.plain_http)?;
    let credentials = args.login.credentials()?;
    let http = reqwest::Client::builder()
        // Redirects (307 to presigned storage URLs on blob GETs) go back to the client as they are.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    // Fail at start, not at the first push, when the upstream is unreachable.
    http.get(format!("{base}/v2/"))
        .send()
        .await
        .map_err(|e| crate::upstream::explain("reaching the upstream at", &e))?;
    let relay = Arc::new(Relay {
        http,
        base: base.clone(),
        token: args.login.token,
        credentials,
        repos: Mutex::new(HashMap::new()),
        uploads: upload::Sessions::default(),
        part_size: args.part_mib.max(1) * MIB,
        jobs: args.jobs.clamp(1, 64),
        idle: Duration::from_secs(args.idle_timeout.max(1)),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| format!("listen address: {e}"))?;
    if !local.ip().is_loopback() {
        // Whoever reaches the relay pushes with its credentials.
        tracing::warn!(%local, "the relay listens beyond loopback: anyone who reaches it pushes with its credentials");
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "berth relay: listening on http://{local} -> {base}");
        let _ = out.flush();
    }
    tokio::spawn(upload::sweep(relay.clone()));
    serve(listener, relay).await;
    Ok(())
}

/// Pieces are buffers of many MiB, allocated on one worker thread and freed on another. glibc
/// raises its mmap threshold after the first such free and then keeps them in per-thread heaps
/// it seldom trims: the relay's RSS grew to several pieces per thread (70 MiB instead of 51 for
/// a 256 MiB layer at 16 MiB pieces). A fixed threshold maps every big buffer on its own and
/// unmaps it when the piece is sent.
fn release_big_buffers_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any piece is allocated.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

/// `https://host[:port]` from what the user gave.
fn upstream_base(upstream: &str, plain_http: bool) -> Result<String, String> {
    let upstream = upstream.trim_end_matches('/');
    let base = if upstream.starts_with("http://") || upstream.starts_with("https://") {
        upstream.to_owned()
    } else {
        let scheme = if plain_http || is_loopback(upstream) { "http" } else { "https" };
        format!("{scheme}://{upstream}")
    };
    let authority = base.split_once("://").map(|(_, a)| a).unwrap_or_default();
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("--upstream {upstream:?}: expected a registry's address (https://HOST[:PORT]), no path"));
    }
    Ok(base)
}

async fn serve(listener: tokio::net::TcpListener, relay: Arc<Relay>) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(60));
    let builder = Arc::new(builder);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let relay = relay.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let relay = relay.clone();
                async move { Ok::<_, Infallible>(handle(relay, req).await) }
            });
            if let Err(e) = builder.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

pub(crate) type Response = http::Response<axum::body::Body>;

/// What a request path names.
#[derive(Debug, PartialEq)]
enum Route {
    /// `/v2/`: the API version check, answered here (the relay does the logging in).
    Base,
    /// `/v2/<name>/blobs/uploads/`
    Uploads(String),
    /// `/v2/<name>/blobs/uploads/<id>`
    Session(String, String),
    /// Anything else about one repository (blobs, manifests, tags, referrers).
    Repo(String),
    /// The rest (`/v2/_catalog`, unknown paths): passed on without a repository token.
    Other,
}

fn route(path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return if path == "/v2" { Route::Base } else { Route::Other };
    };
    if rest.is_empty() {
        return Route::Base;
    }
    if let Some(at) = rest.rfind("/blobs/uploads/") {
        let (name, tail) = (&rest[..at], &rest[at + "/blobs/uploads/".len()..]);
        if name.is_empty() {
            return Route::Other;
        }
        return match tail {
            "" => Route::Uploads(name.to_owned()),
            id if !id.contains('/') => Route::Session(name.to_owned(), id.to_owned()),
            _ => Route::Other,
        };
    }
    // The repository name ends where the last of these begins (names may hold slashes; the
    // references after them do not).
    let end = ["/blobs/", "/manifests/", "/tags/", "/referrers/"].iter().filter_map(|m| rest.rfind(m)).max();
    match end {
        Some(end) if end > 0 => Route::Repo(rest[..end].to_owned()),
        _ => Route::Other,
    }
}

async fn handle(relay: Arc<Relay>, req: hyper::Request<Incoming>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match (route(&path), &method) {
        (Route::Base, &http::Method::GET | &http::Method::HEAD) => {
            let mut r = http::Response::new(axum::body::Body::from("{}"));
            r.headers_mut().insert("docker-distribution-api-version", http::HeaderValue::from_static("registry/2.0"));
            r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
            r
        }
        (Route::Uploads(name), &http::Method::POST) => upload::start(relay, name, req).await,
        (Route::Session(name, id), _) => upload::session(relay, name, id, req).await,
        (Route::Repo(name), _) => passthrough::forward(&relay, Some(&name), req).await,
        _ => passthrough::forward(&relay, None, req).await,
    };
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    response
}

/// An OCI error body (`{"errors":[{"code","message"}]}`) with the given status.
pub(crate) fn oci_error(status: http::StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut r = http::Response::new(axum::body::Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    r
}

/// The upstream could not be reached or failed: the client's request fails with 502.
pub(crate) fn upstream_failed(message: &str) -> Response {
    oci_error(http::StatusCode::BAD_GATEWAY, "UNKNOWN", &format!("berth relay: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2/a/b/blobs/uploads/"), Route::Uploads("a/b".into()));
        assert_eq!(route("/v2/a/blobs/uploads/xyz"), Route::Session("a".into(), "xyz".into()));
        assert_eq!(route("/v2/a/b/manifests/v1"), Route::Repo("a/b".into()));
        assert_eq!(route("/v2/a/blobs/x/blobs/sha256:00"), Route::Repo("a/blobs/x".into()));
        assert_eq!(route("/v2/a/tags/list"), Route::Repo("a".into()));
        assert_eq!(route("/v2/_catalog"), Route::Other);
        assert_eq!(route("/v2/blobs/uploads/"), Route::Other);
        assert_eq!(route("/x"), Route::Other);
    }

    #[test]
    fn upstreams() {
        assert_eq!(upstream_base("127.0.0.1:5000", false).unwrap(), "http://127.0.0.1:5000");
        assert_eq!(upstream_base("reg.example", false).unwrap(), "https://reg.example");
        assert_eq!(upstream_base("reg.example:80", true).unwrap(), "http://reg.example:80");
        assert_eq!(upstream_base("https://reg.example/", false).unwrap(), "https://reg.example");
        assert!(upstream_base("https://reg.example/v2", false).is_err());
    }
}
