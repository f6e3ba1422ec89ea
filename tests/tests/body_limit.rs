//! A runtime that caps request bodies (`BERTH_MAX_BODY`, e.g. Lambda's 6 MB event): a body at
//! the cap is taken, one over it is 413 SIZE_INVALID saying how to push instead, and upload
//! responses advertise the cap.
//!
//! The cap is checked against what the target advertises (`OCI-Chunk-Max-Length` on an upload
//! POST): a target with a cap and no BERTH_MAX_BODY, or the reverse, fails. A target with no cap
//! at all (`berth serve`) cannot apply: the tests record a skip (common::skip), listed at the end
//! of the run. The Worker's cap is tested by tests/edge/edge_test.py, whose limited instance
//! serves blobs by redirect to storage this suite cannot fill; tests/edge/run.sh leaves this file
//! out.

mod common;

use common::*;

/// The target's cap, after checking it advertises the one BERTH_MAX_BODY names; None (a skip
/// recorded) when it has none.
async fn cap() -> Option<usize> {
    let r = post(format!("/v2/{}/blobs/uploads/", repo("cap-probe")))
        .send()
        .await;
    assert_status(&r, 202);
    let advertised = r.header("oci-chunk-max-length");
    match (max_body(), advertised) {
        (Some(max), advertised) => {
            assert_eq!(
                advertised,
                Some(max.to_string()),
                "BERTH_MAX_BODY={max}, but the upload POST advertises another cap:\n{}",
                r.describe()
            );
            Some(max)
        }
        (None, Some(a)) => panic!(
            "the target caps request bodies at {a} bytes (OCI-Chunk-Max-Length), but \
             BERTH_MAX_BODY is unset: set BERTH_MAX_BODY={a} to test the cap"
        ),
        (None, None) => {
            skip("the target has no request body limit");
            None
        }
    }
}

#[tokio::test]
async fn body_over_the_cap_is_413_and_says_how_to_push() {
    let Some(max) = cap().await else { return };
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
    let Some(max) = cap().await else { return };
    let repo = repo("cap-at");
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
