//! Upload sessions: what the relay is for. A client's upload (any number of PATCHes of any size,
//! then a PUT with the digest, or one monolithic POST) arrives at a local session; its bytes are
//! hashed as they flow and cut into pieces the upstream takes:
//! - parts of `--part-mib` PUT to presigned storage URLs, up to `--jobs` at once, where the
//!   upstream offers Berth's direct uploads (`Berth-Direct-Upload: parts`);
//! - else chunked PATCHes with Content-Range, one at a time (each within `OCI-Chunk-Min-Length`
//!   and `OCI-Chunk-Max-Length`), while the next chunk is read from the client.
//!
//! A piece's bytes are held only until the upstream took them, so memory per upload is bounded by
//! (jobs + 1) x part size whatever the layer's size. The upstream session is completed only after
//! every piece arrived and the digest the relay computed matches the client's: any failure
//! cancels it, so nothing half-sent ever becomes a blob upstream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::StatusCode;
use http_body::Body as _;
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinSet;

use super::passthrough::{client_stream, relay_response};
use super::{oci_error, upstream_failed, Relay, Response, MIB};
use crate::upstream::{fail, header, with_query, PartUrls, Registry};

/// A session nobody touched for this long is dropped (and cancelled upstream).
const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Limits on single calls to the upstream (a piece may be big and the link slow).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);
const PIECE_TIMEOUT: Duration = Duration::from_secs(600);
/// Tries per direct part (a PUT of a part is idempotent; a chunk PATCH is not retried).
const PART_TRIES: u32 = 3;

#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn insert(&self, session: Arc<Session>) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(session.id.clone(), session);
    }

    fn remove(&self, id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

struct Session {
    id: String,
    name: String,
    registry: Arc<Registry>,
    /// Bytes taken from the client (read without the lock, for status requests mid-PATCH).
    received: AtomicU64,
    last_used: Mutex<Instant>,
    upload: tokio::sync::Mutex<Upload>,
}

impl Session {
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

struct Upload {
    /// The upstream session (absolute URL); chunked uploads may move it with each PATCH.
    location: String,
    hasher: Sha256,
    /// Bytes received and not yet handed to the upstream: less than one piece.
    buf: BytesMut,
    /// The upstream offers direct parts, and asking for them has not failed.
    direct_offered: bool,
    /// Parts were asked for: the upstream session is in direct mode.
    direct: bool,
    /// The size of the pieces cut from the stream.
    piece: u64,
    chunk_max: Option<u64>,
    /// Bytes handed to the upstream (sent or in flight).
    sent: u64,
    next_part: u32,
    max_parts: Option<u32>,
    urls: HashMap<u32, String>,
    urls_expire: u64,
    /// Pieces on their way; a chunk's task returns the session's next location.
    inflight: JoinSet<Result<Option<String>, String>>,
    pieces: u32,
    /// Set once the session failed or finished: later requests on it get 404.
    closed: bool,
}

/// Whose fault a failed upload is: the client's body (400), or the upstream's (502).
enum Fault {
    Client(String),
    Upstream(String),
}

impl Fault {
    fn response(&self) -> Response {
        match self {
            Fault::Client(e) => oci_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", &format!("berth relay: {e}")),
            Fault::Upstream(e) => upstream_failed(e),
        }
    }
}

/// `POST /v2/<name>/blobs/uploads/`: a new local session over a new upstream one; with
/// `?digest=` the body is the whole blob; a cross-repository mount goes upstream as it is.
pub(super) async fn start(relay: Arc<Relay>, name: String, req: hyper::Request<Incoming>) -> Response {
    let query = query_pairs(req.uri());
    let registry = match relay.repo(&name).await {
        Ok(r) => r,
        Err(e) => return upstream_failed(&format!("logging in upstream: {e}")),
    };
    let mut url = registry.url("blobs/uploads/");
    if query.iter().any(|(k, _)| k == "mount") {
        // A failed mount opens a session (202): it becomes a local one like any other.
        let mount: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "mount" || k == "from")
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        url = with_query(&url, &mount.join("&"));
    }
    let resp = match registry.request(reqwest::Method::POST, &url).await {
        Ok(b) => b.timeout(CONTROL_TIMEOUT).send().await,
        Err(e) => return upstream_failed(&format!("logging in upstream: {e}")),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return upstream_failed(&crate::upstream::explain("starting the upload at", &e)),
    };
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        return relay_response(&relay, resp, false);
    }
    let Some(location) = header(&resp, "location") else {
        return upstream_failed("the upstream sent no upload Location");
    };
    let direct_offered = header(&resp, "berth-direct-upload").as_deref() == Some("parts");
    let chunk_min = header(&resp, "oci-chunk-min-length").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let chunk_max = header(&resp, "oci-chunk-max-length").and_then(|v| v.parse::<u64>().ok());
    let piece = if direct_offered {
        // S3's least part size; the upstream's own minimum is applied when parts are asked for.
        relay.part_size.max(5 * MIB)
    } else {
        chunk_size(relay.part_size, chunk_min, chunk_max)
    };
    let session = Arc::new(Session {
        id: new_id(),
        name: name.clone(),
        received: AtomicU64::new(0),
        last_used: Mutex::new(Instant::now()),
        upload: tokio::sync::Mutex::new(Upload {
            location: registry.absolute(&location),
            hasher: Sha256::new(),
            buf: BytesMut::new(),
            direct_offered,
            direct: false,
            piece,
            chunk_max,
            sent: 0,
            next_part: 1,
            max_parts: None,
            urls: HashMap::new(),
            urls_expire: 0,
            inflight: JoinSet::new(),
            pieces: 0,
            closed: false,
        }),
        registry,
    });
    relay.uploads.insert(session.clone());
    let digest = query.iter().find(|(k, _)| k == "digest").map(|(_, v)| v.clone());
    let body = req.into_body();
    // The work runs on its own task: a client that hangs up must not leave the session half
    // updated (hyper drops this future then).
    let task = tokio::spawn(async move {
        let mut up = session.upload.lock().await;
        match digest {
            Some(digest) => finish(&relay, &session, &mut up, body, &digest).await,
            None => match read_body(&relay, &session, &mut up, body).await {
                Ok(()) => accepted(&session, StatusCode::ACCEPTED),
                Err(fault) => {
                    cancel(&relay, &session, &mut up);
                    fault.response()
                }
            },
        }
    });
    task.await.unwrap_or_else(|e| upstream_failed(&format!("upload task failed: {e}")))
}

/// Requests on `/v2/<name>/blobs/uploads/<id>`.
pub(super) async fn session(relay: Arc<Relay>, name: String, id: String, req: hyper::Request<Incoming>) -> Response {
    let Some(session) = relay.uploads.get(&id).filter(|s| s.name == name) else {
        return oci_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", "no such upload session on this relay");
    };
    session.touch();
    let method = req.method().clone();
    if method == http::Method::GET || method == http::Method::HEAD {
        return accepted(&session, StatusCode::NO_CONTENT);
    }
    let digest = query_pairs(req.uri()).into_iter().find(|(k, _)| k == "digest").map(|(_, v)| v);
    let range_start = req
        .headers()
        .get(http::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().trim_start_matches("bytes").trim().split('-').next()?.trim().parse::<u64>().ok());
    let body = req.into_body();
    let task = tokio::spawn(async move {
        let mut up = session.upload.lock().await;
        if up.closed {
            return oci_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", "the upload session ended");
        }
        let response = match method {
            http::Method::PATCH => {
                let received = session.received.load(Ordering::SeqCst);
                if range_start.is_some_and(|start| start != received) {
                    let mut r = oci_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID", "chunk out of order");
                    set_progress(&mut r, &session);
                    return r;
                }
                match read_body(&relay, &session, &mut up, body).await {
                    Ok(()) => accepted(&session, StatusCode::ACCEPTED),
                    Err(fault) => {
                        cancel(&relay, &session, &mut up);
                        fault.response()
                    }
                }
            }
            http::Method::PUT => match digest {
                Some(digest) => finish(&relay, &session, &mut up, body, &digest).await,
                None => oci_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "the PUT that completes an upload needs ?digest="),
            },
            http::Method::DELETE => {
                cancel(&relay, &session, &mut up);
                let mut r = http::Response::new(axum::body::Body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            _ => oci_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "not a method for upload sessions"),
        };
        session.touch();
        response
    });
    task.await.unwrap_or_else(|e| upstream_failed(&format!("upload task failed: {e}")))
}

/// Takes a request body into the session.
async fn read_body(relay: &Relay, session: &Session, up: &mut Upload, body: Incoming) -> Result<(), Fault> {
    if body.is_end_stream() {
        return Ok(());
    }
    let mut stream = std::pin::pin!(client_stream(body, relay.idle));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Fault::Client(e.to_string()))?;
        up.hasher.update(&chunk);
        session.received.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        let mut chunk = chunk;
        while !chunk.is_empty() {
            // Each piece gets one buffer of exactly its size, filled up to the brim: no
            // reallocation as it grows, and no shared tail keeping a sent piece's memory alive.
            if up.buf.capacity() == 0 {
                up.buf = BytesMut::with_capacity(up.piece as usize);
            }
            let room = (up.piece as usize).saturating_sub(up.buf.len()).max(1);
            let take = chunk.split_to(room.min(chunk.len()));
            up.buf.extend_from_slice(&take);
            while up.buf.len() as u64 >= up.piece {
                if up.direct_offered && !up.direct {
                    // Learns the upstream's part size limits, which may change the piece size.
                    start_direct(relay, session, up).await?;
                    continue;
                }
                let piece = if up.buf.len() as u64 == up.piece {
                    std::mem::take(&mut up.buf).freeze()
                } else {
                    up.buf.split_to(up.piece as usize).freeze()
                };
                send_piece(relay, session, up, piece).await?;
            }
        }
    }
    Ok(())
}

/// The completing PUT (or a monolithic POST): the last bytes, the digest check, every piece
/// delivered, then the upstream's completion.
async fn finish(relay: &Relay, session: &Session, up: &mut Upload, body: Incoming, digest: &str) -> Response {
    if let Err(fault) = read_body(relay, session, up, body).await {
        cancel(relay, session, up);
        return fault.response();
    }
    let computed = format!("sha256:{}", hex::encode(up.hasher.clone().finalize()));
    // Other algorithms are checked by the upstream at completion.
    if digest.starts_with("sha256:") && computed != digest {
        cancel(relay, session, up);
        return oci_error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            &format!("the bytes received hash to {computed}, not {digest}"),
        );
    }
    // A small blob nothing was sent of yet: one PUT with the bytes, if the upstream takes a body
    // that big (it says so in OCI-Chunk-Max-Length; without it, only where there is no
    // direct-upload extension, which is how a capped Berth announces itself).
    let len = up.buf.len() as u64;
    let monolithic = up.sent == 0 && !up.direct && up.chunk_max.map_or(!up.direct_offered, |max| len <= max);
    let final_body = if monolithic {
        up.buf.split().freeze()
    } else {
        if let Err(fault) = flush_all(relay, session, up).await {
            cancel(relay, session, up);
            return fault.response();
        }
        Bytes::new()
    };
    let url = with_query(&up.location, &format!("digest={}", encode(digest)));
    let resp = match session.registry.request(reqwest::Method::PUT, &url).await {
        Ok(b) => b.header("content-type", "application/octet-stream").body(final_body).send().await,
        Err(e) => {
            cancel(relay, session, up);
            return upstream_failed(&format!("logging in upstream: {e}"));
        }
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            cancel(relay, session, up);
            return upstream_failed(&crate::upstream::explain("completing the upload at", &e));
        }
    };
    if resp.status() != reqwest::StatusCode::CREATED {
        cancel(relay, session, up);
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let text = fail("the upstream refused the completion", resp).await;
        let status = if status.is_success() { StatusCode::BAD_GATEWAY } else { status };
        return oci_error(status, "BLOB_UPLOAD_INVALID", &format!("berth relay: {text}"));
    }
    up.closed = true;
    relay.uploads.remove(&session.id);
    tracing::info!(
        repository = %session.name, %digest, bytes = session.received.load(Ordering::SeqCst),
        pieces = up.pieces, direct = up.direct, "blob relayed"
    );
    let mut r = http::Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::CREATED;
    let headers = r.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&format!("/v2/{}/blobs/{digest}", session.name)) {
        headers.insert(http::header::LOCATION, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(digest) {
        headers.insert("docker-content-digest", v);
    }
    r
}

/// Sends what is left in the buffer and waits for every piece in flight.
async fn flush_all(relay: &Relay, session: &Session, up: &mut Upload) -> Result<(), Fault> {
    while !up.buf.is_empty() {
        if up.direct_offered && !up.direct {
            start_direct(relay, session, up).await?;
            continue;
        }
        let n = up.piece.min(up.buf.len() as u64) as usize;
        let piece = up.buf.split_to(n).freeze();
        send_piece(relay, session, up, piece).await?;
    }
    while !up.inflight.is_empty() {
        settle_one(up).await?;
    }
    Ok(())
}

/// Hands one piece to the upstream once there is room: a part on its own task (up to --jobs),
/// or the next chunk after the previous one was taken (chunks must arrive in order).
async fn send_piece(relay: &Relay, session: &Session, up: &mut Upload, piece: Bytes) -> Result<(), Fault> {
    let limit = if up.direct { relay.jobs } else { 1 };
    while up.inflight.len() >= limit {
        settle_one(up).await?;
    }
    let len = piece.len() as u64;
    if up.direct {
        let number = up.next_part;
        if up.max_parts.is_some_and(|max| number > max) {
            return Err(Fault::Upstream(format!(
                "the blob needs more than {} parts of {} MiB: run the relay with a bigger --part-mib",
                number - 1,
                up.piece / MIB
            )));
        }
        let url = match take_url(up, number) {
            Some(url) => url,
            None => {
                fetch_urls(relay, session, up, number).await?;
                take_url(up, number).ok_or_else(|| Fault::Upstream(format!("the upstream gave no URL for part {number}")))?
            }
        };
        up.next_part += 1;
        up.inflight.spawn(put_part(relay.http.clone(), number, url, piece));
    } else {
        let (registry, location, start) = (session.registry.clone(), up.location.clone(), up.sent);
        up.inflight.spawn(patch_chunk(registry, location, start, piece));
    }
    up.sent += len;
    up.pieces += 1;
    Ok(())
}

/// Waits for one piece in flight; a chunk's answer moves the session's location.
async fn settle_one(up: &mut Upload) -> Result<(), Fault> {
    match up.inflight.join_next().await {
        Some(Ok(Ok(Some(location)))) => up.location = location,
        Some(Ok(Ok(None))) | None => {}
        Some(Ok(Err(e))) => return Err(Fault::Upstream(e)),
        Some(Err(e)) => return Err(Fault::Upstream(format!("a piece's task failed: {e}"))),
    }
    Ok(())
}

/// The first request for part URLs, which switches the upstream session to direct mode. An
/// upstream that turns it down (404 UNSUPPORTED, 400) gets chunks instead.
async fn start_direct(relay: &Relay, session: &Session, up: &mut Upload) -> Result<(), Fault> {
    match fetch_urls(relay, session, up, 1).await {
        Ok(()) => {
            up.direct = true;
            Ok(())
        }
        Err(Fault::Client(e)) => {
            tracing::warn!("the upstream turned down direct parts ({e}); sending chunks instead");
            up.direct_offered = false;
            up.piece = chunk_size(relay.part_size, 0, up.chunk_max);
            Ok(())
        }
        Err(fault) => Err(fault),
    }
}

/// Asks for presigned URLs from part `first` on (a few batches ahead, so they do not expire
/// while waiting). A 4xx comes back as a `Fault::Client` so `start_direct` can fall back.
async fn fetch_urls(relay: &Relay, session: &Session, up: &mut Upload, first: u32) -> Result<(), Fault> {
    let count = (relay.jobs * 2).clamp(8, 100);
    let url = format!("{}/parts?first={first}&count={count}", up.location);
    let req = session.registry.request(reqwest::Method::POST, &url).await.map_err(Fault::Upstream)?;
    let resp = req
        .timeout(CONTROL_TIMEOUT)
        .send()
        .await
        .map_err(|e| Fault::Upstream(crate::upstream::explain("asking for part URLs at", &e)))?;
    if resp.status().is_client_error() && !up.direct {
        return Err(Fault::Client(fail("asking for part URLs", resp).await));
    }
    if !resp.status().is_success() {
        return Err(Fault::Upstream(fail("asking for part URLs", resp).await));
    }
    let urls: PartUrls = resp.json().await.map_err(|e| Fault::Upstream(format!("part URLs: {e}")))?;
    if let Some(min) = urls.min_part_size {
        up.piece = up.piece.max(min);
    }
    if let Some(max) = urls.max_part_size {
        up.piece = up.piece.min(max.max(1));
    }
    up.max_parts = urls.max_parts.or(up.max_parts);
    up.urls_expire = urls.expires.unwrap_or(u64::MAX);
    up.urls.clear();
    for part in urls.parts {
        up.urls.insert(part.number, part.url);
    }
    Ok(())
}

/// A cached URL for part `number`, unless the batch is about to expire.
fn take_url(up: &mut Upload, number: u32) -> Option<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now + 60 >= up.urls_expire {
        up.urls.clear();
        return None;
    }
    up.urls.remove(&number)
}

async fn put_part(http: reqwest::Client, number: u32, url: String, bytes: Bytes) -> Result<Option<String>, String> {
    let mut last = String::new();
    for attempt in 0..PART_TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
        // Storage URLs carry their own signature: no registry token on them.
        match http.put(&url).timeout(PIECE_TIMEOUT).header("content-length", bytes.len()).body(sliced(bytes.clone())).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(None),
            // A refused signature or an expired URL will not get better.
            Ok(resp) if resp.status().is_client_error() => return Err(fail(&format!("part {number}"), resp).await),
            Ok(resp) => last = fail(&format!("part {number}"), resp).await,
            Err(e) => last = crate::upstream::explain(&format!("part {number}"), &e),
        }
    }
    Err(last)
}

async fn patch_chunk(registry: Arc<Registry>, location: String, start: u64, bytes: Bytes) -> Result<Option<String>, String> {
    let end = start + bytes.len() as u64 - 1;
    let resp = registry
        .request(reqwest::Method::PATCH, &location)
        .await?
        .timeout(PIECE_TIMEOUT)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .header("content-length", bytes.len())
        .body(sliced(bytes))
        .send()
        .await
        .map_err(|e| crate::upstream::explain(&format!("PATCH at {start}"), &e))?;
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        return Err(fail(&format!("PATCH at {start}"), resp).await);
    }
    Ok(header(&resp, "location").map(|l| registry.absolute(&l)))
}

/// A piece as a body of small slices of it (no copies) with its length stated by the caller.
/// Given as one buffer, the HTTP client copies a whole piece into its write buffer, which then
/// stays that big on the pooled connection: twice the memory per piece in flight.
fn sliced(bytes: Bytes) -> reqwest::Body {
    const SLICE: usize = 256 * 1024;
    let slices = (0..bytes.len().div_ceil(SLICE))
        .map(move |i| Ok::<_, std::io::Error>(bytes.slice(i * SLICE..((i + 1) * SLICE).min(bytes.len()))));
    reqwest::Body::wrap_stream(futures_util::stream::iter(slices))
}

/// Ends a session that failed or was deleted: pieces in flight stop, the upstream session is
/// deleted (best effort: otherwise it expires there), the local one forgotten.
fn cancel(relay: &Relay, session: &Session, up: &mut Upload) {
    up.closed = true;
    up.inflight.abort_all();
    up.buf = BytesMut::new();
    relay.uploads.remove(&session.id);
    let (registry, location) = (session.registry.clone(), up.location.clone());
    tokio::spawn(async move {
        if let Ok(req) = registry.request(reqwest::Method::DELETE, &location).await {
            let _ = req.timeout(Duration::from_secs(30)).send().await;
        }
    });
}

/// Forgets sessions left idle (a client that went away between requests), every minute.
pub(super) async fn sweep(relay: Arc<Relay>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let stale: Vec<Arc<Session>> = {
            let map = relay.uploads.map.lock().unwrap_or_else(|e| e.into_inner());
            map.values()
                .filter(|s| s.last_used.lock().unwrap_or_else(|e| e.into_inner()).elapsed() > SESSION_IDLE)
                .cloned()
                .collect()
        };
        for session in stale {
            // A session in use (a slow PATCH) is not stale.
            if let Ok(mut up) = session.upload.try_lock() {
                cancel(&relay, &session, &mut up);
            }
        }
    }
}

/// 202 (PATCH, POST) or 204 (status) with the session's Location and progress.
fn accepted(session: &Session, status: StatusCode) -> Response {
    let mut r = http::Response::new(axum::body::Body::empty());
    *r.status_mut() = status;
    set_progress(&mut r, session);
    r
}

fn set_progress(r: &mut Response, session: &Session) {
    let received = session.received.load(Ordering::SeqCst);
    let headers = r.headers_mut();
    let values = [
        ("location", format!("/v2/{}/blobs/uploads/{}", session.name, session.id)),
        ("range", format!("0-{}", received.saturating_sub(1))),
        ("docker-upload-uuid", session.id.clone()),
    ];
    for (name, value) in values {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// The chunk size for a chunked upstream: the wanted size within its advertised limits.
fn chunk_size(wanted: u64, min: u64, max: Option<u64>) -> u64 {
    let mut size = wanted.max(min);
    if let Some(max) = max {
        size = size.min(max);
    }
    size.max(1)
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Ids need only be unique within this process; the clock does that too.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes.copy_from_slice(&nanos.to_le_bytes());
    }
    hex::encode(bytes)
}

fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    let query = uri.query().unwrap_or_default();
    reqwest::Url::parse(&format!("http://relay/?{query}"))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// Percent-encodes a query value (digests hold `:`, repository names `/`).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(16 * MIB, 0, None), 16 * MIB);
        assert_eq!(chunk_size(16 * MIB, 0, Some(4_500_000)), 4_500_000);
        assert_eq!(chunk_size(MIB, 5 * MIB, None), 5 * MIB);
    }

    /// Storage (S3 presigned PUTs) needs a Content-Length, not chunked transfer encoding: the
    /// sliced body goes with the length stated.
    #[tokio::test]
    async fn sliced_pieces_go_with_their_length() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") || got.len() < 600_000 {
                let n = tcp.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            got
        });
        let bytes = Bytes::from(vec![7u8; 600_000]);
        let result = put_part(reqwest::Client::new(), 1, format!("http://{addr}/part"), bytes).await;
        assert!(result.is_ok(), "{result:?}");
        let got = server.await.unwrap();
        let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&got[..split]).to_ascii_lowercase();
        assert!(head.contains("content-length: 600000"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(got.len() - split - 4, 600_000);
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("sha256:ab"), "sha256%3Aab");
        assert_eq!(encode("a/b"), "a%2Fb");
    }
}
