//! The pull-through cache against a fake upstream: a real core `Registry` in memory behind an
//! [`Upstream`] that can demand tokens or Basic auth, log what it was asked, and misbehave
//! (down, hung, 5xx, 429, wrong digest, truncated blob, redirect loop).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

use super::*;
use crate::memory::{MemoryBlobStore, MemoryMetaStore};
use crate::policy::{Policies, PolicyConfig};
use crate::storage::ByteStream;
use crate::{Body, Config};

type Reg = Registry<MemoryBlobStore, MemoryMetaStore>;
const BASE: &str = "http://up.test";
const CDN: &str = "http://cdn.test";
/// The chunks a gated upstream sends its first half in.
const GATED_CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Down,
    Status(u16),
    WrongBytes,
    Truncate,
    RedirectLoop,
    /// Blobs redirect to another origin (a CDN or presigned storage URL).
    RedirectToCdn,
    /// Blobs come with one byte changed (same length: only the digest can tell).
    CorruptBlob,
    /// Blobs send their first half, then wait for `Fake::gate`.
    Gated,
}

#[derive(Clone, Copy, PartialEq)]
enum Auth {
    Anonymous,
    Token,
    Basic,
}

struct Fake {
    reg: Reg,
    auth: Auth,
    fault: Mutex<Fault>,
    log: Mutex<Vec<String>>,
    tokens_issued: AtomicUsize,
    slow: std::sync::atomic::AtomicBool,
    gate: Arc<tokio::sync::Notify>,
    /// What the runtime's timer waits, in milliseconds, whatever it is asked (0: never ends).
    timer_ms: std::sync::atomic::AtomicU64,
}

struct FakeHttp(Arc<Fake>);

fn stream_of(body: Body) -> ByteStream {
    match body {
        Body::Empty => crate::body::empty_stream(),
        Body::Full(b) => Box::pin(futures_util::stream::iter([Ok(b)])),
        Body::Stream(s) => s,
    }
}

async fn collect(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut s).await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn answer(status: u16, headers: HeaderMap, body: Vec<u8>) -> UpstreamResponse {
    UpstreamResponse {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body: Box::pin(futures_util::stream::iter([Ok(Bytes::from(body))])),
    }
}

#[async_trait::async_trait]
impl Upstream for FakeHttp {
    async fn sleep(&self, _secs: u64) {
        match self.0.timer_ms.load(Ordering::SeqCst) {
            0 => std::future::pending().await,
            ms => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
        }
    }

    async fn send(&self, req: UpstreamRequest) -> std::result::Result<UpstreamResponse, String> {
        let fake = &self.0;
        let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        if let Some(path) = req.url.strip_prefix(CDN) {
            // The CDN serves whoever has the URL; it must never see the registry's credentials.
            fake.log.lock().unwrap().push(format!("{} cdn{path} auth={}", req.method, !auth.is_empty()));
            let response = fake.reg.handle(http::Request::get(path).body(crate::body::empty_stream()).unwrap(), ctx(1)).await;
            let (parts, body) = response.into_parts();
            return Ok(UpstreamResponse { status: parts.status, headers: parts.headers, body: stream_of(body) });
        }
        let path = req.url.strip_prefix(BASE).ok_or("unknown host")?.to_owned();
        fake.log.lock().unwrap().push(format!("{} {path}", req.method));
        let fault = *fake.fault.lock().unwrap();
        if fake.slow.load(Ordering::SeqCst) && path.contains("/blobs/") {
            // Blob answers take a while: other requests run meanwhile.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }
        if fault == Fault::Down {
            return Err("operation timed out".into());
        }
        if path.starts_with("/token?") {
            assert!(path.contains("scope=repository%3Alib%2Fapp%3Apull"), "{path}");
            fake.tokens_issued.fetch_add(1, Ordering::SeqCst);
            return Ok(answer(200, HeaderMap::new(), br#"{"token":"t1","expires_in":300}"#.to_vec()));
        }
        match fault {
            Fault::Status(s) => return Ok(answer(s, HeaderMap::new(), b"{}".to_vec())),
            Fault::RedirectLoop => {
                let mut h = HeaderMap::new();
                h.insert("location", HeaderValue::from_str(&path).unwrap());
                return Ok(answer(307, h, Vec::new()));
            }
            _ => {}
        }
        if fault == Fault::RedirectToCdn && path.contains("/blobs/") && !auth.is_empty() {
            let mut h = HeaderMap::new();
            h.insert("location", HeaderValue::from_str(&format!("{CDN}{path}")).unwrap());
            return Ok(answer(307, h, Vec::new()));
        }
        let (ok, challenge) = match fake.auth {
            Auth::Anonymous => (true, ""),
            Auth::Token => (auth == "Bearer t1", r#"Bearer realm="http://up.test/token",service="up""#),
            // user:pass
            Auth::Basic => (auth == "Basic dXNlcjpwYXNz", r#"Basic realm="up""#),
        };
        if !ok {
            let mut h = HeaderMap::new();
            h.insert("www-authenticate", HeaderValue::from_static(challenge));
            return Ok(answer(401, h, Vec::new()));
        }
        let mut builder = http::Request::builder().method(req.method.clone()).uri(&path);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let response = fake.reg.handle(builder.body(crate::body::empty_stream()).unwrap(), ctx(1)).await;
        let (parts, body) = response.into_parts();
        let mut body = stream_of(body);
        if fault == Fault::WrongBytes && path.contains("/manifests/") {
            let mut bytes = collect(body).await;
            bytes.extend_from_slice(b" ");
            body = Box::pin(futures_util::stream::iter([Ok(Bytes::from(bytes))]));
        }
        if fault == Fault::Truncate && path.contains("/blobs/") {
            let bytes = collect(body).await;
            let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
            let broken: Vec<std::result::Result<Bytes, crate::StorageError>> =
                vec![Ok(half), Err(crate::StorageError::new("connection reset"))];
            body = Box::pin(futures_util::stream::iter(broken));
        }
        if fault == Fault::CorruptBlob && path.contains("/blobs/") {
            let mut bytes = collect(body).await;
            bytes[0] ^= 1;
            body = Box::pin(futures_util::stream::iter([Ok(Bytes::from(bytes))]));
        }
        if fault == Fault::Gated && path.contains("/blobs/") {
            let mut first = collect(body).await;
            let second = first.split_off(first.len() / 2);
            let gate = fake.gate.clone();
            let rest = futures_util::stream::once(async move {
                gate.notified().await;
                Ok(Bytes::from(second))
            });
            let first: Vec<_> = first.chunks(GATED_CHUNK).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            body = Box::pin(futures_util::StreamExt::chain(futures_util::stream::iter(first), rest));
        }
        Ok(UpstreamResponse { status: parts.status, headers: parts.headers, body })
    }
}

fn ctx(now: u64) -> RequestContext {
    RequestContext { now, random: [now as u8; 16] }
}

fn memory() -> Reg {
    Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(b"secret".to_vec()))
}

fn rule(auth: Auth) -> MirrorRule {
    let basic = auth == Auth::Basic;
    MirrorRule {
        prefix: "hub".into(),
        upstream: BASE.into(),
        username: basic.then(|| "user".into()),
        password: basic.then(|| Secret("pass".into())),
        tag_ttl_secs: 100,
    }
}

/// The upstream (`lib/app` there) and a mirror serving it as `hub/lib/app`.
fn setup(auth: Auth, mirror_rule: MirrorRule) -> (Arc<Fake>, Reg) {
    let fake = Arc::new(Fake {
        reg: memory(),
        auth,
        fault: Mutex::new(Fault::None),
        log: Mutex::new(Vec::new()),
        tokens_issued: AtomicUsize::new(0),
        slow: Default::default(),
        gate: Default::default(),
        timer_ms: Default::default(),
    });
    let policies = Policies::new(&PolicyConfig { mirrors: vec![mirror_rule], ..Default::default() }).unwrap();
    let mirror = memory().with_policies(policies).with_upstream(UpstreamClient::new(Arc::new(FakeHttp(fake.clone()))));
    (fake, mirror)
}

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(reg: &Reg, method: &str, uri: &str, body: &[u8], now: u64) -> Got {
    let mut req = http::Request::builder().method(method).uri(uri);
    if uri.contains("/manifests/") {
        req = req.header("content-type", OCI_MANIFEST);
    }
    let stream: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::copy_from_slice(body))]));
    let (parts, body) = reg.handle(req.body(stream).unwrap(), ctx(now)).await.into_parts();
    Got { status: parts.status, headers: parts.headers, body: collect(stream_of(body)).await }
}

/// A GET read to its end: the status, the bytes before the end, and how the body ended.
async fn get_to_the_end(reg: &Reg, uri: &str) -> (StatusCode, Vec<u8>, std::result::Result<(), String>) {
    let req = http::Request::get(uri).body(crate::body::empty_stream()).unwrap();
    let (parts, body) = reg.handle(req, ctx(10)).await.into_parts();
    let mut stream = stream_of(body);
    let mut got = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(bytes) => got.extend_from_slice(&bytes),
            Err(e) => return (parts.status, got, Err(e.message)),
        }
    }
    (parts.status, got, Ok(()))
}

/// Pushes an image to the upstream as `lib/app:<tag>`: a config and a layer of `layer_len`
/// bytes (over 1 MiB takes the streamed upload path). Returns (manifest digest, blob digests).
async fn push_upstream(up: &Reg, tag: &str, seed: u8, layer_len: usize) -> (String, Vec<(String, Vec<u8>)>) {
    let config = format!(r#"{{"architecture":"amd64","seed":{seed}}}"#).into_bytes();
    let layer: Vec<u8> = (0..layer_len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    let mut blobs = Vec::new();
    for content in [config.clone(), layer.clone()] {
        let digest = hash::sha256_of(&content);
        let r = send(up, "POST", &format!("/v2/lib/app/blobs/uploads/?digest={digest}"), &content, 1).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        blobs.push((digest, content));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0].0, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blobs[1].0, "size": layer.len() }],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let r = send(up, "PUT", &format!("/v2/lib/app/manifests/{tag}"), &bytes, 1).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    (hash::sha256_of(&bytes), blobs)
}

fn log(fake: &Fake) -> Vec<String> {
    std::mem::take(&mut *fake.log.lock().unwrap())
}

#[tokio::test]
async fn first_pull_fetches_verifies_and_stores_then_serves_from_the_cache() {
    let (fake, mirror) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let (digest, blobs) = push_upstream(&fake.reg, "v1", 1, 3 * 1024 * 1024).await;
    let m = send(&mirror, "GET", "/v2/hub/lib/app/manifests/v1", b"", 10).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text());
    assert_eq!(m.header("docker-content-digest"), digest);
    assert_eq!(hash::sha256_of(&m.body), digest);
    for (d, content) in &blobs {
        let b = send(&mirror, "GET", &format!("/v2/hub/lib/app/blobs/{d}"), b"", 10).await;
        assert_eq!(b.status, StatusCode::OK, "{}", b.text());
        assert!(b.body == *content);
    }
    // Ordinary content: listed, and in the store under its digest.
    let tags = send(&mirror, "GET", "/v2/hub/lib/app/tags/list", b"", 10).await;
    assert!(tags.text().contains("\"v1\""), "{}", tags.text());
    assert!(mirror.blobs.stat(&parse_digest(&blobs[1].0).unwrap()).await.unwrap() == Some(blobs[1].1.len() as u64));
    assert_eq!(log(&fake).len(), 3, "one GET each of the manifest and two blobs");

    // The upstream goes away: everything cached is still served, by tag even past the TTL.
    *fake.fault.lock().unwrap() = Fault::Down;
    for now in [20, 500] {
        let m = send(&mirror, "GET", "/v2/hub/lib/app/manifests/v1", b"", now).await;
        assert_eq!((m.status, m.header("docker-content-digest")), (StatusCode::OK, digest.as_str()));
        let b = send(&mirror, "GET", &format!("/v2/hub/lib/app/blobs/{}", blobs[1].0), b"", now).await;
        assert_eq!(b.status, StatusCode::OK);
        let m = send(&mirror, "HEAD", &format!("/v2/hub/lib/app/manifests/{digest}"), b"", now).await;
        assert_eq!(m.status, StatusCode::OK);
    }
    assert_eq!(log(&fake), vec!["HEAD /v2/lib/app/manifests/v1"], "within the TTL nothing; after it one HEAD, then not again for a TTL");

    // Not cached and the upstream down: a clear 502, not a 404 and not a 500.
    let m = send(&mirror, "GET", "/v2/hub/lib/app/manifests/other", b"", 600).await;
    assert_eq!(m.status, StatusCode::BAD_GATEWAY);
    assert!(m.text().contains("timed out"), "{}", m.text());
}

#[tokio::test]
async fn what_the_upstream_lacks_is_unknown_and_other_repositories_are_not_mirrored() {
    let (fake, mirror) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let m = send(&mirror, "GET", "/v2/hub/lib/app/manifests/nope", b"", 10).await;
    assert_eq!(m.status, StatusCode::NOT_FOUND);
    assert!(m.text().contains("MANIFEST_UNKNOWN"));
    let d = hash::sha256_of(b"x");
    assert_eq!(send(&mirror, "GET", &format!("/v2/hub/lib/app/blobs/{d}"), b"", 10).await.status, StatusCode::NOT_FOUND);
    log(&fake);
    assert_eq!(send(&mirror, "GET", "/v2/local/app/manifests/v1", b"", 10).await.status, StatusCode::NOT_FOUND);
    assert!(log(&fake).is_empty(), "a repository outside the mirror never asks the upstream");
}

#[tokio::test]
async fn a_moved_tag_is_seen_after_the_ttl_and_an_unchanged_one_costs_a_head() {
    let (fake, mirror) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let (first, _) = push_upstream(&fake.reg, "latest", 1, 10).await;
    let get = |now| send(&mirror, "GET", "/v2/hub/lib/app/manifests/latest", b"", now);
    assert_eq!(get(10).await.header("docker-content-digest"), first);
    log(&fake);
    assert_eq!(get(200).await.header("docker-content-digest"), first);
    assert_eq!(log(&fake), vec!["HEAD /v2/lib/app/manifests/latest"]);

    let (second, _) = push_upstream(&fake.reg, "latest", 2, 10).await;
    assert_eq!(get(250).await.header("docker-content-digest"), first, "within the TTL the cache answers");
    assert!(log(&fake).is_empty());
    assert_eq!(get(400).await.header("docker-content-digest"), second);
    assert_eq!(log(&fake), vec!["HEAD /v2/lib/app/manifests/latest", "GET /v2/lib/app/manifests/latest"]);
    // The first manifest stays, by digest.
    let old = send(&mirror, "GET", &format!("/v2/hub/lib/app/manifests/{first}"), b"", 400).await;
    assert_eq!(old.status, StatusCode::OK);
}

#[tokio::test]
async fn the_token_dance_runs_once_and_again_when_the_token_expires() {
    let (fake, mirror) = setup(Auth::Token, rule(Auth::Token));
    let (digest, blobs) = push_upstream(&fake.reg, "v1", 1, 10).await;
    let m = send(&mirror, "GET", "/v2/hub/lib/app/manifests/v1", b"", 10).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text());
    for (d, _) in &blobs {
        assert_eq!(send(&mirror, "GET", &format!("/v2/hub/lib/app/blobs/{d}"), b"", 10).await.status, StatusCode::OK);
    }
    assert_eq!(fake.tokens_issued.load(Ordering::SeqCst), 1);
    // expires_in 300: at 10 + 300 it is not used any more.
    let m = send(&mirror, "HEAD", "/v2/hub/lib/app/manifests/v1", b"", 400).await;
    assert_eq!(m.header("docker-content-digest"), digest);
    assert_eq!(fake.tokens_issued.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn basic_auth_with_credentials_and_a_clear_error_without() {
    let (fake, mirror) = setup(Auth::Basic, rule(Auth::Basic));
    push_upstream(&fake.reg, "v1", 1, 10).await;
    let m = send(&mirror, "GET", "/v2/hub/lib/app/manifests/v1", b"", 10).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text());

    let (fake, mirror) = setup(Auth::Basic, rule(Auth::Anonymous));
    push_upstream(&fake.reg, "v1", 1, 10).await;
    let m = send(&mirror, "GET", "/v2/hub/lib/app/manifests/v1", b"", 10).await;
    assert_eq!(m.status, StatusCode::BAD_GATEWAY);
    assert!(m.text().contains("asks for a username and password"), "{}", m.text());
}

/// Nothing of a failed fetch is visible: no tag, no manifest, no blob link, no content.
async fn assert_nothing_stored(mirror: &Reg) {
    let tags = send(mirror, "GET", "/v2/hub/lib/app/tags/list", b"", 10).await;
    assert!(!tags.text().contains("v1"), "{}", tags.text());
    assert!(mirror.blobs.list_blobs(None, 10).await.unwrap().is_empty());
    assert!(mirror.meta.list("manifests/", None, 10).await.unwrap().is_empty());
    assert!(mirror.meta.list("blobs/", None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_upstreams_get_a_clear_error_and_nothing_is_stored() {
    let (fake, mirror) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let (digest, blobs) = push_upstream(&fake.reg, "v1", 1, 3 * 1024 * 1024).await;
    let layer = &blobs[1].0;
    let cases: [(Fault, &str, StatusCode, &str); 6] = [
        (Fault::WrongBytes, "manifests/v1", StatusCode::BAD_GATEWAY, "nothing was stored"),
        (Fault::WrongBytes, &format!("manifests/{digest}"), StatusCode::BAD_GATEWAY, "not sha256:"),
        (Fault::RedirectLoop, &format!("blobs/{layer}"), StatusCode::BAD_GATEWAY, "redirect loop"),
        (Fault::Status(503), "manifests/v1", StatusCode::BAD_GATEWAY, "answered 503"),
        (Fault::Status(429), &format!("blobs/{layer}"), StatusCode::TOO_MANY_REQUESTS, "rate-limits"),
        (Fault::Down, "manifests/v1", StatusCode::BAD_GATEWAY, "timed out"),
    ];
    for (fault, path, status, says) in cases {
        *fake.fault.lock().unwrap() = fault;
        let r = send(&mirror, "GET", &format!("/v2/hub/lib/app/{path}"), b"", 10).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.text().contains(says), "{path}: {}", r.text());
        assert_nothing_stored(&mirror).await;
    }
    // Bad blob bytes, of the streamed layer and of a small blob (the in-memory path). A HEAD
    // stores before it answers: a clear 502. A GET is answered while it is stored: its body
    // is cut with an error where it would have ended, so no client takes it as whole.
    for (fault, blob) in [(Fault::Truncate, layer), (Fault::CorruptBlob, layer), (Fault::Truncate, &blobs[0].0), (Fault::CorruptBlob, &blobs[0].0)] {
        *fake.fault.lock().unwrap() = fault;
        let uri = format!("/v2/hub/lib/app/blobs/{blob}");
        let r = send(&mirror, "HEAD", &uri, b"", 10).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "HEAD {blob}");
        assert_nothing_stored(&mirror).await;
        let (status, _, end) = get_to_the_end(&mirror, &uri).await;
        assert_eq!(status, StatusCode::OK);
        let says = end.expect_err("the body must not end cleanly");
        assert!(says.contains("connection reset") || says.contains("digest"), "{says}");
        assert_nothing_stored(&mirror).await;
    }
    // Healthy again: the same pulls work.
    *fake.fault.lock().unwrap() = Fault::None;
    assert_eq!(send(&mirror, "GET", "/v2/hub/lib/app/manifests/v1", b"", 10).await.status, StatusCode::OK);
    assert_eq!(send(&mirror, "GET", &format!("/v2/hub/lib/app/blobs/{layer}"), b"", 10).await.status, StatusCode::OK);
}

#[tokio::test]
async fn pushes_into_a_mirrored_namespace_are_refused() {
    let (_fake, mirror) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let d = hash::sha256_of(b"x");
    for (method, uri) in [
        ("POST", format!("/v2/hub/lib/app/blobs/uploads/?digest={d}")),
        ("PUT", "/v2/hub/lib/app/manifests/v1".to_owned()),
    ] {
        let r = send(&mirror, method, &uri, b"x", 10).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert!(r.text().contains("UNSUPPORTED") && r.text().contains("pull-through cache of http://up.test"), "{}", r.text());
    }
    let r = send(&mirror, "POST", &format!("/v2/local/app/blobs/uploads/?digest={d}"), b"x", 10).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn quotas_charge_fetched_content_and_say_so() {
    let (fake, _) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let quota = crate::policy::config::QuotaRule {
        name: "hub".into(),
        repositories: vec!["hub/**".into()],
        limit: crate::policy::config::ByteSize::Bytes(1000),
    };
    let config = PolicyConfig { mirrors: vec![rule(Auth::Anonymous)], quotas: vec![quota], ..Default::default() };
    let mirror = memory()
        .with_policies(Policies::new(&config).unwrap())
        .with_upstream(UpstreamClient::new(Arc::new(FakeHttp(fake.clone()))));
    let (_, blobs) = push_upstream(&fake.reg, "v1", 1, 2000).await;
    assert_eq!(send(&mirror, "GET", "/v2/hub/lib/app/manifests/v1", b"", 10).await.status, StatusCode::OK);
    let r = send(&mirror, "GET", &format!("/v2/hub/lib/app/blobs/{}", blobs[1].0), b"", 10).await;
    assert_ne!(r.status, StatusCode::BAD_GATEWAY, "a quota is not the upstream's fault: {}", r.text());
    assert!(r.text().contains("quota"), "{}", r.text());
}

#[tokio::test]
async fn credentials_never_follow_a_redirect_to_another_origin() {
    let (fake, mirror) = setup(Auth::Token, rule(Auth::Token));
    let (_, blobs) = push_upstream(&fake.reg, "v1", 1, 10).await;
    *fake.fault.lock().unwrap() = Fault::RedirectToCdn;
    let layer = &blobs[1].0;
    let r = send(&mirror, "GET", &format!("/v2/hub/lib/app/blobs/{layer}"), b"", 10).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.body == blobs[1].1);
    let log = log(&fake);
    assert_eq!(log.last().unwrap(), &format!("GET cdn/v2/lib/app/blobs/{layer} auth=false"), "{log:?}");
}

#[tokio::test]
async fn concurrent_first_pulls_of_one_blob_fetch_it_once() {
    let (fake, mirror) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let (_, blobs) = push_upstream(&fake.reg, "v1", 1, 3 * 1024 * 1024).await;
    fake.slow.store(true, Ordering::SeqCst);
    let uri = format!("/v2/hub/lib/app/blobs/{}", blobs[1].0);
    let pulls = (0..4).map(|_| send(&mirror, "GET", &uri, b"", 10));
    for got in futures_util::future::join_all(pulls).await {
        assert_eq!(got.status, StatusCode::OK, "{}", got.text());
        assert!(got.body == blobs[1].1);
    }
    assert_eq!(log(&fake).len(), 1, "one upstream GET for four concurrent pulls");

    // A failure is shared too: the waiters do not each wait for the upstream in turn.
    let uri = format!("/v2/hub/lib/app/blobs/{}", blobs[0].0);
    *fake.fault.lock().unwrap() = Fault::Status(503);
    let pulls = (0..4).map(|_| send(&mirror, "GET", &uri, b"", 10));
    for got in futures_util::future::join_all(pulls).await {
        assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    }
    assert_eq!(log(&fake).len(), 1, "one upstream GET for four concurrent pulls that fail");
}

#[tokio::test]
async fn a_runtime_request_body_limit_does_not_cap_fetched_blobs() {
    // Lambda caps request bodies at 6 MB, a Workers plan at 100 MB: a layer the mirror fetches
    // is no request body.
    let (fake, _) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let mut config = Config::new(b"secret".to_vec());
    config.max_request_body = Some(1024 * 1024 + 10);
    let policies = Policies::new(&PolicyConfig { mirrors: vec![rule(Auth::Anonymous)], ..Default::default() }).unwrap();
    let mirror = Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), config)
        .with_policies(policies)
        .with_upstream(UpstreamClient::new(Arc::new(FakeHttp(fake.clone()))));
    let (_, blobs) = push_upstream(&fake.reg, "v1", 1, 3 * 1024 * 1024).await;
    let r = send(&mirror, "GET", &format!("/v2/hub/lib/app/blobs/{}", blobs[1].0), b"", 10).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.body == blobs[1].1);
    // A push elsewhere still gets the limit.
    let big = vec![7u8; 2 * 1024 * 1024];
    let uri = format!("/v2/local/app/blobs/uploads/?digest={}", hash::sha256_of(&big));
    assert_eq!(send(&mirror, "POST", &uri, &big, 10).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// A mirror whose upstream holds a 3 MiB layer it sends half of, then waits for `Fake::gate`;
/// with the layer's URI on the mirror, digest and content.
async fn gated_layer() -> (Arc<Fake>, Reg, String, (String, Vec<u8>)) {
    let (fake, mirror) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let (_, mut blobs) = push_upstream(&fake.reg, "v1", 1, 3 * 1024 * 1024).await;
    *fake.fault.lock().unwrap() = Fault::Gated;
    let layer = blobs.swap_remove(1);
    (fake, mirror, format!("/v2/hub/lib/app/blobs/{}", layer.0), layer)
}

/// A blob GET's answer, which must come before the upstream has sent the whole blob.
async fn first_pull(mirror: &Reg, uri: &str) -> (http::response::Parts, Body) {
    let req = http::Request::get(uri).body(crate::body::empty_stream()).unwrap();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), mirror.handle(req, ctx(10)));
    answer.await.expect("the answer must not wait for the whole blob").into_parts()
}

#[tokio::test]
async fn a_first_pull_answers_while_it_stores_and_links_only_at_the_verified_end() {
    let (fake, mirror, uri, (layer, content)) = gated_layer().await;
    let (parts, body) = first_pull(&mirror, &uri).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-length"], content.len().to_string().as_str());
    assert_eq!(parts.headers["docker-content-digest"], layer.as_str());
    let mut body = stream_of(body);
    // The first half reaches the client while the upstream still holds the second (all but
    // its last chunk, which the body holds until the next one comes).
    let mut got = Vec::new();
    while got.len() < content.len() / 2 - GATED_CHUNK {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), futures_util::StreamExt::next(&mut body))
            .await
            .expect("the first half must not wait for the whole blob")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&chunk);
    }
    assert!(got[..] == content[..got.len()]);
    // Not linked, not in the store: nothing is visible before its digest is verified.
    assert!(mirror.meta.list("blobs/", None, 10).await.unwrap().is_empty());
    assert!(mirror.blobs.list_blobs(None, 10).await.unwrap().is_empty());
    fake.gate.notify_one();
    while got.len() < content.len() {
        got.extend_from_slice(&futures_util::StreamExt::next(&mut body).await.unwrap().unwrap());
    }
    assert!(got == *content);
    // The last byte came after the link: a server that stops polling the body once its
    // Content-Length is sent leaves the blob stored.
    assert_eq!(mirror.meta.list("blobs/", None, 10).await.unwrap().len(), 1);
    assert!(futures_util::StreamExt::next(&mut body).await.is_none());
    // Linked at the end: the next pull comes from the cache, not the upstream.
    assert_eq!(mirror.blobs.stat(&parse_digest(&layer).unwrap()).await.unwrap(), Some(content.len() as u64));
    log(&fake);
    *fake.fault.lock().unwrap() = Fault::Down;
    let again = send(&mirror, "GET", &uri, b"", 11).await;
    assert!(again.status == StatusCode::OK && again.body == *content);
    assert!(log(&fake).is_empty());
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_first_pull_leaves_nothing_and_the_next_pull_fetches_again() {
    let (fake, mirror, uri, (_, content)) = gated_layer().await;
    let (_, body) = first_pull(&mirror, &uri).await;
    let mut body = stream_of(body);
    assert!(futures_util::StreamExt::next(&mut body).await.unwrap().is_ok());
    drop(body);
    assert!(mirror.meta.list("blobs/", None, 10).await.unwrap().is_empty());
    // The fetch was abandoned, not failed: the next pull leads a fetch of its own.
    *fake.fault.lock().unwrap() = Fault::None;
    log(&fake);
    let again = send(&mirror, "GET", &uri, b"", 11).await;
    assert!(again.status == StatusCode::OK && again.body == *content);
    assert_eq!(log(&fake).len(), 1);
}

#[tokio::test]
async fn a_range_of_a_blob_not_cached_yet_stores_it_whole_then_serves_the_range() {
    let (fake, mirror) = setup(Auth::Anonymous, rule(Auth::Anonymous));
    let (_, blobs) = push_upstream(&fake.reg, "v1", 1, 3 * 1024 * 1024).await;
    let (layer, content) = &blobs[1];
    // A range of a blob not cached yet: the whole blob is stored, then the range served.
    let req = http::Request::get(format!("/v2/hub/lib/app/blobs/{layer}")).header("range", "bytes=10-19").body(crate::body::empty_stream()).unwrap();
    let (parts, body) = mirror.handle(req, ctx(10)).await.into_parts();
    assert_eq!(parts.status, StatusCode::PARTIAL_CONTENT);
    assert!(collect(stream_of(body)).await == content[10..20]);
    assert_eq!(mirror.blobs.stat(&parse_digest(layer).unwrap()).await.unwrap(), Some(content.len() as u64));
}

#[tokio::test]
async fn a_pull_waiting_for_a_fetch_its_client_holds_back_fetches_alone() {
    // The lead's client reads nothing after the answer's head: its fetch stops once the pipe
    // is full. Another pull of the same blob must not wait for that client.
    let (fake, mirror, uri, (_, content)) = gated_layer().await;
    fake.timer_ms.store(50, Ordering::SeqCst);
    let (_, held) = first_pull(&mirror, &uri).await;
    *fake.fault.lock().unwrap() = Fault::None;
    log(&fake);
    let other = tokio::time::timeout(std::time::Duration::from_secs(5), send(&mirror, "GET", &uri, b"", 11));
    let other = other.await.expect("a waiter must not wait for a stalled fetch");
    assert!(other.status == StatusCode::OK && other.body == content);
    assert_eq!(log(&fake).len(), 1, "it fetched alone");
    drop(held);
}
