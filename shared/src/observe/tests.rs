//! Request ids and the health endpoints, through `Registry::handle` on the in-memory stores.

use bytes::Bytes;
use http::StatusCode;

use super::*;
use crate::auth::{key_pair_from_seed, Auth, AuthConfig};
use crate::memory::{MemoryBlobStore, MemoryMetaStore};
use crate::storage::{ByteStream, PutOutcome, Precondition, StorageResult, Versioned};
use crate::{Config, StorageError};

fn ctx(random: u8) -> RequestContext {
    RequestContext { now: 1_700_000_000, random: [random; 16] }
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request {
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let empty: ByteStream = Box::pin(futures_util::stream::empty());
    req.body(empty).unwrap()
}

async fn body_of(response: Response) -> Vec<u8> {
    match response.into_body() {
        Body::Empty => Vec::new(),
        Body::Full(b) => b.to_vec(),
        Body::Stream(s) => crate::body::read_limited(s, 1 << 20).await.unwrap().to_vec(),
    }
}

fn open_registry() -> Registry<MemoryBlobStore, MemoryMetaStore> {
    Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(b"secret".to_vec()))
}

/// Auth on with nothing public: anonymous callers get 401 everywhere in the API.
fn locked_registry() -> Registry<MemoryBlobStore, MemoryMetaStore> {
    let (private, _) = key_pair_from_seed(&[7; 32]).unwrap();
    let config = AuthConfig::from_toml(&format!("[token]\n[[token.keys]]\nkid = \"k\"\nprivate_key = \"{private}\"\n"))
        .unwrap();
    open_registry().with_auth(Auth::new(&config).unwrap())
}

#[test]
fn a_sane_caller_id_is_kept_and_anything_else_replaced() {
    let with = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_str(v).unwrap());
        request_id(&h, &ctx(1))
    };
    assert_eq!(with("abc-123_x.y:z"), "abc-123_x.y:z");
    let generated = request_id(&HeaderMap::new(), &ctx(1));
    assert_eq!(generated.len(), 32);
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    // Deterministic for the same request (the adapter's log lines and the response agree),
    // different for different random bytes.
    assert_eq!(generated, request_id(&HeaderMap::new(), &ctx(1)));
    assert_ne!(generated, request_id(&HeaderMap::new(), &ctx(2)));
    // Not the random bytes themselves (they seed upload ids too).
    assert!(!generated.contains("01010101"));
    for bad in ["", "has space", "quote\"", "key=value", &"x".repeat(129)] {
        assert_eq!(with(bad), generated, "{bad:?}");
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let registry = locked_registry();
    for (method, uri) in [("GET", "/v2/"), ("GET", "/v2/a/manifests/x"), ("GET", "/nowhere"), ("GET", "/healthz"), ("GET", "/token")] {
        let response = registry.handle(request(method, uri, &[]), ctx(3)).await;
        assert_eq!(
            response.headers().get(REQUEST_ID_HEADER).unwrap().to_str().unwrap(),
            request_id(&HeaderMap::new(), &ctx(3)),
            "{method} {uri}"
        );
        let response = registry.handle(request(method, uri, &[("x-request-id", "trace-42")]), ctx(3)).await;
        assert_eq!(response.headers().get(REQUEST_ID_HEADER).unwrap(), "trace-42", "{method} {uri}");
    }
}

#[tokio::test]
async fn health_needs_no_auth_and_says_nothing_else() {
    let registry = locked_registry();
    let response = registry.handle(request("GET", "/v2/", &[]), ctx(0)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    for (path, text) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let response = registry.handle(request("GET", path, &[]), ctx(0)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(body_of(response).await, text.as_bytes());
        let response = registry.handle(request("HEAD", path, &[]), ctx(0)).await;
        assert_eq!(response.status(), StatusCode::OK, "HEAD {path}");
        assert!(body_of(response).await.is_empty());
        let response = registry.handle(request("POST", path, &[]), ctx(0)).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "POST {path}");
    }
}

/// A metadata store that is down.
struct Down;

#[async_trait::async_trait]
impl MetaStore for Down {
    async fn get(&self, _: &str) -> StorageResult<Option<Versioned>> {
        Err(StorageError::new("connection refused to db.internal:5432"))
    }
    async fn put(&self, _: &str, _: Bytes, _: Precondition) -> StorageResult<PutOutcome> {
        Err(StorageError::new("down"))
    }
    async fn delete(&self, _: &str) -> StorageResult<()> {
        Err(StorageError::new("down"))
    }
    async fn list(&self, _: &str, _: Option<&str>, _: usize) -> StorageResult<Vec<String>> {
        Err(StorageError::new("down"))
    }
}

#[tokio::test]
async fn not_ready_when_the_store_is_down_without_saying_why() {
    let registry = Registry::new(MemoryBlobStore::new(), Down, Config::new(b"secret".to_vec()));
    let response = registry.handle(request("GET", "/readyz", &[]), ctx(0)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_of(response).await, b"not ready\n");
    // Alive all the same: the process answers.
    let response = registry.handle(request("GET", "/healthz", &[]), ctx(0)).await;
    assert_eq!(response.status(), StatusCode::OK);
}
