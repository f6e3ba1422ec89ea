//! The whole registry on the in-memory stores, driven through `Registry::handle` with no process,
//! socket or file: pushes (monolithic, chunked), pulls with ranges, tags, deletes, and the
//! failures that must leave nothing visible.

use berth_core::{BlobStore, Body, ByteStream, Config, MemoryBlobStore, MemoryMetaStore, Registry, RequestContext, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, StatusCode};

type Reg = Registry<MemoryBlobStore, MemoryMetaStore>;

fn registry() -> Reg {
    Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(vec![7; 32]))
}

fn ctx() -> RequestContext {
    // Fresh randomness per request: upload ids must differ.
    static N: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    RequestContext { now: 1_700_000_000, random: [n; 16] }
}

fn sha256(content: &[u8]) -> String {
    berth_core::hash::sha256_of(content)
}

async fn call(reg: &Reg, method: Method, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let stream: ByteStream = Box::pin(futures_util::stream::iter(
        (!body.is_empty()).then(|| Ok(Bytes::copy_from_slice(body))),
    ));
    let mut req = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
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

/// POST then PUT with the whole blob.
async fn push_blob(reg: &Reg, repo: &str, content: &[u8]) -> String {
    let digest = sha256(content);
    let start = call(reg, Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &[], b"").await;
    assert_eq!(start.status(), StatusCode::ACCEPTED);
    let location = header(&start, "location");
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = call(reg, Method::PUT, &format!("{location}{sep}digest={digest}"), &[("content-type", "application/octet-stream")], content).await;
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", String::from_utf8_lossy(&body_of(put).await));
    digest
}

fn manifest(config: &str, config_size: usize, layer: &str, layer_size: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
    }))
    .unwrap()
}

/// An image: config and layer blobs, then the manifest under `tag`. Returns the manifest's digest.
async fn push_image(reg: &Reg, repo: &str, tag: &str, layer: &[u8]) -> String {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let dc = push_blob(reg, repo, config).await;
    let dl = push_blob(reg, repo, layer).await;
    let m = manifest(&dc, config.len(), &dl, layer.len());
    let put = call(reg, Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), &[("content-type", "application/vnd.oci.image.manifest.v1+json")], &m).await;
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", String::from_utf8_lossy(&body_of(put).await));
    sha256(&m)
}

#[tokio::test]
async fn base_endpoint_answers() {
    let reg = registry();
    assert_eq!(call(&reg, Method::GET, "/v2/", &[], b"").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn monolithic_push_then_pull() {
    let reg = registry();
    let digest = push_blob(&reg, "a/b", b"monolithic content").await;
    let got = call(&reg, Method::GET, &format!("/v2/a/b/blobs/{digest}"), &[], b"").await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(header(&got, "docker-content-digest"), digest);
    assert_eq!(body_of(got).await, b"monolithic content");
    let head = call(&reg, Method::HEAD, &format!("/v2/a/b/blobs/{digest}"), &[], b"").await;
    assert_eq!((head.status(), header(&head, "content-length")), (StatusCode::OK, "18".into()));
}

#[tokio::test]
async fn single_post_push_with_digest() {
    let reg = registry();
    let content = b"posted in one request";
    let digest = sha256(content);
    let post = call(&reg, Method::POST, &format!("/v2/r/blobs/uploads/?digest={digest}"), &[("content-type", "application/octet-stream")], content).await;
    assert_eq!(post.status(), StatusCode::CREATED);
    assert_eq!(reg.blob_store().uploads_in_progress(), 0);
    let got = call(&reg, Method::GET, &format!("/v2/r/blobs/{digest}"), &[], b"").await;
    assert_eq!(body_of(got).await, content);
}

#[tokio::test]
async fn chunked_push_then_pull() {
    let reg = registry();
    let content = b"0123456789abcdefghij";
    let digest = sha256(content);
    let start = call(&reg, Method::POST, "/v2/r/blobs/uploads/", &[], b"").await;
    let mut location = header(&start, "location");
    for (from, to) in [(0, 8), (8, 15)] {
        let range = format!("{}-{}", from, to - 1);
        let patch = call(&reg, Method::PATCH, &location, &[("content-range", &range), ("content-type", "application/octet-stream")], &content[from..to]).await;
        assert_eq!(patch.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&patch, "range"), format!("0-{}", to - 1));
        location = header(&patch, "location");
    }
    let status = call(&reg, Method::GET, &location, &[], b"").await;
    assert_eq!((status.status(), header(&status, "range")), (StatusCode::NO_CONTENT, "0-14".into()));
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = call(&reg, Method::PUT, &format!("{location}{sep}digest={digest}"), &[("content-range", "15-19"), ("content-type", "application/octet-stream")], &content[15..]).await;
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", String::from_utf8_lossy(&body_of(put).await));
    assert_eq!(reg.blob_store().uploads_in_progress(), 0, "the committed upload's data is still held");
    let got = call(&reg, Method::GET, &format!("/v2/r/blobs/{digest}"), &[], b"").await;
    assert_eq!(body_of(got).await, content);
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_changes_nothing() {
    let reg = registry();
    let start = call(&reg, Method::POST, "/v2/r/blobs/uploads/", &[], b"").await;
    let location = header(&start, "location");
    let first = call(&reg, Method::PATCH, &location, &[("content-range", "0-3")], b"abcd").await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = header(&first, "location");
    let skipped = call(&reg, Method::PATCH, &location, &[("content-range", "10-13")], b"wxyz").await;
    assert_eq!(skipped.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&skipped, "range"), "0-3");
    let status = call(&reg, Method::GET, &location, &[], b"").await;
    assert_eq!(header(&status, "range"), "0-3");
}

#[tokio::test]
async fn digest_mismatch_leaves_nothing_visible() {
    let reg = registry();
    let wrong = sha256(b"something else");
    let start = call(&reg, Method::POST, "/v2/r/blobs/uploads/", &[], b"").await;
    let location = header(&start, "location");
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = call(&reg, Method::PUT, &format!("{location}{sep}digest={wrong}"), &[], b"actual bytes").await;
    assert_eq!(put.status(), StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body_of(put).await).contains("DIGEST_INVALID"));
    for digest in [wrong, sha256(b"actual bytes")] {
        let head = call(&reg, Method::HEAD, &format!("/v2/r/blobs/{digest}"), &[], b"").await;
        assert_eq!(head.status(), StatusCode::NOT_FOUND, "{digest}");
    }
    assert!(reg.blob_store().list_blobs(None, 10).await.unwrap().is_empty(), "content was stored");
}

#[tokio::test]
async fn range_pull() {
    let reg = registry();
    let digest = push_blob(&reg, "r", b"0123456789").await;
    let got = call(&reg, Method::GET, &format!("/v2/r/blobs/{digest}"), &[("range", "bytes=2-5")], b"").await;
    assert_eq!(got.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&got, "content-range"), "bytes 2-5/10");
    assert_eq!(body_of(got).await, b"2345");
    let past = call(&reg, Method::GET, &format!("/v2/r/blobs/{digest}"), &[("range", "bytes=20-30")], b"").await;
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn image_push_pull_by_tag_and_digest() {
    let reg = registry();
    let digest = push_image(&reg, "app", "v1", b"layer one").await;
    let by_tag = call(&reg, Method::GET, "/v2/app/manifests/v1", &[("accept", "application/vnd.oci.image.manifest.v1+json")], b"").await;
    assert_eq!(by_tag.status(), StatusCode::OK);
    assert_eq!(header(&by_tag, "docker-content-digest"), digest);
    let bytes = body_of(by_tag).await;
    assert_eq!(sha256(&bytes), digest);
    let by_digest = call(&reg, Method::GET, &format!("/v2/app/manifests/{digest}"), &[], b"").await;
    assert_eq!(body_of(by_digest).await, bytes);
}

#[tokio::test]
async fn manifest_with_a_missing_blob_is_refused() {
    let reg = registry();
    let config = b"{}";
    let dc = push_blob(&reg, "app", config).await;
    let m = manifest(&dc, 2, &sha256(b"never pushed"), 12);
    let put = call(&reg, Method::PUT, "/v2/app/manifests/v1", &[("content-type", "application/vnd.oci.image.manifest.v1+json")], &m).await;
    assert_eq!(put.status(), StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body_of(put).await).contains("MANIFEST_BLOB_UNKNOWN"));
    assert_eq!(call(&reg, Method::GET, "/v2/app/manifests/v1", &[], b"").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tag_list_is_sorted_and_paged() {
    let reg = registry();
    for tag in ["b", "a", "c"] {
        push_image(&reg, "app", tag, b"shared layer").await;
    }
    let list = call(&reg, Method::GET, "/v2/app/tags/list", &[], b"").await;
    let json: serde_json::Value = serde_json::from_slice(&body_of(list).await).unwrap();
    assert_eq!(json["tags"], serde_json::json!(["a", "b", "c"]));
    let page = call(&reg, Method::GET, "/v2/app/tags/list?n=1&last=a", &[], b"").await;
    assert!(header(&page, "link").contains("last=b"), "{}", header(&page, "link"));
    let json: serde_json::Value = serde_json::from_slice(&body_of(page).await).unwrap();
    assert_eq!(json["tags"], serde_json::json!(["b"]));
    let unknown = call(&reg, Method::GET, "/v2/nope/tags/list", &[], b"").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_manifest_and_blob() {
    let reg = registry();
    let digest = push_image(&reg, "app", "v1", b"to delete").await;
    let del = call(&reg, Method::DELETE, &format!("/v2/app/manifests/{digest}"), &[], b"").await;
    assert_eq!(del.status(), StatusCode::ACCEPTED);
    assert_eq!(call(&reg, Method::GET, &format!("/v2/app/manifests/{digest}"), &[], b"").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(call(&reg, Method::GET, "/v2/app/manifests/v1", &[], b"").await.status(), StatusCode::NOT_FOUND);
    let layer = sha256(b"to delete");
    let del = call(&reg, Method::DELETE, &format!("/v2/app/blobs/{layer}"), &[], b"").await;
    assert_eq!(del.status(), StatusCode::ACCEPTED);
    assert_eq!(call(&reg, Method::HEAD, &format!("/v2/app/blobs/{layer}"), &[], b"").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancelled_upload_is_gone() {
    let reg = registry();
    let start = call(&reg, Method::POST, "/v2/r/blobs/uploads/", &[], b"").await;
    let location = header(&start, "location");
    call(&reg, Method::PATCH, &location, &[("content-range", "0-2")], b"abc").await;
    let cancel = call(&reg, Method::DELETE, &location, &[], b"").await;
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    assert_eq!(call(&reg, Method::GET, &location, &[], b"").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(reg.blob_store().uploads_in_progress(), 0, "the cancelled upload's data is still held");
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = registry();
    let digest = push_blob(&reg, "from", b"mounted").await;
    let mount = call(&reg, Method::POST, &format!("/v2/to/blobs/uploads/?mount={digest}&from=from"), &[], b"").await;
    assert_eq!(mount.status(), StatusCode::CREATED);
    assert_eq!(call(&reg, Method::HEAD, &format!("/v2/to/blobs/{digest}"), &[], b"").await.status(), StatusCode::OK);
}
