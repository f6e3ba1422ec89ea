//! The native-digest upload protocol (`BlobStore::upload_native`) on the in-memory store in its
//! native mode: a body that may be the whole blob is taken and hashed by the store, the session
//! keeps that digest, and completion uses it only while nothing else was appended. A wrong digest
//! leaves nothing visible on every path.

use berth_core::{BlobStore, Body, ByteStream, Config, MemoryBlobStore, MemoryMetaStore, Registry, RequestContext, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, StatusCode};

type Reg = Registry<MemoryBlobStore, MemoryMetaStore>;

fn registry() -> Reg {
    Registry::new(MemoryBlobStore::with_native_digest(), MemoryMetaStore::new(), Config::new(vec![7; 32]))
}

fn ctx() -> RequestContext {
    static N: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    RequestContext { now: 1_700_000_000, random: [n; 16] }
}

fn sha256(content: &[u8]) -> String {
    berth_core::hash::sha256_of(content)
}

fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// `body` in pieces of `piece` bytes; with Content-Length only when `sized`.
async fn call(reg: &Reg, method: Method, uri: &str, headers: &[(&str, &str)], body: &[u8], sized: bool) -> Response {
    let pieces: Vec<Result<Bytes, berth_core::StorageError>> =
        body.chunks(100_003).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let stream: ByteStream = Box::pin(futures_util::stream::iter(pieces));
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if sized && !body.is_empty() {
        req = req.header("content-length", body.len().to_string());
    }
    reg.handle(req.body(stream).unwrap(), ctx()).await
}

async fn body_of(resp: Response) -> Vec<u8> {
    match resp.into_body() {
        Body::Empty => Vec::new(),
        Body::Full(b) => b.to_vec(),
        Body::Stream(mut s) => {
            let mut out = Vec::new();
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk.unwrap());
            }
            out
        }
    }
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

async fn start(reg: &Reg) -> String {
    let start = call(reg, Method::POST, "/v2/r/blobs/uploads/", &[], b"", false).await;
    assert_eq!(start.status(), StatusCode::ACCEPTED);
    header(&start, "location")
}

async fn assert_stored(reg: &Reg, digest: &str, expected: &[u8]) {
    let get = call(reg, Method::GET, &format!("/v2/r/blobs/{digest}"), &[], b"", false).await;
    assert_eq!(get.status(), StatusCode::OK);
    assert!(body_of(get).await == expected, "stored content differs");
}

async fn assert_nothing_visible(reg: &Reg, digests: &[String]) {
    for digest in digests {
        let head = call(reg, Method::HEAD, &format!("/v2/r/blobs/{digest}"), &[], b"", false).await;
        assert_eq!(head.status(), StatusCode::NOT_FOUND, "{digest}");
    }
    assert!(reg.blob_store().list_blobs(None, 10).await.unwrap().is_empty(), "content was stored");
    assert_eq!(reg.blob_store().uploads_in_progress(), 0, "the failed upload's data is still held");
}

/// docker: POST, one streamed PATCH (no Content-Length, no Content-Range), empty PUT ?digest=.
#[tokio::test]
async fn docker_style_upload_completes_on_the_native_digest() {
    let reg = registry();
    let data = content(3 * 1024 * 1024 + 5);
    let location = start(&reg).await;
    let patch = call(&reg, Method::PATCH, &location, &[], &data, false).await;
    assert_eq!(patch.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&patch, "range"), format!("0-{}", data.len() - 1));
    assert_eq!(reg.blob_store().native_bodies(), 1, "the PATCH was not taken natively");
    let put = call(&reg, Method::PUT, &with_digest(&header(&patch, "location"), &sha256(&data)), &[], b"", false).await;
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", String::from_utf8_lossy(&body_of(put).await));
    assert_stored(&reg, &sha256(&data), &data).await;
}

#[tokio::test]
async fn docker_style_upload_with_a_wrong_digest_leaves_nothing() {
    let reg = registry();
    let data = content(2 * 1024 * 1024);
    let location = start(&reg).await;
    let patch = call(&reg, Method::PATCH, &location, &[], &data, false).await;
    assert_eq!(patch.status(), StatusCode::ACCEPTED);
    let wrong = sha256(b"other");
    let put = call(&reg, Method::PUT, &with_digest(&header(&patch, "location"), &wrong), &[], b"", false).await;
    assert_eq!(put.status(), StatusCode::BAD_REQUEST);
    let body = String::from_utf8_lossy(&body_of(put).await).into_owned();
    assert!(body.contains("DIGEST_INVALID") && body.contains(&sha256(&data)), "{body}");
    assert_nothing_visible(&reg, &[wrong, sha256(&data)]).await;
}

/// A first PATCH without Content-Range goes native; chunks after it make the native digest
/// stale, and completion must hash what is stored, not trust the first body's digest.
#[tokio::test]
async fn chunks_after_a_native_body_are_verified_whole() {
    for wrong in [false, true] {
        let reg = registry();
        let data = content(2 * 1024 * 1024 + 77);
        let (a, b) = (1024 * 1024 + 3, 1024 * 1024 + 40);
        let location = start(&reg).await;
        let first = call(&reg, Method::PATCH, &location, &[], &data[..a], false).await;
        assert_eq!(first.status(), StatusCode::ACCEPTED);
        assert_eq!(reg.blob_store().native_bodies(), 1);
        let range = format!("{a}-{}", b - 1);
        let second = call(&reg, Method::PATCH, &header(&first, "location"), &[("content-range", &range)], &data[a..b], true).await;
        assert_eq!(second.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&second, "range"), format!("0-{}", b - 1));
        let range = format!("{b}-{}", data.len() - 1);
        let third = call(&reg, Method::PATCH, &header(&second, "location"), &[("content-range", &range)], &data[b..], true).await;
        assert_eq!(third.status(), StatusCode::ACCEPTED);
        // The digest of the first body alone must not complete the upload.
        let digest = if wrong { sha256(&data[..a]) } else { sha256(&data) };
        let put = call(&reg, Method::PUT, &with_digest(&header(&third, "location"), &digest), &[], b"", false).await;
        if wrong {
            assert_eq!(put.status(), StatusCode::BAD_REQUEST);
            assert_nothing_visible(&reg, &[digest, sha256(&data)]).await;
        } else {
            assert_eq!(put.status(), StatusCode::CREATED, "{:?}", String::from_utf8_lossy(&body_of(put).await));
            assert_stored(&reg, &digest, &data).await;
        }
        assert_eq!(reg.blob_store().native_bodies(), 1, "a chunk with Content-Range went native");
    }
}

/// A monolithic POST ?digest= over the small-blob bound, and a PUT with the whole blob.
#[tokio::test]
async fn whole_bodies_are_hashed_natively_and_a_wrong_digest_leaves_nothing() {
    let data = content(1024 * 1024 + 9);
    let digest = sha256(&data);
    let wrong = sha256(b"not it");
    for sized in [true, false] {
        let reg = registry();
        let post = call(&reg, Method::POST, &format!("/v2/r/blobs/uploads/?digest={wrong}"), &[], &data, sized).await;
        assert_eq!(post.status(), StatusCode::BAD_REQUEST);
        assert_nothing_visible(&reg, &[wrong.clone(), digest.clone()]).await;
        let location = start(&reg).await;
        let put = call(&reg, Method::PUT, &with_digest(&location, &wrong), &[], &data, sized).await;
        assert_eq!(put.status(), StatusCode::BAD_REQUEST);
        assert_nothing_visible(&reg, &[wrong.clone(), digest.clone()]).await;
        assert_eq!(reg.blob_store().native_bodies(), 2, "sized {sized}");

        let post = call(&reg, Method::POST, &format!("/v2/r/blobs/uploads/?digest={digest}"), &[], &data, sized).await;
        assert_eq!(post.status(), StatusCode::CREATED);
        assert_stored(&reg, &digest, &data).await;
        let location = start(&reg).await;
        let put = call(&reg, Method::PUT, &with_digest(&location, &digest), &[], &data, sized).await;
        assert_eq!(put.status(), StatusCode::CREATED);
        assert_eq!(reg.blob_store().uploads_in_progress(), 0);
    }
}

/// A native body over the request limit is 413, and the session stays where it was.
#[tokio::test]
async fn native_body_over_the_limit_is_413() {
    let mut config = Config::new(vec![7; 32]);
    config.max_request_body = Some(1024 * 1024);
    let reg = Registry::new(MemoryBlobStore::with_native_digest(), MemoryMetaStore::new(), config);
    let location = start(&reg).await;
    let data = content(1024 * 1024 + 1);
    let patch = call(&reg, Method::PATCH, &location, &[], &data, false).await;
    assert_eq!(patch.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let status = call(&reg, Method::GET, &location, &[], b"", false).await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range"), "0-0");
}
