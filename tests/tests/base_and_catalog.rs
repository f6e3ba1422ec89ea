//! end-1 (`GET /v2/`), the headers every response carries, and `GET /v2/_catalog`.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn base_answers_200_with_empty_object() {
    for path in ["/v2/", "/v2"] {
        let r = get(path).send().await;
        assert_status(&r, 200);
        assert_api_version(&r);
        assert_eq!(
            r.json(),
            json!({}),
            "{path}: body must be {{}}:\n{}",
            r.describe()
        );
    }
}

#[tokio::test]
async fn api_version_header_on_every_response() {
    let repo = repo("api-version");
    let digest = push_blob(&repo, b"api-version").await;
    let responses = vec![
        get("/v2/").send().await,                                // 200
        head(format!("/v2/{repo}/blobs/{digest}")).send().await, // 200 HEAD
        post(format!("/v2/{repo}/blobs/uploads/")).send().await, // 202
        get(format!("/v2/{repo}/blobs/{}", unknown_digest()))
            .send()
            .await, // 404
        get(format!("/v2/{repo}/manifests/nope")).send().await,  // 404
        get("/v2/Upper/tags/list").send().await,                 // 400
        get(format!("/v2/{repo}/blobs/sha256:abc")).send().await, // 400
        request("POST", "/v2/_catalog").send().await,            // 405
        get(format!("/v2/{repo}/no/such/route")).send().await,   // 404
        get(format!("/v2/{}/tags/list", common::repo("never-pushed")))
            .send()
            .await, // 404
    ];
    for r in &responses {
        assert_api_version(r);
    }
}

/// Every repository in the catalog, following `Link` pages of `n`.
async fn walk_catalog(n: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut next = Some(format!("/v2/_catalog?n={n}"));
    let mut pages = 0;
    while let Some(url) = next {
        pages += 1;
        assert!(pages < 10_000, "catalog pagination does not end");
        let r = get(url.as_str()).send().await;
        assert_status(&r, 200);
        let repos: Vec<String> = serde_json::from_value(r.json()["repositories"].clone())
            .unwrap_or_else(|e| {
                panic!(
                    "`repositories` is not a list of strings ({e}):\n{}",
                    r.describe()
                )
            });
        assert!(
            repos.len() <= n,
            "page longer than n={n}:\n{}",
            r.describe()
        );
        next = next_link(&r);
        if next.is_some() {
            assert!(
                !repos.is_empty(),
                "Link on an empty page:\n{}",
                r.describe()
            );
        }
        all.extend(repos);
    }
    all
}

#[tokio::test]
async fn catalog_lists_repositories_in_lexical_order() {
    let base = repo("catalog-order");
    let names: Vec<String> = ["b", "a", "c/nested/deep", "a-b", "a.b", "a_b", "a0"]
        .iter()
        .map(|s| format!("{base}/{s}"))
        .collect();
    for n in &names {
        push_image(n, "latest").await;
    }
    // Small pages on our own server; bigger ones on a shared registry (BERTH_URL) with history.
    let n = if std::env::var_os("BERTH_URL").is_some() {
        100
    } else {
        3
    };
    let all = walk_catalog(n).await;
    for w in all.windows(2) {
        assert!(
            w[0] < w[1],
            "catalog not in strict lexical order: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    for n in &names {
        assert!(all.contains(n), "catalog lacks {n}");
    }
    let ours: Vec<&String> = all
        .iter()
        .filter(|r| r.starts_with(&format!("{base}/")))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(ours, sorted.iter().collect::<Vec<_>>());

    // Without n: one page of at most 1000, lexical.
    let r = get("/v2/_catalog").send().await;
    assert_status(&r, 200);
    let repos: Vec<String> = serde_json::from_value(r.json()["repositories"].clone()).unwrap();
    assert!(repos.len() <= 1000, "more than 1000 repositories without n");
    for w in repos.windows(2) {
        assert!(
            w[0] < w[1],
            "catalog not in lexical order: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    if r.header("link").is_none() {
        for n in &names {
            assert!(
                repos.contains(n),
                "catalog (no n, no Link) lacks {n}:\n{}",
                r.describe()
            );
        }
    }
}

#[tokio::test]
async fn catalog_pagination_with_link_header() {
    // "zzzz" + the run id sorts after every other repository of this run (and of earlier runs),
    // so the pages below are exactly ours and the last one is the end of the catalog.
    let prefix = format!("zzzz{}", run_id());
    let names: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|s| format!("{prefix}/{s}"))
        .collect();
    for n in &names {
        push_image(n, "v1").await;
    }

    // n=2: [a b] + Link, [c d] and no Link (nothing remains).
    let r = get(format!("/v2/_catalog?n=2&last={prefix}")).send().await;
    assert_status(&r, 200);
    assert_eq!(
        r.json(),
        json!({ "repositories": [names[0], names[1]] }),
        "{}",
        r.describe()
    );
    let link =
        next_link(&r).unwrap_or_else(|| panic!("no Link although more remain:\n{}", r.describe()));
    assert!(link.starts_with("/v2/_catalog?"), "Link target {link:?}");
    let q = query_params(&link);
    assert!(
        q.contains(&("n".into(), "2".into())),
        "Link lacks n=2: {link:?}"
    );
    assert!(
        q.contains(&("last".into(), names[1].clone())),
        "Link lacks last={}: {link:?}",
        names[1]
    );
    let r = get(link.as_str()).send().await;
    assert_status(&r, 200);
    assert_eq!(
        r.json(),
        json!({ "repositories": [names[2], names[3]] }),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.header("link"),
        None,
        "Link although nothing remains:\n{}",
        r.describe()
    );

    // n=3: [a b c] + Link, [d].
    let r = get(format!("/v2/_catalog?n=3&last={prefix}")).send().await;
    assert_status(&r, 200);
    assert_eq!(
        r.json(),
        json!({ "repositories": [names[0], names[1], names[2]] })
    );
    let link = next_link(&r).expect("Link");
    let r = get(link.as_str()).send().await;
    assert_eq!(
        r.json(),
        json!({ "repositories": [names[3]] }),
        "{}",
        r.describe()
    );
    assert_eq!(r.header("link"), None, "{}", r.describe());

    // last without n.
    let r = get(format!("/v2/_catalog?last={}", names[1])).send().await;
    assert_status(&r, 200);
    assert_eq!(
        r.json(),
        json!({ "repositories": [names[2], names[3]] }),
        "{}",
        r.describe()
    );
}

#[tokio::test]
async fn catalog_after_the_last_repository_is_empty() {
    let r = get("/v2/_catalog?n=10&last=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")
        .send()
        .await;
    assert_status(&r, 200);
    assert_eq!(r.json(), json!({ "repositories": [] }), "{}", r.describe());
    assert_eq!(r.header("link"), None);
}

#[tokio::test]
async fn catalog_rejects_invalid_n() {
    for n in ["-1", "abc", "1.5", "0x10", "99999999999999999999999999"] {
        let r = get(format!("/v2/_catalog?n={n}")).send().await;
        assert_oci_error(&r, 400, "PAGINATION_NUMBER_INVALID");
    }
}
