//! A runtime that caps request bodies (`BERTH_MAX_BODY`, e.g. Lambda's 6 MB event): a body at
//! the cap is taken, one over it is 413 SIZE_INVALID saying how to push instead, and upload
//! responses advertise the cap. Without BERTH_MAX_BODY these tests check nothing.

mod common;

use common::*;

#[tokio::test]
async fn body_over_the_cap_is_413_and_says_how_to_push() {
    let Some(max) = max_body() else { return };
    let repo = repo("cap-over");
    let data = random_bytes(max + 1);
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&data)))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await;
    let err = assert_oci_error(&r, 413, "SIZE_INVALID");
    let message = err["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("berth push"), "{message}");
    assert_no_blob(&repo, &sha256(&data)).await;

    let loc = start_upload(&repo).await;
    let r = patch(loc.as_str())
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{max}"))
        .body(data)
        .send()
        .await;
    assert_oci_error(&r, 413, "SIZE_INVALID");
}

#[tokio::test]
async fn body_at_the_cap_is_taken_and_the_cap_is_advertised() {
    let Some(max) = max_body() else { return };
    let repo = repo("cap-at");
    let r = post(format!("/v2/{repo}/blobs/uploads/")).send().await;
    assert_status(&r, 202);
    assert_header(&r, "oci-chunk-max-length", &max.to_string());
    let data = random_bytes(max);
    let d = sha256(&data);
    let r = post(format!("/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await;
    assert_status(&r, 201);
    assert_header(&r, "docker-content-digest", &d);
    assert_blob(&repo, &d, &data).await;
}
