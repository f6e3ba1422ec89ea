//! Uploads whose body may be the whole blob (docker's one streamed PATCH, a monolithic POST or
//! PUT), which a runtime may hash natively (the Worker: `crypto.DigestStream`, no byte through
//! wasm), the chunks that may follow such a body, and the pulls of blobs stored that way (first
//! and cached GETs, ranges before anything is cached). Bodies are a little over one 8 MiB part
//! where the target takes them, so the Worker cuts a part and stages a tail.

mod common;

use common::*;

/// A body size near `wanted` that the target accepts in one request.
fn sized(wanted: usize) -> usize {
    max_body().map_or(wanted, |cap| wanted.min(cap))
}

fn pieces(data: &[u8]) -> Vec<Vec<u8>> {
    data.chunks(256 * 1024 + 7).map(|c| c.to_vec()).collect()
}

async fn streamed_patch(loc: &str, data: &[u8]) -> Resp {
    patch(loc).header("content-type", "application/octet-stream").stream(pieces(data)).send().await
}

/// docker: POST, one PATCH with a chunked body (no Content-Length, no Content-Range), empty PUT.
#[tokio::test]
async fn docker_style_upload_with_right_and_wrong_digest() {
    let repo = repo("whole-docker");
    let data = random_bytes(sized(9 * 1024 * 1024 + 5));
    let digest = sha256(&data);
    let r = streamed_patch(&start_upload(&repo).await, &data).await;
    assert_status(&r, 202);
    assert_header(&r, "range", &format!("0-{}", data.len() - 1));
    let wrong = sha256(b"not these bytes");
    let r = put(with_query(&r.location(), &format!("digest={wrong}"))).send().await;
    let err = assert_oci_error(&r, 400, "DIGEST_INVALID");
    assert!(err.to_string().contains(&digest), "the error names the actual digest: {err}");
    assert_no_blob(&repo, &wrong).await;
    assert_no_blob(&repo, &digest).await;

    let r = streamed_patch(&start_upload(&repo).await, &data).await;
    assert_status(&r, 202);
    let r = put(with_query(&r.location(), &format!("digest={digest}"))).send().await;
    assert_status(&r, 201);
    assert_header(&r, "docker-content-digest", &digest);
    assert_blob(&repo, &digest, &data).await;
}

/// A first PATCH without Content-Range (taken whole, maybe hashed natively), then chunks with
/// Content-Range, the last in the PUT: the digest covers every byte, not the first body's.
#[tokio::test]
async fn chunks_after_a_whole_body_patch() {
    let first = sized(9 * 1024 * 1024 + 11);
    let data = random_bytes(first + 3 * 1024 * 1024 + 333);
    let (a, b) = (first, first + 2 * 1024 * 1024);
    let repo = repo("whole-then-chunks");
    for wrong in [true, false] {
        let r = streamed_patch(&start_upload(&repo).await, &data[..a]).await;
        assert_status(&r, 202);
        let r = patch(r.location())
            .header("content-range", format!("{a}-{}", b - 1))
            .body(data[a..b].to_vec())
            .send()
            .await;
        assert_status(&r, 202);
        assert_header(&r, "range", &format!("0-{}", b - 1));
        let digest = if wrong { sha256(&data[..a]) } else { sha256(&data) };
        let r = put(with_query(&r.location(), &format!("digest={digest}")))
            .header("content-range", format!("{b}-{}", data.len() - 1))
            .body(data[b..].to_vec())
            .send()
            .await;
        if wrong {
            assert_oci_error(&r, 400, "DIGEST_INVALID");
            assert_no_blob(&repo, &digest).await;
            assert_no_blob(&repo, &sha256(&data)).await;
        } else {
            assert_status(&r, 201);
            assert_blob(&repo, &digest, &data).await;
        }
    }
}

/// POST then PUT with the whole blob, and a monolithic POST ?digest=, both with a wrong digest:
/// nothing becomes visible; then the same bodies with the right one.
#[tokio::test]
async fn whole_body_put_and_post_with_a_wrong_digest_store_nothing() {
    let repo = repo("whole-put");
    let data = random_bytes(sized(9 * 1024 * 1024 + 1));
    let digest = sha256(&data);
    let wrong = sha256(b"wrong");
    let r = put(with_query(&start_upload(&repo).await, &format!("digest={wrong}"))).body(data.clone()).send().await;
    assert_oci_error(&r, 400, "DIGEST_INVALID");
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={wrong}")).body(data.clone()).send().await;
    if r.status != 202 {
        assert_oci_error(&r, 400, "DIGEST_INVALID");
    }
    assert_no_blob(&repo, &wrong).await;
    assert_no_blob(&repo, &digest).await;

    let r = put(with_query(&start_upload(&repo).await, &format!("digest={digest}"))).body(data.clone()).send().await;
    assert_status(&r, 201);
    assert_blob(&repo, &digest, &data).await;
}

/// The first GET (which may fill a cache from the same read) and the ones after it (which may
/// come from that cache) carry the same bytes and headers.
#[tokio::test]
async fn cached_gets_equal_the_first() {
    let repo = repo("whole-cache");
    let data = random_bytes(sized(9 * 1024 * 1024 + 3));
    let r = streamed_patch(&start_upload(&repo).await, &data).await;
    let digest = sha256(&data);
    assert_status(&put(with_query(&r.location(), &format!("digest={digest}"))).send().await, 201);
    let first = get_blob(&repo, &digest, &[]).await;
    assert_status(&first, 200);
    assert!(first.body == data, "first GET: {} bytes differ", first.body.len());
    for n in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let again = get_blob(&repo, &digest, &[]).await;
        assert_status(&again, 200);
        assert!(again.body == first.body, "GET {n} after the first: {} bytes differ", again.body.len());
        for h in ["content-length", "docker-content-digest", "etag"] {
            assert_eq!(again.header(h), first.header(h), "{h} of GET {n}");
        }
    }
}

/// A range of a blob nobody pulled yet (nothing cached), then the whole blob, then the range
/// again: each exact.
#[tokio::test]
async fn range_get_of_an_uncached_blob() {
    let repo = repo("whole-range");
    let data = random_bytes(sized(9 * 1024 * 1024 + 9));
    let r = streamed_patch(&start_upload(&repo).await, &data).await;
    let digest = sha256(&data);
    assert_status(&put(with_query(&r.location(), &format!("digest={digest}"))).send().await, 201);
    let (start, end) = (data.len() / 3, data.len() - 17);
    let range = format!("bytes={start}-{end}");
    for pass in ["uncached", "after a full GET"] {
        let r = get_blob(&repo, &digest, &[("range", &range)]).await;
        assert_status(&r, 206);
        assert_header(&r, "content-range", &format!("bytes {start}-{end}/{}", data.len()));
        assert!(r.body == data[start..=end], "range {pass}: {} bytes differ", r.body.len());
        if pass == "uncached" {
            assert_blob(&repo, &digest, &data).await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
}
