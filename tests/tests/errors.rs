//! Repository names (valid and not), routing errors (404 no route, 405), the error body format,
//! and a bounded barrage of odd requests none of which may yield a 5xx.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn invalid_names() -> Vec<String> {
    vec![
        "Upper".into(),
        format!("{}/Mixed/case", run_id()),
        "a/../b".into(),
        "..".into(),
        "a/./b".into(),
        ".".into(),
        "a//b".into(),
        "a/b/".into(), // trailing slash
        "/a".into(),   // leading slash
        "-a".into(),
        "a-".into(),
        "_a".into(),
        "a_".into(),
        "a___b".into(),
        "a..b".into(),
        "a.-b".into(),
        "a%20b".into(),
        "a:b".into(),
        "a@b".into(),
        "%C3%A4".into(),
        "a%00b".into(),
        "a".repeat(256),
        format!("{}/{}", "a".repeat(128), "b".repeat(127)), // 256 with a slash
    ]
}

#[tokio::test]
async fn invalid_names_are_name_invalid_on_every_endpoint() {
    let d = sha256(b"x");
    let id = format!("{}.{}", &HEX64[..32], &HEX64[32..]);
    for name in invalid_names() {
        let bodyless: Vec<(&str, String)> = vec![
            ("GET", format!("/v2/{name}/tags/list")),
            ("GET", format!("/v2/{name}/manifests/latest")),
            ("GET", format!("/v2/{name}/manifests/{d}")),
            ("DELETE", format!("/v2/{name}/manifests/latest")),
            ("GET", format!("/v2/{name}/blobs/{d}")),
            ("DELETE", format!("/v2/{name}/blobs/{d}")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
            (
                "POST",
                format!("/v2/{name}/blobs/uploads/?mount={d}&from=library/x"),
            ),
            ("GET", format!("/v2/{name}/blobs/uploads/{id}")),
            ("DELETE", format!("/v2/{name}/blobs/uploads/{id}")),
            ("GET", format!("/v2/{name}/referrers/{d}")),
        ];
        for (m, path) in bodyless {
            let r = request(m, path.as_str()).send().await;
            assert_oci_error(&r, 400, "NAME_INVALID");
        }
        let r = post(format!("/v2/{name}/blobs/uploads/?digest={d}"))
            .body(&b"x"[..])
            .send()
            .await;
        assert_oci_error(&r, 400, "NAME_INVALID");
        let r = patch(format!("/v2/{name}/blobs/uploads/{id}"))
            .body(&b"x"[..])
            .send()
            .await;
        assert_oci_error(&r, 400, "NAME_INVALID");
        let r = put(format!("/v2/{name}/blobs/uploads/{id}?digest={d}"))
            .body(&b"x"[..])
            .send()
            .await;
        assert_oci_error(&r, 400, "NAME_INVALID");
        let r = put_manifest(&name, "latest", OCI_MANIFEST, br#"{"schemaVersion":2}"#).await;
        assert_oci_error(&r, 400, "NAME_INVALID");
        for path in [
            format!("/v2/{name}/blobs/{d}"),
            format!("/v2/{name}/manifests/latest"),
        ] {
            assert_status(&head(path.as_str()).send().await, 400);
        }
    }
}

#[tokio::test]
async fn name_of_255_characters_works_and_256_does_not() {
    let prefix = repo("len");
    let name = format!("{prefix}/{}", "n".repeat(255 - prefix.len() - 1));
    assert_eq!(name.len(), 255);
    let p = push_image(&name, "v1").await;
    assert_status(
        &get(format!("/v2/{name}/manifests/{}", p.digest))
            .send()
            .await,
        200,
    );
    let r = get(format!("/v2/{name}/tags/list")).send().await;
    assert_status(&r, 200);
    assert_eq!(r.json()["name"], json!(name));

    let long = format!("{name}x");
    assert_eq!(long.len(), 256);
    let r = post(format!("/v2/{long}/blobs/uploads/")).send().await;
    assert_oci_error(&r, 400, "NAME_INVALID");
    assert_oci_error(
        &get(format!("/v2/{long}/tags/list")).send().await,
        400,
        "NAME_INVALID",
    );
}

#[tokio::test]
async fn valid_separators_in_names() {
    let base = repo("seps");
    for suffix in [
        "a.b", "a_b", "a__b", "a-b", "a---b", "0", "a1/b2/c3", "x.y-z__w",
    ] {
        let name = format!("{base}/{suffix}");
        let d = push_blob(&name, suffix.as_bytes()).await;
        assert_blob(&name, &d, suffix.as_bytes()).await;
    }
}

#[tokio::test]
async fn nested_names_work_everywhere() {
    let name = format!("{}/org/team/app", repo("nested"));
    let other = format!("{}/org/team/other", repo("nested"));
    let p = push_image(&name, "v1").await;
    // Chunked upload.
    let loc = start_upload(&name).await;
    assert!(
        loc.starts_with(&format!("/v2/{name}/blobs/uploads/")),
        "{loc}"
    );
    let r = patch(loc.as_str()).body(&b"chunk"[..]).send().await;
    assert_status(&r, 202);
    let d = sha256(b"chunk");
    let r = put(with_query(&r.location(), &format!("digest={d}")))
        .send()
        .await;
    assert_status(&r, 201);
    assert_eq!(r.location(), format!("/v2/{name}/blobs/{d}"));
    assert_blob(&name, &d, b"chunk").await;
    // Reads.
    let r = get(format!("/v2/{name}/manifests/v1")).send().await;
    assert_status(&r, 200);
    assert!(r.body == p.bytes);
    let r = get(format!("/v2/{name}/tags/list")).send().await;
    assert_eq!(r.json(), json!({ "name": name, "tags": ["v1"] }));
    let r = get(format!("/v2/{name}/referrers/{}", p.digest))
        .send()
        .await;
    assert_status(&r, 200);
    // Mount between nested names.
    let r = post(format!("/v2/{other}/blobs/uploads/?mount={d}&from={name}"))
        .send()
        .await;
    assert_status(&r, 201);
    assert_blob(&other, &d, b"chunk").await;
    // Catalog lists it.
    let r = get(format!(
        "/v2/_catalog?n=10&last={}",
        percent_encode(&format!(
            "{}/org/team/ap",
            name.rsplit_once("/org/").unwrap().0
        ))
    ))
    .send()
    .await;
    assert_status(&r, 200);
    assert!(
        r.json()["repositories"]
            .as_array()
            .unwrap()
            .contains(&json!(name)),
        "{}",
        r.describe()
    );
    // Deletes.
    assert_status(
        &delete(format!("/v2/{name}/manifests/v1")).send().await,
        202,
    );
    assert_status(&delete(format!("/v2/{name}/blobs/{d}")).send().await, 202);
}

#[tokio::test]
async fn reserved_looking_components_are_names() {
    // Path components that are also route words are fine inside a name.
    let base = repo("route-words");
    for suffix in [
        "blobs/x",
        "manifests/y",
        "tags/z",
        "uploads/w",
        "referrers/v",
        "v2/u",
    ] {
        let name = format!("{base}/{suffix}");
        let p = push_image(&name, "t").await;
        let r = get(format!("/v2/{name}/manifests/t")).send().await;
        assert_status(&r, 200);
        assert_header(&r, "docker-content-digest", &p.digest);
        let r = get(format!("/v2/{name}/tags/list")).send().await;
        assert_eq!(
            r.json(),
            json!({ "name": name, "tags": ["t"] }),
            "{}",
            r.describe()
        );
    }
}

#[tokio::test]
async fn paths_that_are_no_route_are_404_unsupported() {
    let repo = repo("no-route");
    push_image(&repo, "v1").await;
    for path in [
        format!("/v2/{repo}/no/such/route"),
        format!("/v2/{repo}/tags/lists"),
        format!("/v2/{repo}/tags"),
        format!("/v2/{repo}/blob/sha256:{HEX64}"),
        format!("/v2/{repo}/manifest/v1"),
        format!("/v2/{repo}"),
        "/v2/_catalogs".to_string(),
        "/v2/x".to_string(),
    ] {
        let r = get(path.as_str()).send().await;
        assert_oci_error(&r, 404, "UNSUPPORTED");
    }
}

#[tokio::test]
async fn methods_not_allowed_are_405_unsupported() {
    let repo = repo("methods");
    let p = push_image(&repo, "v1").await;
    let loc = start_upload(&repo).await;
    let d = &p.digest;
    let cases: Vec<(&str, String)> = vec![
        ("PUT", "/v2/".into()),
        ("DELETE", "/v2/".into()),
        ("POST", "/v2/".into()),
        ("FOO", "/v2/".into()),
        ("POST", "/v2/_catalog".into()),
        ("PUT", "/v2/_catalog".into()),
        ("DELETE", "/v2/_catalog".into()),
        ("POST", format!("/v2/{repo}/tags/list")),
        ("PUT", format!("/v2/{repo}/tags/list")),
        ("DELETE", format!("/v2/{repo}/tags/list")),
        ("POST", format!("/v2/{repo}/manifests/v1")),
        ("PATCH", format!("/v2/{repo}/manifests/v1")),
        ("POST", format!("/v2/{repo}/blobs/{d}")),
        ("PUT", format!("/v2/{repo}/blobs/{d}")),
        ("PATCH", format!("/v2/{repo}/blobs/{d}")),
        ("POST", loc.clone()),
        ("POST", format!("/v2/{repo}/referrers/{d}")),
        ("PUT", format!("/v2/{repo}/referrers/{d}")),
        ("DELETE", format!("/v2/{repo}/referrers/{d}")),
    ];
    for (m, path) in cases {
        let r = request(m, path.as_str()).send().await;
        assert_oci_error(&r, 405, "UNSUPPORTED");
        assert_api_version(&r);
    }
    // Nothing was changed by them.
    let r = get(format!("/v2/{repo}/manifests/v1")).send().await;
    assert_status(&r, 200);
    assert!(r.body == p.bytes);
    let r = get(loc.as_str()).send().await;
    assert_status(&r, 204);
}

/// A bounded list of odd requests: every answer is below 500, and every 4xx under /v2/ (except
/// to HEAD) carries an OCI error body.
#[tokio::test]
async fn odd_requests_never_yield_5xx() {
    let repo = repo("fuzz");
    let p = push_image(&repo, "v1").await;
    let blob = push_blob(&repo, &random_bytes(100)).await;
    let loc = start_upload(&repo).await;
    let d = &p.digest;
    let long = "a".repeat(5000);
    let paths: Vec<String> = vec![
        "/".into(),
        "/v1/".into(),
        "/v2/".into(),
        "/v2//".into(),
        "/v2///".into(),
        "/v2/_catalog".into(),
        "/v2/_catalog?n=1&last=%00".into(),
        "/v2/_catalog?n=18446744073709551616".into(),
        "/v2/_catalog?n=1&n=2".into(),
        format!("/v2/_catalog?last={long}"),
        format!("/v2/{repo}/tags/list?n=0&last=%ff"),
        format!("/v2/{repo}/tags/list?n=-0"),
        format!("/v2/{repo}/tags/list?n=+5"),
        format!("/v2/{repo}/tags/list?n=18446744073709551615"),
        format!("/v2/{repo}/manifests/"),
        format!("/v2/{repo}/manifests/sha256:"),
        format!("/v2/{repo}/manifests/{d}extra"),
        format!("/v2/{repo}/manifests/{d}/x"),
        format!("/v2/{repo}/manifests/%00"),
        format!("/v2/{repo}/manifests/{long}"),
        format!("/v2/{repo}/manifests/v1?%%%"),
        format!("/v2/{repo}/blobs/"),
        format!("/v2/{repo}/blobs/{blob}"),
        format!("/v2/{repo}/blobs/{blob}?x=%zz"),
        format!("/v2/{repo}/blobs/uploads"),
        format!("/v2/{repo}/blobs/uploads/"),
        format!("/v2/{repo}/blobs/uploads/?digest="),
        format!("/v2/{repo}/blobs/uploads/?digest={blob}&digest={d}"),
        format!("/v2/{repo}/blobs/uploads/?mount=&from="),
        format!("/v2/{repo}/blobs/uploads/?mount={blob}&from=.."),
        format!("/v2/{repo}/blobs/uploads/?mount={blob}&from=%2F%2F"),
        format!("/v2/{repo}/blobs/uploads/?mount={blob}&from={repo}&digest={blob}"),
        format!("/v2/{repo}/blobs/uploads/?mount={blob}"),
        loc.clone(),
        format!("{loc}/extra"),
        with_query(&loc, "digest=sha256:"),
        format!("/v2/{repo}/blobs/uploads/%ff%fe"),
        format!("/v2/{repo}/blobs/uploads/..%2f..%2f"),
        format!("/v2/{repo}/referrers/"),
        format!("/v2/{repo}/referrers/{d}?artifactType=%00"),
        format!("/v2/{repo}/referrers/{d}?artifactType="),
        "/v2/%00/tags/list".into(),
        "/v2/%ff%fe/tags/list".into(),
        format!("/v2/{}tags/list", "a/".repeat(300)),
        format!("/v2/{}/tags/list", "a".repeat(10_000)),
        "/v2/..%2f..%2fetc/passwd".into(),
        "/%2e%2e/%2e%2e/etc/passwd".into(),
        "/v2/_catalog/../../x".into(),
        "/v2/*".into(),
    ];
    let mut problems = Vec::new();
    // Odd headers and bodies on real resources (first: the loop below deletes things).
    let blob_url = format!("/v2/{repo}/blobs/{blob}");
    let man_url = format!("/v2/{repo}/manifests/v1");
    let odd: Vec<Req> = vec![
        get(blob_url.as_str()).header("range", "bytes=99999999999999999999999-"),
        get(blob_url.as_str()).header("range", "bytes=-99999999999999999999999"),
        get(blob_url.as_str()).header("range", "bytes=0-99999999999999999999999"),
        get(blob_url.as_str()).header("range", "bytes=-0"),
        get(blob_url.as_str()).header("range", "bytes=--1"),
        get(blob_url.as_str()).header("range", "bytes=0-0").header("range", "bytes=5-9"),
        get(blob_url.as_str()).header("if-none-match", "*"),
        get(man_url.as_str()).header("accept", ";;;,,,"),
        get(man_url.as_str()).header("accept", "*/*;q=abc"),
        get(man_url.as_str()).header("accept", "x/y, ".repeat(2000)),
        get(man_url.as_str()).header("if-none-match", "*"),
        get(man_url.as_str()).header("if-none-match", "W/\"x\", \"y\""),
        patch(loc.as_str()).header("content-range", "0-18446744073709551615").body(&b"x"[..]),
        patch(loc.as_str()).header("content-range", "18446744073709551615-18446744073709551616").body(&b"x"[..]),
        patch(loc.as_str()).header("content-range", "99999999999999999999999-0").body(&b"x"[..]),
        patch(loc.as_str()).header("content-range", "bytes 0-0/1").body(&b"x"[..]),
        patch(loc.as_str()).header("content-type", "garbage/;;;").body(&b""[..]),
        put(man_url.as_str()).header("content-type", OCI_MANIFEST).body(random_bytes(1000)),
        put(man_url.as_str()).header("content-type", OCI_MANIFEST).body(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))),
        put(man_url.as_str()).header("content-type", OCI_MANIFEST).body(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{blob}","size":1e400}},"layers":[]}}"#
        )),
        put(man_url.as_str()).header("content-type", OCI_MANIFEST).body(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{blob}","size":-1}},"layers":[]}}"#
        )),
        put(man_url.as_str()).header("content-type", OCI_MANIFEST).body(format!(
            r#"{{"schemaVersion":2,"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{blob}","size":100}},"layers":[null]}}"#
        )),
        put(man_url.as_str()).header("content-type", OCI_MANIFEST).body(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{blob}","size":100}},"layers":[],"subject":{{"digest":"garbage"}}}}"#
        )),
        put(man_url.as_str()).header("content-type", OCI_INDEX).body(format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"digest":"{d}"}}, 5, "x"]}}"#
        )),
        put(man_url.as_str()).header("content-type", OCI_MANIFEST).header("content-type", OCI_INDEX).body(p.bytes.clone()),
        put(man_url.as_str()).header("content-type", format!("{OCI_MANIFEST}; charset=utf-8")).body(p.bytes.clone()),
        post(format!("/v2/{repo}/blobs/uploads/?digest={blob}")).stream(vec![vec![1; 10], vec![2; 10]]),
        post(format!("/v2/{repo}/blobs/uploads/")).body(random_bytes(100)),
        put(with_query(&loc, &format!("digest={blob}"))).stream(vec![vec![3; 100]]),
    ];
    for req in odd {
        check_sent(req, &mut problems).await;
    }

    let methods = [
        "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND",
    ];
    for path in &paths {
        for m in methods {
            let mut req = request(m, path.as_str());
            if matches!(m, "PUT" | "POST" | "PATCH") {
                req = req.body(&b"{\"garbage\": true}"[..]);
            }
            check_sent(req, &mut problems).await;
        }
    }

    // Raw requests hyper would not send.
    let t = target();
    let host = t.host_header();
    let pre = &t.prefix;
    let raw: Vec<Vec<u8>> = vec![
        format!("POST {pre}/v2/{repo}/blobs/uploads/?digest={blob} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n").into_bytes(),
        format!("GET {pre}/v2/ HTTP/1.0\r\n\r\n").into_bytes(),
        format!("GET {pre}/v2/{repo}/tags/list HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("PATCH {pre}{loc} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").into_bytes(),
        format!("PUT {pre}/v2/{repo}/manifests/v9 HTTP/1.1\r\nHost: {host}\r\nContent-Type: {OCI_MANIFEST}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"schema").into_bytes(),
        b"GARBAGE\r\n\r\n".to_vec(),
        format!("GET {pre}/v2/a b/tags/list HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
    ];
    for req in raw {
        let (status, text) = raw_exchange(&req, true, Duration::from_secs(10)).await;
        if let Some(s) = status {
            if s >= 500 {
                problems.push(format!(
                    "raw request {:?} -> {text}",
                    String::from_utf8_lossy(&req)
                ));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The registry still works and its content is intact.
    let r = get(format!("/v2/{repo}/manifests/{d}")).send().await;
    assert_status(&r, 200);
    assert!(r.body == p.bytes);
}

/// Sends, then checks the answer; a dropped connection (no HTTP response at all, e.g. a panic in
/// the server) is a problem too.
async fn check_sent(req: Req, problems: &mut Vec<String>) {
    match req.try_send().await {
        Ok(r) => check(&r, problems),
        Err(e) => problems.push(e),
    }
}

fn check(r: &Resp, problems: &mut Vec<String>) {
    if r.status >= 500 {
        problems.push(format!("5xx:\n{}", r.describe()));
        return;
    }
    let under_v2 = r.url.contains("/v2/") || r.url.ends_with("/v2");
    if r.status >= 400 && under_v2 && r.method != http::Method::HEAD {
        let ok = r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
            && serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| {
                    v["errors"]
                        .as_array()
                        .map(|e| !e.is_empty() && e.iter().all(|x| x["code"].is_string()))
                })
                .unwrap_or(false);
        if !ok {
            problems.push(format!("4xx without an OCI error body:\n{}", r.describe()));
        }
    }
    if r.header("docker-distribution-api-version").as_deref() != Some("registry/2.0") && under_v2 {
        problems.push(format!(
            "no Docker-Distribution-API-Version:\n{}",
            r.describe()
        ));
    }
}
