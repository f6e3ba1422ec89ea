//! The health endpoints load balancers probe and the request id on every response (issue 15).
//! Both are answered by the core, so they hold in every runtime, with or without auth.

mod common;

use common::*;

#[tokio::test]
async fn healthz_and_readyz_answer_without_auth_and_say_nothing_else() {
    for (path, text) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let r = get(path).send().await;
        assert_status(&r, 200);
        assert_eq!(r.text(), text, "{path}:\n{}", r.describe());
        assert_header(&r, "cache-control", "no-store");
        let r = head(path).send().await;
        assert_status(&r, 200);
        let r = post(path).send().await;
        assert_status(&r, 405);
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let repo = repo("request-id");
    let digest = push_blob(&repo, b"request-id").await;
    let paths = [
        "/v2/".to_owned(),
        format!("/v2/{repo}/blobs/{digest}"),
        format!("/v2/{repo}/manifests/nope"),
        format!("/v2/{repo}/no/such/route"),
        "/healthz".to_owned(),
    ];
    let mut generated = Vec::new();
    for path in &paths {
        // The caller's id, when sane, comes back as it was sent.
        let r = get(path).header("x-request-id", "ci-run-42.step:7").send().await;
        assert_eq!(r.header("x-request-id").as_deref(), Some("ci-run-42.step:7"), "{path}:\n{}", r.describe());
        // Otherwise one is made up: 32 hex digits, a new one each time.
        for sent in [None, Some("two words"), Some("a=b")] {
            let mut req = get(path);
            if let Some(id) = sent {
                req = req.header("x-request-id", id);
            }
            let r = req.send().await;
            let id = r.header("x-request-id").unwrap_or_else(|| panic!("{path}: no X-Request-Id:\n{}", r.describe()));
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{path}: {id:?}");
            generated.push(id);
        }
    }
    let n = generated.len();
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), n, "request ids repeat: {generated:?}");
}
