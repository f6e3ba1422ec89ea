//! end-4a/4b (POST, monolithic POST ?digest), end-5 (PATCH), end-6 (PUT), end-11 (mount),
//! end-13 (upload status), upload DELETE.

mod common;

use std::time::Duration;

use common::*;

fn upload_id(loc: &str) -> String {
    let path = loc.split('?').next().unwrap();
    path.rsplit('/').next().unwrap().to_string()
}

#[track_caller]
fn assert_upload_reply(r: &Resp, status: u16, repo: &str, range: &str) -> String {
    assert_status(r, status);
    let loc = r.location();
    let prefix = format!("/v2/{repo}/blobs/uploads/");
    assert!(
        loc.starts_with(&prefix),
        "Location {loc:?} is not under {prefix}:\n{}",
        r.describe()
    );
    let id = upload_id(&loc);
    assert!(
        is_upload_id(&id),
        "upload id {id:?} is not <32 hex>.<32 hex>:\n{}",
        r.describe()
    );
    assert_header(r, "docker-upload-uuid", &id);
    assert_header(r, "range", range);
    loc
}

#[track_caller]
fn assert_created(r: &Resp, repo: &str, digest: &str) {
    assert_status(r, 201);
    assert_eq!(
        r.location(),
        format!("/v2/{repo}/blobs/{digest}"),
        "{}",
        r.describe()
    );
    assert_header(r, "docker-content-digest", digest);
}

// ---------------------------------------------------------------------------------------------
// Monolithic

#[tokio::test]
async fn monolithic_post_with_digest() {
    let repo = repo("up-mono");
    let data = random_bytes(5000);
    let d = sha256(&data);
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data.clone())
        .send()
        .await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;
    // Pushing the same blob again is fine.
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data.clone())
        .send()
        .await;
    assert_created(&r, &repo, &d);
}

/// Around 1 MiB, the size up to which a blob pushed whole is verified in memory and stored in one
/// write (berth_core::uploads::SMALL_BLOB_BYTES); above it the bytes already read go first into
/// a regular upload. Both sides, with a Content-Length and streamed without one, store exactly
/// the bytes sent; a wrong digest on either side stores nothing.
#[tokio::test]
async fn monolithic_around_the_small_blob_bound() {
    let repo = repo("up-mono-bound");
    for size in [1024 * 1024, 1024 * 1024 + 1, 1024 * 1024 + 70_001] {
        for streamed in [false, true] {
            let data = random_bytes(size);
            let d = sha256(&data);
            let pieces: Vec<Vec<u8>> = data.chunks(65_537).map(|c| c.to_vec()).collect();
            let send = |digest: String| {
                let req = post(format!("/v2/{repo}/blobs/uploads/?digest={digest}"));
                if streamed { req.stream(pieces.clone()) } else { req.body(data.clone()) }
            };
            let r = send(unknown_digest()).send().await;
            assert_oci_error(&r, 400, "DIGEST_INVALID");
            assert_no_blob(&repo, &d).await;
            let r = send(d.clone()).send().await;
            assert_created(&r, &repo, &d);
            assert_blob(&repo, &d, &data).await;
        }
    }
}

#[tokio::test]
async fn monolithic_post_with_wrong_digest_stores_nothing() {
    let repo = repo("up-mono-wrong");
    push_blob(&repo, b"keep the repository non-empty").await;
    let data = random_bytes(300);
    let claimed = unknown_digest();
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={claimed}"))
        .body(data.clone())
        .send()
        .await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
    assert_no_blob(&repo, &claimed).await;
    assert_no_blob(&repo, &sha256(&data)).await;
}

#[tokio::test]
async fn monolithic_sha512() {
    let repo = repo("up-mono-512");
    let data = random_bytes(4096);
    let d = sha512(&data);
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data.clone())
        .send()
        .await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;

    let wrong = sha512(b"other");
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={wrong}"))
        .body(data.clone())
        .send()
        .await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
    assert_no_blob(&repo, &wrong).await;
}

#[tokio::test]
async fn monolithic_with_unsupported_algorithm() {
    let repo = repo("up-mono-alg");
    push_blob(&repo, b"x").await;
    for d in [
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
        format!("sha384:{}", "0".repeat(96)),
    ] {
        let r = post(format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(&b"data"[..])
            .send()
            .await;
        assert_oci_error(&r, 400, "UNSUPPORTED");
        assert_no_blob(&repo, &sha256(b"data")).await;
    }
}

fn malformed_digests() -> Vec<String> {
    let hex64 = "0".repeat(64);
    vec![
        "sha256:zzz".into(),
        "sha256".into(),
        "sha256:".into(),
        format!(":{hex64}"),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "0".repeat(63)),
        format!("sha512:{hex64}"),
        format!("sha256:{hex64}%20"),
        "not-a-digest".into(),
    ]
}

#[tokio::test]
async fn monolithic_with_malformed_digest() {
    let repo = repo("up-mono-malformed");
    push_blob(&repo, b"x").await;
    for d in malformed_digests() {
        let r = post(format!("/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(&b"data"[..])
            .send()
            .await;
        assert_oci_error(&r, 400, "DIGEST_INVALID");
    }
    assert_no_blob(&repo, &sha256(b"data")).await;
}

/// A monolithic POST whose body ends before its Content-Length: 400 SIZE_INVALID, nothing stored.
#[tokio::test]
async fn monolithic_with_short_body_is_size_invalid() {
    let repo = repo("up-mono-short");
    push_blob(&repo, b"x").await;
    let data = b"0123456789";
    let d = sha256(data);
    let t = target();
    let req = format!(
        "POST {}/v2/{repo}/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: {}\r\nContent-Length: 20\r\n\
         Connection: close\r\n\r\n0123456789",
        t.prefix,
        t.host_header()
    );
    let (status, text) = raw_exchange(req.as_bytes(), true, Duration::from_secs(10)).await;
    assert_eq!(status, Some(400), "expected 400 SIZE_INVALID, got:\n{text}");
    assert!(
        text.contains("\"SIZE_INVALID\""),
        "expected code SIZE_INVALID, got:\n{text}"
    );
    assert_no_blob(&repo, &d).await;
}

// ---------------------------------------------------------------------------------------------
// POST + PUT, PATCH

#[tokio::test]
async fn post_answers_202_with_a_session() {
    let repo = repo("up-post");
    let r = post(format!("/v2/{repo}/blobs/uploads/")).send().await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-0");
    assert_api_version(&r);
    // Status of an empty session.
    let s = get(loc.as_str()).send().await;
    assert_upload_reply(&s, 204, &repo, "0-0");
    // Two POSTs give two sessions.
    let r2 = post(format!("/v2/{repo}/blobs/uploads/")).send().await;
    assert_ne!(upload_id(&r2.location()), upload_id(&loc));
}

#[tokio::test]
async fn post_then_put_with_the_whole_blob() {
    let repo = repo("up-post-put");
    let loc = start_upload(&repo).await;
    let data = random_bytes(10_000);
    let d = sha256(&data);
    let r = put(with_query(&loc, &format!("digest={d}")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;
}

#[tokio::test]
async fn chunked_upload_with_content_range() {
    let repo = repo("up-chunked");
    let data = random_bytes(30_000);
    let d = sha256(&data);
    let mut loc = start_upload(&repo).await;
    let mut offset = 0;
    for chunk in data.chunks(12_000) {
        let end = offset + chunk.len() - 1;
        let r = patch(loc.as_str())
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{end}"))
            .body(chunk.to_vec())
            .send()
            .await;
        loc = assert_upload_reply(&r, 202, &repo, &format!("0-{end}"));
        offset = end + 1;
        let s = get(loc.as_str()).send().await;
        assert_upload_reply(&s, 204, &repo, &format!("0-{end}"));
        assert!(s.body.is_empty());
    }
    let r = put(with_query(&loc, &format!("digest={d}"))).send().await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;
}

#[tokio::test]
async fn chunked_upload_with_last_chunk_in_put() {
    let repo = repo("up-chunked-put");
    let data = random_bytes(9_000);
    let d = sha256(&data);
    let loc = start_upload(&repo).await;
    let r = patch_chunk(&loc, "0-4999", data[..5000].to_vec()).await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-4999");
    let r = put(with_query(&loc, &format!("digest={d}")))
        .header("content-range", "5000-8999")
        .body(data[5000..].to_vec())
        .send()
        .await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;
}

#[tokio::test]
async fn chunks_without_content_range() {
    let repo = repo("up-no-range");
    let data = random_bytes(7_000);
    let d = sha256(&data);
    let mut loc = start_upload(&repo).await;
    let mut end = 0;
    for chunk in data.chunks(2_500) {
        end += chunk.len();
        let r = patch(loc.as_str()).body(chunk.to_vec()).send().await;
        loc = assert_upload_reply(&r, 202, &repo, &format!("0-{}", end - 1));
    }
    let r = put(with_query(&loc, &format!("digest={d}"))).send().await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;
}

/// docker's way: one PATCH with a chunked-transfer body, neither Content-Length nor Content-Range.
#[tokio::test]
async fn streamed_patch_without_content_length() {
    let repo = repo("up-stream");
    let data = random_bytes(3 * 1024 * 1024 + 17);
    let d = sha256(&data);
    let loc = start_upload(&repo).await;
    let pieces: Vec<Vec<u8>> = data.chunks(100_003).map(|c| c.to_vec()).collect();
    let r = patch(loc.as_str())
        .header("content-type", "application/octet-stream")
        .stream(pieces)
        .send()
        .await;
    let loc = assert_upload_reply(&r, 202, &repo, &format!("0-{}", data.len() - 1));
    let r = put(with_query(&loc, &format!("digest={d}"))).send().await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;
}

#[tokio::test]
async fn two_streamed_patches_then_put() {
    let repo = repo("up-stream-2");
    let data = random_bytes(50_000);
    let d = sha256(&data);
    let loc = start_upload(&repo).await;
    let r = patch(loc.as_str())
        .stream(vec![data[..10_000].to_vec(), data[10_000..20_000].to_vec()])
        .send()
        .await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-19999");
    let r = patch(loc.as_str())
        .stream(vec![data[20_000..].to_vec()])
        .send()
        .await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-49999");
    let r = put(with_query(&loc, &format!("digest={d}"))).send().await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;
}

#[tokio::test]
async fn chunked_sha512_upload() {
    let repo = repo("up-chunked-512");
    let data = random_bytes(20_000);
    let d = sha512(&data);
    let loc = start_upload(&repo).await;
    let r = patch_chunk(&loc, "0-9999", data[..10_000].to_vec()).await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-9999");
    let r = patch(loc.as_str())
        .stream(vec![data[10_000..].to_vec()])
        .send()
        .await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-19999");
    let r = put(with_query(&loc, &format!("digest={d}"))).send().await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;
}

#[tokio::test]
async fn chunked_sha512_upload_with_wrong_digest() {
    let repo = repo("up-chunked-512-wrong");
    push_blob(&repo, b"x").await;
    let data = random_bytes(2_000);
    let loc = start_upload(&repo).await;
    let r = patch(loc.as_str()).body(data.clone()).send().await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-1999");
    let wrong = sha512(b"not it");
    let r = put(with_query(&loc, &format!("digest={wrong}")))
        .send()
        .await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
    assert_no_blob(&repo, &wrong).await;
    assert_no_blob(&repo, &sha512(&data)).await;
}

/// Past one multipart part on every object store (S3 5 MiB, R2 `PART_SIZE`, 8 MiB by default),
/// in chunks under Lambda's request cap: a sha512 digest is verified by reading the upload back,
/// which there completes the multipart upload first (Lambda refused this before the shared
/// upload engine).
#[tokio::test]
async fn chunked_sha512_upload_past_a_part() {
    let repo = repo("up-chunked-512-parts");
    let chunk = 3 * 1024 * 1024 + 1;
    let data = random_bytes(3 * chunk + 7);
    let d = sha512(&data);
    let mut loc = start_upload(&repo).await;
    for start in (0..data.len()).step_by(chunk) {
        let end = (start + chunk).min(data.len());
        let range = format!("{start}-{}", end - 1);
        let r = patch_chunk(&loc, &range, data[start..end].to_vec()).await;
        loc = assert_upload_reply(&r, 202, &repo, &format!("0-{}", end - 1));
    }
    let r = put(with_query(&loc, &format!("digest={d}"))).send().await;
    assert_created(&r, &repo, &d);
    assert_blob(&repo, &d, &data).await;
}

// ---------------------------------------------------------------------------------------------
// Out-of-order and bad chunks

#[tokio::test]
async fn chunk_with_a_gap_is_416_with_range() {
    let repo = repo("up-gap");
    let data = random_bytes(3_000);
    let loc = start_upload(&repo).await;
    let r = patch_chunk(&loc, "0-999", data[..1000].to_vec()).await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-999");
    // Skips 1000..1499.
    let r = patch_chunk(&loc, "1500-2999", data[1500..].to_vec()).await;
    assert_oci_error(&r, 416, "BLOB_UPLOAD_INVALID");
    assert_header(&r, "range", "0-999");
    // The session is intact: the right chunk continues it.
    let s = get(loc.as_str()).send().await;
    assert_upload_reply(&s, 204, &repo, "0-999");
    let r = patch_chunk(&loc, "1000-2999", data[1000..].to_vec()).await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-2999");
    finish_upload(&repo, &loc, &data).await;
}

#[tokio::test]
async fn chunk_overlapping_is_416_with_range() {
    let repo = repo("up-overlap");
    let data = random_bytes(3_000);
    let loc = start_upload(&repo).await;
    let r = patch_chunk(&loc, "0-1999", data[..2000].to_vec()).await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-1999");
    for (a, b) in [(1000usize, 2999usize), (0, 999), (1999, 2999)] {
        let r = patch_chunk(&loc, format!("{a}-{b}"), data[a..=b].to_vec()).await;
        assert_oci_error(&r, 416, "BLOB_UPLOAD_INVALID");
        assert_header(&r, "range", "0-1999");
    }
    let r = patch_chunk(&loc, "2000-2999", data[2000..].to_vec()).await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-2999");
    finish_upload(&repo, &loc, &data).await;
}

#[tokio::test]
async fn first_chunk_not_at_zero_is_416() {
    let repo = repo("up-first-not-zero");
    let loc = start_upload(&repo).await;
    let r = patch_chunk(&loc, "10-19", vec![7u8; 10]).await;
    assert_oci_error(&r, 416, "BLOB_UPLOAD_INVALID");
    assert_header(&r, "range", "0-0");
}

#[tokio::test]
async fn chunk_length_contradicting_content_range_is_400() {
    let repo = repo("up-range-len");
    let loc = start_upload(&repo).await;
    // Says 10 bytes, sends 5.
    let r = patch_chunk(&loc, "0-9", vec![1u8; 5]).await;
    assert_oci_error(&r, 400, "BLOB_UPLOAD_INVALID");
    // Says 5 bytes, sends 10.
    let r = patch_chunk(&loc, "0-4", vec![1u8; 10]).await;
    assert_oci_error(&r, 400, "BLOB_UPLOAD_INVALID");
}

#[tokio::test]
async fn malformed_content_range_is_400() {
    let repo = repo("up-range-malformed");
    let loc = start_upload(&repo).await;
    for cr in ["abc", "0-", "-4", "0-x", "0--4", "x-4"] {
        let r = patch_chunk(&loc, cr, vec![1u8; 5]).await;
        assert_oci_error(&r, 400, "BLOB_UPLOAD_INVALID");
    }
}

// ---------------------------------------------------------------------------------------------
// PUT outcomes

#[tokio::test]
async fn put_with_wrong_digest_discards_the_session() {
    let repo = repo("up-put-wrong");
    push_blob(&repo, b"x").await;
    let data = random_bytes(4_000);
    let loc = start_upload(&repo).await;
    let r = patch(loc.as_str()).body(data.clone()).send().await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-3999");
    let claimed = unknown_digest();
    let r = put(with_query(&loc, &format!("digest={claimed}")))
        .send()
        .await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
    // Visible under neither digest.
    assert_no_blob(&repo, &claimed).await;
    assert_no_blob(&repo, &sha256(&data)).await;
    // The session is gone.
    assert_oci_error(&get(loc.as_str()).send().await, 404, "BLOB_UPLOAD_UNKNOWN");
    let d = sha256(&data);
    let r = put(with_query(&loc, &format!("digest={d}"))).send().await;
    assert_oci_error(&r, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_no_blob(&repo, &d).await;
}

#[tokio::test]
async fn put_with_wrong_digest_and_last_chunk() {
    let repo = repo("up-put-wrong-chunk");
    push_blob(&repo, b"x").await;
    let loc = start_upload(&repo).await;
    let data = random_bytes(500);
    let claimed = unknown_digest();
    let r = put(with_query(&loc, &format!("digest={claimed}")))
        .body(data.clone())
        .send()
        .await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
    assert_no_blob(&repo, &claimed).await;
    assert_no_blob(&repo, &sha256(&data)).await;
}

#[tokio::test]
async fn put_without_digest_is_digest_invalid() {
    let repo = repo("up-put-no-digest");
    let loc = start_upload(&repo).await;
    let r = patch(loc.as_str()).body(&b"abc"[..]).send().await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-2");
    let r = put(loc.as_str()).send().await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
    let r = put(with_query(&loc, "digest=")).send().await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
}

#[tokio::test]
async fn put_with_malformed_or_unsupported_digest() {
    let repo = repo("up-put-bad-digest");
    for d in malformed_digests() {
        let loc = start_upload(&repo).await;
        let r = put(with_query(&loc, &format!("digest={d}")))
            .body(&b"abc"[..])
            .send()
            .await;
        assert_oci_error(&r, 400, "DIGEST_INVALID");
    }
    let loc = start_upload(&repo).await;
    let r = put(with_query(
        &loc,
        "digest=md5:d41d8cd98f00b204e9800998ecf8427e",
    ))
    .body(&b"abc"[..])
    .send()
    .await;
    assert_oci_error(&r, 400, "UNSUPPORTED");
}

#[tokio::test]
async fn finished_upload_is_unknown() {
    let repo = repo("up-finished");
    let data = b"finished".to_vec();
    let d = sha256(&data);
    let loc = start_upload(&repo).await;
    assert_created(
        &put(with_query(&loc, &format!("digest={d}")))
            .body(data.clone())
            .send()
            .await,
        &repo,
        &d,
    );
    assert_oci_error(&get(loc.as_str()).send().await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_oci_error(
        &patch(loc.as_str()).body(&b"more"[..]).send().await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_oci_error(
        &put(with_query(&loc, &format!("digest={d}"))).send().await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_oci_error(
        &delete(loc.as_str()).send().await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
}

// ---------------------------------------------------------------------------------------------
// Cancel, forged and foreign ids

#[tokio::test]
async fn cancel_discards_the_session() {
    let repo = repo("up-cancel");
    let data = random_bytes(1_000);
    let loc = start_upload(&repo).await;
    let r = patch(loc.as_str()).body(data.clone()).send().await;
    let loc = assert_upload_reply(&r, 202, &repo, "0-999");
    let r = delete(loc.as_str()).send().await;
    assert_status(&r, 204);
    assert_oci_error(&get(loc.as_str()).send().await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_oci_error(
        &patch(loc.as_str()).body(&b"x"[..]).send().await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    let d = sha256(&data);
    assert_oci_error(
        &put(with_query(&loc, &format!("digest={d}"))).send().await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_oci_error(
        &delete(loc.as_str()).send().await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_no_blob(&repo, &d).await;
}

#[tokio::test]
async fn forged_upload_ids_are_unknown() {
    let repo = repo("up-forged");
    let real = upload_id(&start_upload(&repo).await);
    let (rand, mac) = real.split_once('.').unwrap();
    let flip = |s: &str| -> String {
        let mut c: Vec<char> = s.chars().collect();
        c[0] = if c[0] == '0' { '1' } else { '0' };
        c.into_iter().collect()
    };
    let d = sha256(b"x");
    for id in [
        format!("{}.{}", hex_of(16), hex_of(16)), // random, well-formed
        format!("{}.{mac}", flip(rand)),          // other random part, same MAC
        format!("{rand}.{}", flip(mac)),          // tampered MAC
        rand.to_string(),                         // MAC missing
        "abc".to_string(),
        "00000000-0000-0000-0000-000000000000".to_string(),
        format!("{real}x"),
        "..".to_string(),
    ] {
        assert_upload_unknown_to_every_method(&format!("/v2/{repo}/blobs/uploads/{id}"), &d).await;
    }
    assert_no_blob(&repo, &d).await;
}

/// One PATCH of `body` with `Content-Range: range` to the upload at `loc`.
async fn patch_chunk(loc: &str, range: impl AsRef<str>, body: impl Into<bytes::Bytes>) -> Resp {
    patch(loc).header("content-range", range).body(body).send().await
}

/// The final PUT with the digest of `data`: 201, and the blob serves exactly `data`.
async fn finish_upload(repo: &str, loc: &str, data: &[u8]) {
    let d = sha256(data);
    assert_created(&put(with_query(loc, &format!("digest={d}"))).send().await, repo, &d);
    assert_blob(repo, &d, data).await;
}

/// Status, PATCH, PUT and DELETE on `loc` all answer 404 BLOB_UPLOAD_UNKNOWN.
async fn assert_upload_unknown_to_every_method(loc: &str, digest: &str) {
    assert_oci_error(&get(loc).send().await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_oci_error(&patch(loc).body(&b"x"[..]).send().await, 404, "BLOB_UPLOAD_UNKNOWN");
    let r = put(format!("{loc}?digest={digest}")).body(&b"x"[..]).send().await;
    assert_oci_error(&r, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_oci_error(&delete(loc).send().await, 404, "BLOB_UPLOAD_UNKNOWN");
}

fn hex_of(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn upload_id_of_another_repository_is_unknown() {
    let a = repo("up-foreign-a");
    let b = repo("up-foreign-b");
    let loc_a = start_upload(&a).await;
    let r = patch(loc_a.as_str()).body(&b"hello "[..]).send().await;
    let loc_a = assert_upload_reply(&r, 202, &a, "0-5");
    let id = upload_id(&loc_a);
    let foreign = format!("/v2/{b}/blobs/uploads/{id}");
    let d = sha256(b"hello world");
    assert_upload_unknown_to_every_method(&foreign, &d).await;
    assert_no_blob(&b, &d).await;
    // The owner's session is untouched.
    let r = put(with_query(&loc_a, &format!("digest={d}")))
        .body(&b"world"[..])
        .send()
        .await;
    assert_created(&r, &a, &d);
    assert_blob(&a, &d, b"hello world").await;
}

// ---------------------------------------------------------------------------------------------
// Cross-repository mount

#[tokio::test]
async fn mount_from_a_repository_that_has_the_blob() {
    let from = repo("up-mount-src");
    let to = repo("up-mount-dst");
    let data = random_bytes(2_000);
    let d = push_blob(&from, &data).await;
    let r = post(format!("/v2/{to}/blobs/uploads/?mount={d}&from={from}"))
        .send()
        .await;
    assert_created(&r, &to, &d);
    assert_blob(&to, &d, &data).await;
    // Deleting it in the target leaves the source alone.
    assert_status(&delete(format!("/v2/{to}/blobs/{d}")).send().await, 202);
    assert_blob(&from, &d, &data).await;
}

#[tokio::test]
async fn mount_sha512_blob() {
    let from = repo("up-mount512-src");
    let to = repo("up-mount512-dst");
    let data = random_bytes(2_000);
    let d = sha512(&data);
    assert_status(
        &post(format!("/v2/{from}/blobs/uploads/?digest={d}"))
            .body(data.clone())
            .send()
            .await,
        201,
    );
    let r = post(format!("/v2/{to}/blobs/uploads/?mount={d}&from={from}"))
        .send()
        .await;
    assert_created(&r, &to, &d);
    assert_blob(&to, &d, &data).await;
}

#[tokio::test]
async fn mount_falls_back_to_an_upload_when_the_source_lacks_the_blob() {
    let from = repo("up-mount-nosrc");
    let to = repo("up-mount-fallback");
    push_blob(&from, b"something else").await;
    let data = random_bytes(1_500);
    let d = sha256(&data);
    let r = post(format!("/v2/{to}/blobs/uploads/?mount={d}&from={from}"))
        .send()
        .await;
    let loc = assert_upload_reply(&r, 202, &to, "0-0");
    assert_no_blob(&to, &d).await;
    // The session works like any other.
    let r = put(with_query(&loc, &format!("digest={d}")))
        .body(data.clone())
        .send()
        .await;
    assert_created(&r, &to, &d);
    assert_blob(&to, &d, &data).await;

    // A source repository that does not exist at all: the same fallback.
    let nowhere = common::repo("up-mount-nowhere");
    let r = post(format!(
        "/v2/{to}/blobs/uploads/?mount={}&from={nowhere}",
        unknown_digest()
    ))
    .send()
    .await;
    assert_upload_reply(&r, 202, &to, "0-0");
}

#[tokio::test]
async fn mount_with_malformed_digest() {
    let from = repo("up-mount-bad-src");
    let to = repo("up-mount-bad-dst");
    push_blob(&from, b"x").await;
    for d in ["sha256:abc", "garbage"] {
        let r = post(format!("/v2/{to}/blobs/uploads/?mount={d}&from={from}"))
            .send()
            .await;
        assert_oci_error(&r, 400, "DIGEST_INVALID");
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency: no 5xx, and a blob is only ever visible with content matching its digest.

#[tokio::test]
async fn concurrent_monolithic_pushes_of_one_blob() {
    let repo = repo("up-concurrent-mono");
    let data = random_bytes(200_000);
    let d = sha256(&data);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (repo, data, d) = (repo.clone(), data.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            post(format!("/v2/{repo}/blobs/uploads/?digest={d}"))
                .body(data)
                .send()
                .await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_created(&r, &repo, &d);
    }
    assert_blob(&repo, &d, &data).await;
}

#[tokio::test]
async fn concurrent_patches_on_one_session() {
    let repo = repo("up-concurrent-patch");
    let data = random_bytes(100_000);
    let d = sha256(&data);
    let loc = start_upload(&repo).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (loc, data) = (loc.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            patch_chunk(&loc, format!("0-{}", data.len() - 1), data).await
        }));
    }
    let mut last_loc = None;
    for t in tasks {
        let r = t.await.unwrap();
        assert_below_500(&r);
        match r.status {
            202 => last_loc = Some(r.location()),
            416 => {
                // This chunk did not start at the offset the registry had once the winner was
                // in: 416 BLOB_UPLOAD_INVALID, with the Range to resume from.
                assert_oci_error(&r, 416, "BLOB_UPLOAD_INVALID");
                let range = r
                    .header("range")
                    .unwrap_or_else(|| panic!("416 without Range:\n{}", r.describe()));
                assert!(range.starts_with("0-"), "Range {range:?}");
            }
            _ => {
                // A concurrent writer may make this one fail otherwise; it must still be an OCI error.
                assert!(r.status >= 400, "{}", r.describe());
                assert!(r.json()["errors"].is_array(), "{}", r.describe());
            }
        }
    }
    let loc = last_loc.expect("at least one PATCH must succeed");
    let r = put(with_query(&loc, &format!("digest={d}"))).send().await;
    assert_below_500(&r);
    if r.status == 201 {
        // Whatever happened, what is visible must be the verified content.
        assert_blob(&repo, &d, &data).await;
    } else {
        assert_oci_error(
            &r,
            r.status,
            r.json()["errors"][0]["code"].as_str().unwrap_or("?"),
        );
        assert_no_blob(&repo, &d).await;
    }
}

#[tokio::test]
async fn concurrent_manifest_pushes_to_one_tag() {
    let repo = repo("up-concurrent-tag");
    let mut pushed = Vec::new();
    for _ in 0..6 {
        pushed.push(push_image(&repo, "").await);
    }
    let mut tasks = Vec::new();
    for p in &pushed {
        let (repo, bytes) = (repo.clone(), p.bytes.clone());
        tasks.push(tokio::spawn(async move {
            put_manifest(&repo, "race", OCI_MANIFEST, &bytes).await
        }));
    }
    for t in tasks {
        assert_status(&t.await.unwrap(), 201);
    }
    let r = get(format!("/v2/{repo}/manifests/race")).send().await;
    assert_status(&r, 200);
    assert!(
        pushed.iter().any(|p| p.bytes == r.body),
        "the tag points to none of the pushed manifests"
    );
    assert_eq!(sha256(&r.body), r.header("docker-content-digest").unwrap());
}

/// Racing PATCHes with *different* bytes for the same range of one session: whichever the
/// registry keeps, a blob it then accepts under digest D must have content whose digest is D.
#[tokio::test]
async fn racing_different_chunks_never_publish_mismatched_content() {
    let repo = repo("up-race-content");
    let mut problems = Vec::new();
    let mut published = 0;
    for round in 0..8 {
        let loc = start_upload(&repo).await;
        let datas: Vec<Vec<u8>> = (0..4).map(|_| random_bytes(1 << 20)).collect();
        let mut tasks = Vec::new();
        for data in &datas {
            let (loc, data) = (loc.clone(), data.clone());
            tasks.push(tokio::spawn(async move {
                patch(loc.as_str())
                    .header("content-range", format!("0-{}", data.len() - 1))
                    .body(data)
                    .try_send()
                    .await
            }));
        }
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            // A refused PATCH may be answered before its body is read and the connection
            // closed while the client still writes: that one simply lost the race.
            let Ok(r) = t.await.unwrap() else { continue };
            assert_below_500(&r);
            if r.status == 202 {
                winners.push((i, r.location()));
            }
        }
        let Some((w, wloc)) = winners.first().cloned() else {
            continue;
        };
        let d = sha256(&datas[w]);
        let r = put(with_query(&wloc, &format!("digest={d}"))).send().await;
        assert_below_500(&r);
        if r.status == 201 {
            published += 1;
            let g = get_blob(&repo, &d, &[]).await;
            assert_status(&g, 200);
            if sha256(&g.body) != d {
                let which = datas.iter().position(|x| x[..] == g.body[..]);
                problems.push(format!(
                    "round {round}: {} 202s; blob published as {d} (PATCH #{w}) holds {} bytes with digest {} (= PATCH {which:?})",
                    winners.len(),
                    g.body.len(),
                    sha256(&g.body)
                ));
            }
        }
    }
    assert!(published > 0, "no round published a blob: the race was never exercised");
    assert!(
        problems.is_empty(),
        "content that does not match its digest was published:\n{}",
        problems.join("\n")
    );
}

/// A cancel once ignored the upload's claim: racing a completing PUT, it removed the data from
/// under it and the PUT answered 500. Now the cancel waits its turn (409 while the PUT writes):
/// whatever the interleaving, nothing is a 5xx, a 201 means the blob is there and whole, and a
/// completed upload is never also reported cancelled.
#[tokio::test]
async fn cancel_racing_a_completing_put_never_breaks_either() {
    let repo = repo("up-cancel-race");
    for round in 0..20 {
        let data = random_bytes(256 * 1024);
        let d = sha256(&data);
        let loc = start_upload(&repo).await;
        let completing = {
            let (loc, d, data) = (loc.clone(), d.clone(), data.clone());
            tokio::spawn(async move { put(with_query(&loc, &format!("digest={d}"))).body(data).send().await })
        };
        let cancelling = {
            let loc = loc.clone();
            tokio::spawn(async move { delete(loc).send().await })
        };
        let (done, cancelled) = (completing.await.unwrap(), cancelling.await.unwrap());
        assert_below_500(&done);
        assert_below_500(&cancelled);
        assert!(
            !(done.status == 201 && cancelled.status == 204),
            "round {round}: the upload completed and was cancelled:\n{}\n{}",
            done.describe(),
            cancelled.describe()
        );
        if done.status == 201 {
            assert_blob(&repo, &d, &data).await;
        }
    }
}
