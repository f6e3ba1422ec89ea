//! end-2 (GET/HEAD blob), end-10 (DELETE blob): headers, ranges, unknown and malformed digests.

mod common;

use common::*;

#[tokio::test]
async fn head_and_get_carry_the_blob_headers() {
    let repo = repo("blob-headers");
    let data = random_bytes(1234);
    let digest = push_blob(&repo, &data).await;

    let h = head(format!("/v2/{repo}/blobs/{digest}")).send().await;
    assert_status(&h, 200);
    assert_api_version(&h);
    assert_header(&h, "content-length", "1234");
    assert_header(&h, "docker-content-digest", &digest);
    assert_header(&h, "etag", &format!("\"{digest}\""));
    assert_header(&h, "accept-ranges", "bytes");
    assert_header(&h, "content-type", "application/octet-stream");
    assert_header(&h, "cache-control", IMMUTABLE);
    assert!(h.body.is_empty());

    let g = get(format!("/v2/{repo}/blobs/{digest}")).send().await;
    if g.status == 307 {
        // Presigning storage (Lambda): Berth's answer is where the bytes are, with their digest;
        // the storage's answer carries the storage's own headers (its ETag, its caching), so
        // there the client gets what it needs: the whole blob, with its length.
        assert_header(&g, "docker-content-digest", &digest);
        let s = follow_redirect(g, &[]).await;
        assert_status(&s, 200);
        assert_header(&s, "content-length", "1234");
        assert!(s.body == data, "blob content differs (served by storage)");
        return;
    }
    assert_status(&g, 200);
    assert_header(&g, "content-length", "1234");
    assert_header(&g, "docker-content-digest", &digest);
    assert_header(&g, "etag", &format!("\"{digest}\""));
    assert_header(&g, "accept-ranges", "bytes");
    assert_header(&g, "content-type", "application/octet-stream");
    assert_header(&g, "cache-control", IMMUTABLE);
    assert!(g.body == data, "blob content differs");
}

#[tokio::test]
async fn empty_blob_round_trips() {
    let repo = repo("blob-empty");
    let digest = push_blob(&repo, b"").await;
    assert_eq!(
        digest,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_blob(&repo, &digest, b"").await;
}

#[tokio::test]
async fn unknown_blob_is_404_blob_unknown() {
    let repo = repo("blob-unknown");
    push_blob(&repo, b"something else").await;
    let d = unknown_digest();
    assert_oci_error(
        &get(format!("/v2/{repo}/blobs/{d}")).send().await,
        404,
        "BLOB_UNKNOWN",
    );
    assert_status(&head(format!("/v2/{repo}/blobs/{d}")).send().await, 404);
    // A repository that never existed.
    let other = common::repo("blob-unknown-never");
    assert_oci_error(
        &get(format!("/v2/{other}/blobs/{d}")).send().await,
        404,
        "BLOB_UNKNOWN",
    );
    // sha512 form.
    let d512 = sha512(&random_bytes(10));
    assert_oci_error(
        &get(format!("/v2/{repo}/blobs/{d512}")).send().await,
        404,
        "BLOB_UNKNOWN",
    );
}

#[tokio::test]
async fn blobs_are_scoped_to_their_repository() {
    let a = repo("blob-scope-a");
    let b = repo("blob-scope-b");
    let digest = push_blob(&a, &random_bytes(100)).await;
    push_blob(&b, b"unrelated").await;
    assert_no_blob(&b, &digest).await;
}

#[tokio::test]
async fn malformed_digest_in_path_is_digest_invalid() {
    let repo = repo("blob-bad-digest");
    let hex64 = "a".repeat(64);
    for d in [
        "sha256:abc".to_string(),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "g".repeat(64)),
        format!("sha512:{hex64}"),
        "sha256:".to_string(),
        format!(":{hex64}"),
        "notadigest".to_string(),
        hex64.clone(),
        format!("SHA256:{hex64}"),
    ] {
        let r = get(format!("/v2/{repo}/blobs/{d}")).send().await;
        assert_oci_error(&r, 400, "DIGEST_INVALID");
        let r = delete(format!("/v2/{repo}/blobs/{d}")).send().await;
        assert_oci_error(&r, 400, "DIGEST_INVALID");
        assert_status(&head(format!("/v2/{repo}/blobs/{d}")).send().await, 400);
    }
}

#[tokio::test]
async fn unsupported_algorithm_in_path_is_unsupported() {
    let repo = repo("blob-bad-alg");
    for d in [
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
        format!("sha384:{}", "a".repeat(96)),
        format!("blake3:{}", "a".repeat(64)),
    ] {
        let r = get(format!("/v2/{repo}/blobs/{d}")).send().await;
        assert_oci_error(&r, 400, "UNSUPPORTED");
        assert_status(&head(format!("/v2/{repo}/blobs/{d}")).send().await, 400);
    }
}

const SIZE: usize = 1000;

/// A ranged GET as a client makes it: a redirect to storage is followed with the Range kept, so
/// the checks below hold for what the client gets in every runtime. (An unsatisfiable range is
/// Berth's own 416 before any redirect: the core checks ranges first.)
async fn ranged(repo: &str, digest: &str, range: &str) -> Resp {
    get_blob(repo, digest, &[("range", range)]).await
}

#[tokio::test]
async fn range_requests_answer_206() {
    let repo = repo("blob-range");
    let data = random_bytes(SIZE);
    let digest = push_blob(&repo, &data).await;
    let cases: &[(&str, usize, usize)] = &[
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-199", 100, 199),
        ("bytes=999-999", 999, 999),
        ("bytes=0-999", 0, 999),
        ("bytes=500-", 500, 999),
        ("bytes=0-", 0, 999),
        ("bytes=-1", 999, 999),
        ("bytes=-100", 900, 999),
    ];
    for &(range, a, b) in cases {
        let r = ranged(&repo, &digest, range).await;
        assert_status(&r, 206);
        assert_header(&r, "content-range", &format!("bytes {a}-{b}/{SIZE}"));
        assert_header(&r, "content-length", &(b - a + 1).to_string());
        assert!(r.body == data[a..=b], "Range {range}: wrong bytes");
    }
}

/// RFC 9110 §14.1.2: a last-pos past the end, or a suffix longer than the representation, is
/// satisfiable and is clamped to the size.
#[tokio::test]
async fn range_past_the_end_is_clamped() {
    let repo = repo("blob-range-clamp");
    let data = random_bytes(SIZE);
    let digest = push_blob(&repo, &data).await;
    for (range, a, b) in [("bytes=900-5000", 900, 999), ("bytes=-5000", 0, 999)] {
        let r = ranged(&repo, &digest, range).await;
        assert_status(&r, 206);
        assert_header(&r, "content-range", &format!("bytes {a}-{b}/{SIZE}"));
        assert!(r.body == data[a..=b], "Range {range}: wrong bytes");
    }
}

#[tokio::test]
async fn unsatisfiable_range_is_416_range_invalid() {
    let repo = repo("blob-range-416");
    let data = random_bytes(SIZE);
    let digest = push_blob(&repo, &data).await;
    for range in [
        "bytes=1000-",
        "bytes=1000-1000",
        "bytes=1500-2000",
        "bytes=99999999-",
    ] {
        let r = ranged(&repo, &digest, range).await;
        assert_oci_error(&r, 416, "RANGE_INVALID");
        assert_header(&r, "content-range", &format!("bytes */{SIZE}"));
    }
}

#[tokio::test]
async fn ununderstood_range_is_ignored() {
    let repo = repo("blob-range-ignored");
    let data = random_bytes(SIZE);
    let digest = push_blob(&repo, &data).await;
    for range in [
        "bytes=0-1,3-4",
        "bytes=0-10, 20-30",
        "items=0-10",
        "bytes=abc",
        "bytes=5-2",
        "bytes=",
    ] {
        let r = ranged(&repo, &digest, range).await;
        assert_status(&r, 200);
        assert!(
            r.body == data,
            "Range {range:?} should be ignored (whole blob)"
        );
        assert_eq!(
            r.header("content-range"),
            None,
            "Range {range:?}:\n{}",
            r.describe()
        );
    }
}

#[tokio::test]
async fn delete_unlinks_the_blob() {
    let repo = repo("blob-delete");
    let data = random_bytes(64);
    let digest = push_blob(&repo, &data).await;
    assert_blob(&repo, &digest, &data).await;
    let r = delete(format!("/v2/{repo}/blobs/{digest}")).send().await;
    assert_status(&r, 202);
    assert_no_blob(&repo, &digest).await;
    let r = delete(format!("/v2/{repo}/blobs/{digest}")).send().await;
    assert_oci_error(&r, 404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn delete_in_one_repository_leaves_the_others() {
    let a = repo("blob-delete-a");
    let b = repo("blob-delete-b");
    let data = random_bytes(64);
    let digest = push_blob(&a, &data).await;
    push_blob(&b, &data).await;
    assert_status(&delete(format!("/v2/{a}/blobs/{digest}")).send().await, 202);
    assert_no_blob(&a, &digest).await;
    assert_blob(&b, &digest, &data).await;
    // And it can be pushed again where it was deleted.
    push_blob(&a, &data).await;
    assert_blob(&a, &digest, &data).await;
}

#[tokio::test]
async fn delete_unknown_blob_is_404() {
    let repo = repo("blob-delete-unknown");
    push_blob(&repo, b"x").await;
    let r = delete(format!("/v2/{repo}/blobs/{}", unknown_digest()))
        .send()
        .await;
    assert_oci_error(&r, 404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn sha512_blob_is_addressable() {
    let repo = repo("blob-sha512");
    let data = random_bytes(777);
    let d = sha512(&data);
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data.clone())
        .send()
        .await;
    assert_status(&r, 201);
    assert_blob(&repo, &d, &data).await;
    let h = head(format!("/v2/{repo}/blobs/{d}")).send().await;
    assert_header(&h, "etag", &format!("\"{d}\""));
    let r = ranged(&repo, &d, "bytes=10-19").await;
    assert_status(&r, 206);
    assert!(r.body == data[10..20]);
}

/// HEAD answers carry headers only, success or error (checked on the wire: an HTTP client
/// library would hide a body sent after a HEAD).
#[tokio::test]
async fn head_responses_have_no_body() {
    let repo = repo("blob-head-raw");
    let digest = push_blob(&repo, &random_bytes(321)).await;
    let p = push_image(&repo, "v1").await;
    let t = target();
    for path in [
        format!("/v2/{repo}/blobs/{digest}"),
        format!("/v2/{repo}/blobs/{}", unknown_digest()),
        format!("/v2/{repo}/blobs/sha256:bad"),
        format!("/v2/{repo}/manifests/v1"),
        format!("/v2/{repo}/manifests/{}", p.digest),
        format!("/v2/{repo}/manifests/nope"),
        "/v2/Bad/manifests/v1".to_string(),
    ] {
        let req = format!(
            "HEAD {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            t.prefix,
            t.host_header()
        );
        let (status, text) =
            raw_exchange(req.as_bytes(), false, std::time::Duration::from_secs(5)).await;
        assert!(status.is_some(), "HEAD {path}: no response");
        let (_, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("HEAD {path}: no header end:\n{text}"));
        assert!(body.is_empty(), "HEAD {path} sent a body:\n{text}");
    }
}
