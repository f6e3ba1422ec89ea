//! end-8a/8b: `GET /v2/<name>/tags/list` with `n` and `last`.

mod common;

use common::*;
use serde_json::json;

/// Pushes one image and tags it with every tag given.
async fn tagged(repo: &str, tags: &[&str]) {
    let p = push_image(repo, tags[0]).await;
    for t in &tags[1..] {
        push_manifest(repo, t, OCI_MANIFEST, &p.bytes).await;
    }
}

fn sorted(tags: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
    v.sort(); // byte order
    v
}

const TAGS: &[&str] = &[
    "v10", "v2", "latest", "V1", "1.0", "_under", "a-b", "a.b", "a_b", "Z", "0",
];

#[tokio::test]
async fn tags_are_listed_in_lexical_order() {
    let repo = repo("tags-order");
    tagged(&repo, TAGS).await;
    let r = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_status(&r, 200);
    assert_api_version(&r);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.json(),
        json!({ "name": repo, "tags": sorted(TAGS) }),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.header("link"),
        None,
        "Link although nothing remains:\n{}",
        r.describe()
    );
}

#[tokio::test]
async fn tags_pagination_follows_link_headers() {
    let repo = repo("tags-pages");
    tagged(&repo, TAGS).await;
    let all = sorted(TAGS); // 11 tags
    for n in [1usize, 2, 3, 5, 11] {
        let mut got: Vec<String> = Vec::new();
        let mut url = Some(format!("/v2/{repo}/tags/list?n={n}"));
        let mut pages = 0;
        while let Some(u) = url {
            pages += 1;
            assert!(pages <= all.len() + 1, "pagination does not end (n={n})");
            let r = get(u.as_str()).send().await;
            assert_status(&r, 200);
            let v = r.json();
            assert_eq!(v["name"], json!(repo));
            let page: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
            let start = got.len();
            let expect: Vec<String> = all.iter().skip(start).take(n).cloned().collect();
            assert_eq!(page, expect, "page {pages} with n={n}:\n{}", r.describe());
            got.extend(page);
            url = next_link(&r);
            let more = got.len() < all.len();
            assert_eq!(
                url.is_some(),
                more,
                "Link must be there exactly when more remain (n={n}):\n{}",
                r.describe()
            );
            if let Some(link) = &url {
                assert!(
                    link.starts_with(&format!("/v2/{repo}/tags/list?")),
                    "Link target {link:?}"
                );
                let q = query_params(link);
                assert!(
                    q.contains(&("n".into(), n.to_string())),
                    "Link lacks n={n}: {link:?}"
                );
                assert!(
                    q.contains(&("last".into(), got.last().unwrap().clone())),
                    "Link lacks last: {link:?}"
                );
            }
        }
        assert_eq!(got, all);
    }
}

#[tokio::test]
async fn tags_last_without_n_and_past_the_end() {
    let repo = repo("tags-last");
    tagged(&repo, TAGS).await;
    let all = sorted(TAGS);
    let r = get(format!("/v2/{repo}/tags/list?last=a-b")).send().await;
    assert_status(&r, 200);
    let expect: Vec<String> = all.iter().filter(|t| t.as_str() > "a-b").cloned().collect();
    assert_eq!(r.json()["tags"], json!(expect), "{}", r.describe());
    // `last` need not be a tag that exists.
    let r = get(format!("/v2/{repo}/tags/list?last=b")).send().await;
    let expect: Vec<String> = all.iter().filter(|t| t.as_str() > "b").cloned().collect();
    assert_eq!(r.json()["tags"], json!(expect), "{}", r.describe());
    let r = get(format!("/v2/{repo}/tags/list?n=2&last=v2"))
        .send()
        .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!([]), "{}", r.describe());
    assert_eq!(r.header("link"), None);
}

#[tokio::test]
async fn tags_n_zero_is_an_empty_list() {
    let repo = repo("tags-n0");
    tagged(&repo, &["a", "b"]).await;
    let r = get(format!("/v2/{repo}/tags/list?n=0")).send().await;
    assert_status(&r, 200);
    assert_eq!(
        r.json(),
        json!({ "name": repo, "tags": [] }),
        "{}",
        r.describe()
    );
}

#[tokio::test]
async fn tags_n_larger_than_the_list() {
    let repo = repo("tags-n-big");
    tagged(&repo, &["a", "b", "c"]).await;
    let r = get(format!("/v2/{repo}/tags/list?n=1000")).send().await;
    assert_status(&r, 200);
    assert_eq!(r.json()["tags"], json!(["a", "b", "c"]));
    assert_eq!(r.header("link"), None);
    // Exactly the number that remain: no Link either.
    let r = get(format!("/v2/{repo}/tags/list?n=3")).send().await;
    assert_eq!(r.json()["tags"], json!(["a", "b", "c"]));
    assert_eq!(
        r.header("link"),
        None,
        "Link although nothing remains:\n{}",
        r.describe()
    );
}

#[tokio::test]
async fn tags_invalid_n_is_pagination_number_invalid() {
    let repo = repo("tags-bad-n");
    tagged(&repo, &["a"]).await;
    for n in [
        "-1",
        "abc",
        "1.5",
        "1e3",
        "99999999999999999999999999",
        "%20",
    ] {
        let r = get(format!("/v2/{repo}/tags/list?n={n}")).send().await;
        assert_oci_error(&r, 400, "PAGINATION_NUMBER_INVALID");
    }
}

#[tokio::test]
async fn tags_of_an_unknown_repository_is_name_unknown() {
    let repo = repo("tags-never-pushed");
    let r = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_oci_error(&r, 404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn tags_of_nested_repository() {
    let repo = format!("{}/deeper/still", repo("tags-nested"));
    tagged(&repo, &["x", "y"]).await;
    let r = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_status(&r, 200);
    assert_eq!(r.json(), json!({ "name": repo, "tags": ["x", "y"] }));
}

#[tokio::test]
async fn manifest_pushed_by_digest_adds_no_tag() {
    let repo = repo("tags-by-digest");
    tagged(&repo, &["only"]).await;
    push_image(&repo, "").await;
    let r = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_eq!(r.json()["tags"], json!(["only"]), "{}", r.describe());
}
