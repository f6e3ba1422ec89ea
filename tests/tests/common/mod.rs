//! Harness shared by every test file: where the registry is, a small HTTP client that sends
//! requests verbatim, assertion helpers, and push helpers.
//!
//! Target:
//! - `BERTH_URL=http://host:port[/prefix]`: run against a registry that is already up (any
//!   runtime: `berth serve`, wrangler dev, a Lambda emulator). Nothing is started; black-box HTTP
//!   only. Repository names carry a per-run prefix so earlier runs do not interfere.
//! - otherwise: spawn `BERTH_BIN` (default `<workspace>/target/release/berth`, else
//!   `target/debug/berth`) as `berth serve --addr 127.0.0.1:<free port> --data-dir <tempdir>`,
//!   once per test binary, and wait until `GET /v2/` answers 200.
//!
//! Stopping the spawned server (no process is leaked):
//! - normal end of the test binary, failed tests included (libtest catches panics and then
//!   returns from `main`): an `atexit` handler sends SIGTERM, waits up to 5 s, then SIGKILL,
//!   and removes the temporary data directory (kept if `BERTH_KEEP_DATA` is set).
//! - the test binary is killed (Ctrl-C, SIGKILL, a timeout): on Linux the server was started
//!   with `PR_SET_PDEATHSIG = SIGKILL` from a dedicated thread that lives as long as the server,
//!   so the kernel kills the server when the test process dies. (The data directory under the
//!   system temp dir is then left behind.)
//!
//! The server's output goes to `<tempdir>/server.log`; its path is printed when start-up fails.
//!
//! `BERTH_MAX_BODY=<bytes>`: the target caps request bodies at that size (Lambda's 6 MB event);
//! tests/body_limit.rs then checks the 413 above it and a body at it. The target must agree: it
//! advertises its cap as `OCI-Chunk-Max-Length` on upload POSTs, and a cap advertised without
//! BERTH_MAX_BODY (or the reverse) fails those tests rather than letting them pass unchecked.
//!
//! Redirects: a blob GET may answer 307 to presigned storage (Lambda: S3, the local S3 stand-in
//! in tests/lambda/run.sh). `get_blob` and `follow_redirect` follow it once, as a pulling client
//! does, sending the same headers (a Range stays), so status, range and bytes are checked on
//! what the client finally gets in every runtime. A Location this suite cannot follow
//! (`https://`) fails the test; it is never taken as a pass.
//!
//! Skips: libtest has no runtime skip. A test that cannot apply to the target (the body limit
//! on `berth serve`, which has none) calls `skip(why)`: it returns and shows as `ok`, but the
//! skip is recorded and the binary ends with the line `berth-tests: N skipped: <names>` on
//! stderr. Tests that cannot apply to a runtime for reasons outside Berth (its front rewriting
//! requests, a local stand-in's deviation) are left out by that runtime's script with `--skip`
//! or by not passing their `--test` (tests/edge/run.sh, tests/lambda/run.sh), which libtest
//! reports as filtered out.

#![allow(dead_code)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use sha2::Digest as _;

// ---------------------------------------------------------------------------------------------
// Media types

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Target: BERTH_URL or a spawned `berth serve`

pub struct Target {
    pub host: String,
    pub port: u16,
    /// Path prefix of BERTH_URL without a trailing slash ("" for most runtimes).
    pub prefix: String,
    /// Where the spawned server logs (None with BERTH_URL).
    pub log: Option<PathBuf>,
}

impl Target {
    pub fn host_header(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    pub fn base_url(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.prefix)
    }
}

static TARGET: OnceLock<Target> = OnceLock::new();

pub fn target() -> &'static Target {
    TARGET.get_or_init(|| match std::env::var("BERTH_URL") {
        Ok(url) if !url.trim().is_empty() => parse_base_url(url.trim()),
        _ => start_server(),
    })
}

fn parse_base_url(url: &str) -> Target {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| {
        panic!("BERTH_URL must be a plain http:// URL (no TLS in this suite), got {url:?}")
    });
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = split_host_port(authority, 80);
    Target {
        host,
        port,
        prefix: path.trim_end_matches('/').to_string(),
        log: None,
    }
}

fn split_host_port(authority: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']').expect("bad IPv6 authority");
        let host = rest[..end].to_string();
        let port = rest[end + 1..]
            .strip_prefix(':')
            .map(|p| p.parse().expect("bad port"));
        return (host, port.unwrap_or(default_port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().expect("bad port in URL")),
        None => (authority.to_string(), default_port),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn default_bin() -> PathBuf {
    let root = workspace_root();
    let release = root.join("target/release/berth");
    if release.exists() {
        release
    } else {
        root.join("target/debug/berth")
    }
}

struct Spawned {
    pid: i32,
    exited: Arc<AtomicBool>,
    data_dir: PathBuf,
}

static SPAWNED: Mutex<Option<Spawned>> = Mutex::new(None);

fn start_server() -> Target {
    let bin = std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(default_bin);
    assert!(
        bin.exists(),
        "berth binary {} not found: build it (cargo build --release -p berth), or set BERTH_BIN, \
         or point BERTH_URL at a running registry",
        bin.display()
    );
    let data_dir = std::env::temp_dir().join(format!(
        "berth-tests-{}-{}-{}",
        std::env::args()
            .next()
            .and_then(|a| Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default(),
        std::process::id(),
        now_nanos()
    ));
    remove_stale_dirs();
    std::fs::create_dir_all(&data_dir).expect("create temp dir");
    let log_path = data_dir.join("server.log");
    let store = data_dir.join("data");

    #[cfg(unix)]
    register_atexit();

    let mut last_err = String::new();
    for _attempt in 0..5 {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open server log");
        let args = vec![
            "serve".to_string(),
            "--addr".to_string(),
            format!("127.0.0.1:{port}"),
            "--data-dir".to_string(),
            store.to_string_lossy().into_owned(),
        ];
        let (pid, exited) = spawn_owned(&bin, args, log);
        *SPAWNED.lock().unwrap() = Some(Spawned {
            pid,
            exited: exited.clone(),
            data_dir: data_dir.clone(),
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !exited.load(Ordering::SeqCst) {
            if probe("127.0.0.1", port) {
                return Target {
                    host: "127.0.0.1".into(),
                    port,
                    prefix: String::new(),
                    log: Some(log_path),
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        last_err = if exited.load(Ordering::SeqCst) {
            "server exited during start-up".into()
        } else {
            "server did not answer GET /v2/ with 200 within 60 s".into()
        };
        stop_spawned();
        // A port taken between our probe and the server's bind: try another.
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    panic!(
        "could not start {}: {last_err}\n--- {} ---\n{log}",
        bin.display(),
        log_path.display()
    );
}

/// Removes `berth-tests-<bin>-<pid>-<nanos>` directories left by test processes that were killed
/// (their atexit handler never ran) and are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("berth-tests-") else {
            continue;
        };
        let parts: Vec<&str> = rest.rsplitn(3, '-').collect();
        let [_nanos, pid, _bin] = parts[..] else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        #[cfg(unix)]
        {
            let alive = unsafe { libc::kill(pid, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            if !alive && pid != std::process::id() as i32 {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Spawns the server from a dedicated thread that lives exactly as long as the server: Linux's
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so it must not be a
/// (short-lived) libtest worker thread.
pub fn spawn_owned(bin: &Path, args: Vec<String>, log: std::fs::File) -> (i32, Arc<AtomicBool>) {
    let exited = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let shown = bin.display().to_string();
    let bin = bin.to_path_buf();
    let flag = exited.clone();
    std::thread::Builder::new()
        .name("berth-server".into())
        .spawn(move || {
            let mut cmd = std::process::Command::new(&bin);
            cmd.args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log);
            #[cfg(target_os = "linux")]
            unsafe {
                use std::os::unix::process::CommandExt;
                let parent = libc::getpid();
                cmd.pre_exec(move || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    // The parent may have died before prctl: then nobody would signal us.
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    tx.send(Ok(child.id() as i32)).ok();
                    let _ = child.wait();
                    flag.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    flag.store(true, Ordering::SeqCst);
                    tx.send(Err(e)).ok();
                }
            }
        })
        .expect("spawn server thread");
    match rx.recv().expect("server thread") {
        Ok(pid) => (pid, exited),
        Err(e) => panic!("cannot run {shown}: {e}"),
    }
}

fn stop_spawned() {
    let Some(s) = SPAWNED.lock().map(|mut g| g.take()).unwrap_or(None) else {
        return;
    };
    #[cfg(unix)]
    unsafe {
        if !s.exited.load(Ordering::SeqCst) {
            libc::kill(s.pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !s.exited.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !s.exited.load(Ordering::SeqCst) {
                libc::kill(s.pid, libc::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(2);
                while !s.exited.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    let _ = &s.data_dir;
}

#[cfg(unix)]
fn register_atexit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn at_exit() {
        report_skips();
        let dir = SPAWNED
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.data_dir.clone()));
        stop_spawned();
        if let Some(dir) = dir {
            if std::env::var_os("BERTH_KEEP_DATA").is_some() {
                eprintln!("berth-tests: server data and log kept in {}", dir.display());
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    ONCE.call_once(|| unsafe {
        libc::atexit(at_exit);
    });
}

// ---------------------------------------------------------------------------------------------
// Skips

static SKIPPED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Records that the running test does not apply to this target, and why; the caller then
/// returns. The name is the test's (libtest runs each test on a thread named after it).
pub fn skip(why: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    eprintln!("skipped {name}: {why}");
    if let Ok(mut s) = SKIPPED.lock() {
        s.push((name, why.to_string()));
    }
    #[cfg(unix)]
    register_atexit();
}

/// The closing line: `berth-tests: N skipped: <names>`, each with its reason below.
fn report_skips() {
    let Ok(skipped) = SKIPPED.lock() else { return };
    if skipped.is_empty() {
        return;
    }
    let names: Vec<&str> = skipped.iter().map(|(n, _)| n.as_str()).collect();
    eprintln!(
        "berth-tests: {} skipped: {}",
        skipped.len(),
        names.join(", ")
    );
    for (name, why) in skipped.iter() {
        eprintln!("  {name}: {why}");
    }
}

/// A blocking `GET /v2/` used while waiting for the server (we may be inside a tokio runtime).
fn probe(host: &str, port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/1.1 200"
}

// ---------------------------------------------------------------------------------------------
// Names and data

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Per-run prefix: zero-padded time first, so later runs sort after earlier ones.
pub fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let t = now_nanos();
        format!(
            "it{:012x}{:04x}",
            (t / 1_000_000) as u64 & 0xffff_ffff_ffff,
            std::process::id() & 0xffff
        )
    })
}

/// A repository name of its own for one test: `<run>/<label>-<n>`.
/// The target's cap on one request body (`BERTH_MAX_BODY`), if it has one.
pub fn max_body() -> Option<usize> {
    std::env::var("BERTH_MAX_BODY").ok().and_then(|v| v.parse().ok())
}

pub fn repo(label: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}/{}-{n}", run_id(), label.replace('_', "-"))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = (now_nanos() as u64)
        ^ (COUNTER
            .fetch_add(1, Ordering::SeqCst)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15))
        ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex(&sha2::Sha512::digest(data)))
}

/// A well-formed sha256 digest of nothing stored anywhere.
pub fn unknown_digest() -> String {
    sha256(&random_bytes(64))
}

/// `loc` plus a query parameter, whether or not `loc` already has a query.
pub fn with_query(loc: &str, q: &str) -> String {
    if loc.contains('?') {
        format!("{loc}&{q}")
    } else {
        format!("{loc}?{q}")
    }
}

pub fn is_upload_id(id: &str) -> bool {
    let Some((a, b)) = id.split_once('.') else {
        return false;
    };
    a.len() == 32
        && b.len() == 32
        && a.chars().all(|c| c.is_ascii_hexdigit())
        && b.chars().all(|c| c.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------------------------
// HTTP client

type ReqBody = UnsyncBoxBody<Bytes, Infallible>;

enum BodyKind {
    Empty,
    Full(Bytes),
    /// Sent with `Transfer-Encoding: chunked` and no Content-Length.
    Stream(Vec<Bytes>),
}

pub struct Req {
    method: Method,
    target: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: BodyKind,
}

pub fn request(method: &str, target: impl Into<String>) -> Req {
    Req {
        method: Method::from_bytes(method.as_bytes()).expect("method"),
        target: target.into(),
        headers: Vec::new(),
        body: BodyKind::Empty,
    }
}
pub fn get(target: impl Into<String>) -> Req {
    request("GET", target)
}
pub fn head(target: impl Into<String>) -> Req {
    request("HEAD", target)
}
pub fn put(target: impl Into<String>) -> Req {
    request("PUT", target)
}
pub fn post(target: impl Into<String>) -> Req {
    request("POST", target)
}
pub fn patch(target: impl Into<String>) -> Req {
    request("PATCH", target)
}
pub fn delete(target: impl Into<String>) -> Req {
    request("DELETE", target)
}

impl Req {
    /// Adds a header line (repeatable: two calls send two lines).
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value.as_ref()).expect("header value"),
        ));
        self
    }
    /// A body with its Content-Length.
    pub fn body(mut self, data: impl Into<Bytes>) -> Self {
        self.body = BodyKind::Full(data.into());
        self
    }
    /// A chunked-transfer body (no Content-Length), sent as these pieces.
    pub fn stream(mut self, pieces: Vec<Vec<u8>>) -> Self {
        self.body = BodyKind::Stream(pieces.into_iter().map(Bytes::from).collect());
        self
    }

    /// Sends the request; panics when no HTTP response comes back (connection dropped, timeout).
    pub async fn send(self) -> Resp {
        match self.try_send().await {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Sends the request; Err describes a request that got no HTTP response.
    pub async fn try_send(self) -> Result<Resp, String> {
        let t = target();
        let (host, port, path) = resolve_target(t, &self.target);
        let url = format!("http://{host}:{port}{path}");
        let shown_headers: String = self
            .headers
            .iter()
            .map(|(n, v)| format!(" [{n}: {}]", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let uri: http::Uri = path
            .parse()
            .unwrap_or_else(|e| panic!("request target {path:?} is not a URI: {e}"));
        let mut req = http::Request::builder()
            .method(self.method.clone())
            .uri(uri);
        let headers = req.headers_mut().unwrap();
        if !self.headers.iter().any(|(n, _)| n == http::header::HOST) {
            headers.insert(
                http::header::HOST,
                HeaderValue::from_str(&format!("{host}:{port}")).unwrap(),
            );
        }
        for (n, v) in self.headers {
            headers.append(n, v);
        }
        let body: ReqBody = match self.body {
            BodyKind::Empty => Empty::new().boxed_unsync(),
            BodyKind::Full(b) => Full::new(b).boxed_unsync(),
            BodyKind::Stream(pieces) => StreamBody::new(futures_util::stream::iter(
                pieces
                    .into_iter()
                    .map(|b| Ok::<_, Infallible>(Frame::data(b))),
            ))
            .boxed_unsync(),
        };
        let req = req.body(body).expect("request");
        let method = self.method;
        let fut = async {
            let stream = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("connect {host}:{port}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            let conn = tokio::spawn(conn);
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("reading body: {e}"))?
                .to_bytes();
            drop(sender);
            conn.abort();
            Ok::<_, String>((parts, body))
        };
        match tokio::time::timeout(Duration::from_secs(120), fut).await {
            Ok(Ok((parts, body))) => Ok(Resp {
                method,
                url,
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            }),
            Ok(Err(e)) => Err(format!(
                "{method} {url}{shown_headers}: request failed (no HTTP response): {e}"
            )),
            Err(_) => Err(format!("{method} {url}: no response within 120 s")),
        }
    }
}

/// Host, port and origin-form path for a request target: a path relative to the registry root
/// (`/v2/...`, prefixed with BERTH_URL's path), or an absolute `http://` URL (e.g. a Location).
fn resolve_target(t: &Target, target: &str) -> (String, u16, String) {
    if let Some(rest) = target.strip_prefix("http://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority, 80);
        return (host, port, path.to_string());
    }
    if target.starts_with("https://") {
        panic!("cannot follow {target}: this suite speaks plain HTTP only");
    }
    let path = if !t.prefix.is_empty() && target.starts_with(&format!("{}/", t.prefix)) {
        target.to_string()
    } else {
        format!("{}{}", t.prefix, target)
    };
    (t.host.clone(), t.port, path)
}

pub struct Resp {
    pub method: Method,
    pub url: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The header's value (all lines joined with ", ").
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<String> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(", "))
        }
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}):\n{}", self.describe()))
    }
    /// The Location's path, relative to the registry root (scheme, host and BERTH_URL's prefix
    /// stripped), query included.
    #[track_caller]
    pub fn location(&self) -> String {
        let loc = self
            .header("location")
            .unwrap_or_else(|| panic!("no Location header:\n{}", self.describe()));
        location_path(&loc)
    }
    pub fn describe(&self) -> String {
        let mut s = format!("{} {} -> {}\n", self.method, self.url, self.status);
        for (n, v) in &self.headers {
            s.push_str(&format!(
                "  {}: {}\n",
                n,
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
        let body = self.text();
        if body.len() > 2000 {
            let cut: String = body.chars().take(2000).collect();
            s.push_str(&format!("  body ({} bytes): {cut}…\n", self.body.len()));
        } else if !body.is_empty() {
            s.push_str(&format!("  body: {body}\n"));
        }
        s
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

pub fn location_path(loc: &str) -> String {
    let t = target();
    let mut path = loc.to_string();
    for scheme in ["http://", "https://"] {
        if let Some(rest) = loc.strip_prefix(scheme) {
            path = rest
                .find('/')
                .map(|i| rest[i..].to_string())
                .unwrap_or_else(|| "/".into());
        }
    }
    if !t.prefix.is_empty() {
        if let Some(rest) = path.strip_prefix(&t.prefix) {
            if rest.starts_with('/') {
                path = rest.to_string();
            }
        }
    }
    path
}

// ---------------------------------------------------------------------------------------------
// Assertions

#[track_caller]
pub fn assert_status(resp: &Resp, status: u16) {
    assert_eq!(
        resp.status,
        status,
        "expected status {status}, got:\n{}",
        resp.describe()
    );
}

#[track_caller]
pub fn assert_header(resp: &Resp, name: &str, expected: &str) {
    assert_eq!(
        resp.header(name).as_deref(),
        Some(expected),
        "header {name}: expected {expected:?}, got:\n{}",
        resp.describe()
    );
}

/// Checks the status and, unless it answers a HEAD, the OCI error body: `Content-Type:
/// application/json` and `{"errors":[{"code":CODE,"message":…},…]}`. Returns the first error
/// object whose code is CODE (or Null for HEAD).
#[track_caller]
pub fn assert_oci_error(resp: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(
        resp.status,
        status,
        "expected {status} {code}, got:\n{}",
        resp.describe()
    );
    if resp.method == Method::HEAD {
        return Value::Null;
    }
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error response without Content-Type: application/json (expected {status} {code}):\n{}",
        resp.describe()
    );
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}) (expected {status} {code}):\n{}",
            resp.describe()
        )
    });
    let errors = v["errors"].as_array().unwrap_or_else(|| {
        panic!(
            "error body has no `errors` array (expected {status} {code}):\n{}",
            resp.describe()
        )
    });
    assert!(
        !errors.is_empty(),
        "empty `errors` (expected {code}):\n{}",
        resp.describe()
    );
    for e in errors {
        assert!(
            e["code"].is_string(),
            "error without a string `code`:\n{}",
            resp.describe()
        );
    }
    let found = errors
        .iter()
        .find(|e| e["code"] == code)
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "expected error code {code} (status {status}), got:\n{}",
                resp.describe()
            )
        });
    assert!(
        found.get("message").is_none_or(|m| m.is_string()),
        "`message` is not a string:\n{}",
        resp.describe()
    );
    found
}

#[track_caller]
pub fn assert_api_version(resp: &Resp) {
    assert_header(resp, "docker-distribution-api-version", "registry/2.0");
}

#[track_caller]
pub fn assert_below_500(resp: &Resp) {
    assert!(
        resp.status < 500,
        "a client request yielded a 5xx:\n{}",
        resp.describe()
    );
}

/// Follows the link of a `Link: <URL>; rel="next"` header, if any.
#[track_caller]
pub fn next_link(resp: &Resp) -> Option<String> {
    let link = resp.header("link")?;
    let start = link
        .find('<')
        .unwrap_or_else(|| panic!("malformed Link {link:?}"));
    let end = link
        .find('>')
        .unwrap_or_else(|| panic!("malformed Link {link:?}"));
    assert!(
        link[end..].contains("rel=\"next\""),
        "Link without rel=\"next\": {link:?}"
    );
    Some(location_path(&link[start + 1..end]))
}

/// Query parameters of a URL, percent-decoded.
pub fn query_params(url: &str) -> Vec<(String, String)> {
    let Some((_, q)) = url.split_once('?') else {
        return vec![];
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            let hexval = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Blobs

/// Setup helper: monolithic push (`POST ?digest=`), asserting 201. Returns the digest.
/// (A 202 — a registry without monolithic POST, e.g. Distribution 2.8 — is completed with a PUT,
/// so the suite can be sanity-checked against such registries; `uploads.rs` tests the 201 itself.)
pub async fn push_blob(repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
        .body(data.to_vec())
        .send()
        .await;
    if r.status == 202 {
        let r = put(with_query(&r.location(), &format!("digest={digest}")))
            .body(data.to_vec())
            .send()
            .await;
        assert_status(&r, 201);
        return digest;
    }
    assert_status(&r, 201);
    digest
}

/// `POST /v2/<repo>/blobs/uploads/`, asserting 202; returns the Location path.
pub async fn start_upload(repo: &str) -> String {
    let r = post(format!("/v2/{repo}/blobs/uploads/")).send().await;
    assert_status(&r, 202);
    r.location()
}

/// GET a blob as a pulling client does: a 307 (presigned storage) is followed once, with the
/// same headers, and the storage's answer is returned.
pub async fn get_blob(repo: &str, digest: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = get(format!("/v2/{repo}/blobs/{digest}"));
    for (n, v) in headers {
        req = req.header(n, v);
    }
    follow_redirect(req.send().await, headers).await
}

/// Follows a 307 once to its Location, an absolute `http://` URL (presigned storage) or a path
/// on the registry, sending `headers` again (a Range stays: the storage serves it). Any other
/// answer is returned as is. Panics on a 307 without a Location, or to `https://` (this suite
/// speaks plain HTTP, so it could not check what comes back).
pub async fn follow_redirect(resp: Resp, headers: &[(&str, &str)]) -> Resp {
    if resp.status != 307 {
        return resp;
    }
    let loc = resp
        .header("location")
        .unwrap_or_else(|| panic!("307 without Location:\n{}", resp.describe()));
    assert!(
        loc.starts_with("http://") || loc.starts_with('/'),
        "307 to {loc}: this suite follows plain http:// redirects only, so it cannot check \
         what that storage serves:\n{}",
        resp.describe()
    );
    let mut req = get(loc);
    for (n, v) in headers {
        req = req.header(n, v);
    }
    req.send().await
}

/// Asserts the blob is in `repo` with exactly `data` (HEAD, then GET).
pub async fn assert_blob(repo: &str, digest: &str, data: &[u8]) {
    let h = head(format!("/v2/{repo}/blobs/{digest}")).send().await;
    assert_status(&h, 200);
    assert_header(&h, "content-length", &data.len().to_string());
    assert_header(&h, "docker-content-digest", digest);
    let g = get_blob(repo, digest, &[]).await;
    assert_status(&g, 200);
    assert!(
        g.body == data,
        "blob {digest} in {repo}: content differs ({} bytes vs {} expected)",
        g.body.len(),
        data.len()
    );
}

/// Asserts the blob is not in `repo` (HEAD 404, GET 404 BLOB_UNKNOWN).
pub async fn assert_no_blob(repo: &str, digest: &str) {
    let h = head(format!("/v2/{repo}/blobs/{digest}")).send().await;
    assert_status(&h, 404);
    let g = get(format!("/v2/{repo}/blobs/{digest}")).send().await;
    assert_oci_error(&g, 404, "BLOB_UNKNOWN");
}

// ---------------------------------------------------------------------------------------------
// Manifests

pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// A unique small config (its digest differs per call).
pub fn config_bytes() -> Vec<u8> {
    to_bytes(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [] },
        "config": { "Labels": { "nonce": hex(&random_bytes(8)) } }
    }))
}

pub fn image_manifest(config: Value, layers: Vec<Value>) -> Value {
    json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers })
}

pub fn docker_manifest(config: Value, layers: Vec<Value>) -> Value {
    json!({ "schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config, "layers": layers })
}

pub fn index_of(media_type: &str, children: &[(&str, &Pushed)]) -> Value {
    let manifests: Vec<Value> = children
        .iter()
        .enumerate()
        .map(|(i, (mt, p))| {
            let arch = ["amd64", "arm64", "s390x", "ppc64le"][i % 4];
            json!({
                "mediaType": mt, "digest": p.digest, "size": p.bytes.len(),
                "platform": { "architecture": arch, "os": "linux" }
            })
        })
        .collect();
    json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests })
}

#[derive(Clone, Debug)]
pub struct Pushed {
    pub digest: String,
    pub bytes: Vec<u8>,
}

pub async fn put_manifest(repo: &str, reference: &str, content_type: &str, bytes: &[u8]) -> Resp {
    put(format!("/v2/{repo}/manifests/{reference}"))
        .header("content-type", content_type)
        .body(bytes.to_vec())
        .send()
        .await
}

/// PUT asserting 201 and the digest headers.
pub async fn push_manifest(
    repo: &str,
    reference: &str,
    content_type: &str,
    bytes: &[u8],
) -> Pushed {
    let r = put_manifest(repo, reference, content_type, bytes).await;
    assert_status(&r, 201);
    let digest = sha256(bytes);
    assert_header(&r, "docker-content-digest", &digest);
    Pushed {
        digest,
        bytes: bytes.to_vec(),
    }
}

/// Pushes a config and one layer, then an OCI image manifest under `reference` (a tag, or
/// "" to push by digest).
pub async fn push_image(repo: &str, reference: &str) -> Pushed {
    let config = config_bytes();
    let layer = random_bytes(300);
    push_blob(repo, &config).await;
    push_blob(repo, &layer).await;
    let m = to_bytes(&image_manifest(
        descriptor(OCI_CONFIG, &config),
        vec![descriptor(OCI_LAYER, &layer)],
    ));
    let reference = if reference.is_empty() {
        sha256(&m)
    } else {
        reference.to_string()
    };
    push_manifest(repo, &reference, OCI_MANIFEST, &m).await
}

/// Same as push_image with the Docker schema2 types.
pub async fn push_docker_image(repo: &str, reference: &str) -> Pushed {
    let config = config_bytes();
    let layer = random_bytes(300);
    push_blob(repo, &config).await;
    push_blob(repo, &layer).await;
    let m = to_bytes(&docker_manifest(
        descriptor(DOCKER_CONFIG, &config),
        vec![descriptor(DOCKER_LAYER, &layer)],
    ));
    let reference = if reference.is_empty() {
        sha256(&m)
    } else {
        reference.to_string()
    };
    push_manifest(repo, &reference, DOCKER_MANIFEST, &m).await
}

// ---------------------------------------------------------------------------------------------
// Raw TCP, for requests hyper would not send (contradicting framing headers).

/// Writes `request` verbatim on a fresh connection, optionally half-closes, and reads what comes
/// back until EOF or `wait`. Returns the status (None when nothing parseable came back) and the
/// raw response text.
pub async fn raw_exchange(
    request: &[u8],
    half_close: bool,
    wait: Duration,
) -> (Option<u16>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = target();
    let mut s = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .expect("connect");
    s.write_all(request).await.expect("write");
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            // Stop once a full response with a Content-Length body is in.
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                if let Some(cl) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
                    if let Ok(n) = cl.trim().parse::<usize>() {
                        if buf.len() >= end + 4 + n {
                            break;
                        }
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    (status, text)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
