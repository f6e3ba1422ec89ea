//! Every endpoint with and without a token, and the mount rules that rode on the query string.
//! A module of auth.rs: it shares its registry (any runtime, via BERTH_AUTH_LAUNCH), users and
//! helpers.

use super::*;

/// Every endpoint of the API, as (method, path) for repository `repo`, with a syntactically
/// valid digest and upload id. `parts` is Berth's direct-upload extension; `_berth/` are the
/// web interface's reads.
fn every_endpoint(repo: &str, digest: &str, upload: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", format!("/v2/{repo}/tags/list")),
        ("GET", format!("/v2/{repo}/manifests/latest")),
        ("HEAD", format!("/v2/{repo}/manifests/latest")),
        ("PUT", format!("/v2/{repo}/manifests/latest")),
        ("DELETE", format!("/v2/{repo}/manifests/{digest}")),
        ("GET", format!("/v2/{repo}/blobs/{digest}")),
        ("HEAD", format!("/v2/{repo}/blobs/{digest}")),
        ("DELETE", format!("/v2/{repo}/blobs/{digest}")),
        ("POST", format!("/v2/{repo}/blobs/uploads/")),
        ("POST", format!("/v2/{repo}/blobs/uploads/?digest={digest}")),
        ("POST", format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={repo}")),
        ("GET", format!("/v2/{repo}/blobs/uploads/{upload}")),
        ("PATCH", format!("/v2/{repo}/blobs/uploads/{upload}")),
        ("PUT", format!("/v2/{repo}/blobs/uploads/{upload}?digest={digest}")),
        ("DELETE", format!("/v2/{repo}/blobs/uploads/{upload}")),
        ("POST", format!("/v2/{repo}/blobs/uploads/{upload}/parts?first=1&count=1")),
        ("GET", format!("/v2/{repo}/referrers/{digest}")),
        // Berth's read endpoints for the web interface (docs/ui.md): pull rights, like tags/list.
        ("GET", format!("/v2/{repo}/_berth/tags")),
        ("GET", format!("/v2/{repo}/_berth/policy")),
        ("GET", format!("/v2/{repo}/_berth/retention")),
    ]
}

fn request(method: &str, path: String) -> Req {
    match method {
        "GET" => get(path),
        "HEAD" => head(path),
        "PUT" => put(path),
        "POST" => post(path),
        "PATCH" => patch(path),
        "DELETE" => delete(path),
        other => panic!("no helper for {other}"),
    }
}

/// Without a token, no endpoint of a private repository does anything but challenge: the
/// direct-upload parts endpoint (presigned write URLs into the bucket) once needed none.
/// With a pull token, everything that writes is refused; with a push token, nothing answers
/// 401 or 403 for the repository it was granted.
#[tokio::test]
async fn every_endpoint_needs_a_token_for_a_private_repository() {
    let repo = name("team", "endpoints");
    let root = login("root", ROOT_PW, &[&format!("repository:{repo}:pull,push")]).await;
    // A real upload session, so the id is one the registry signed (the parts endpoint's target).
    let r = auth(post(format!("/v2/{repo}/blobs/uploads/")), &root).send().await;
    assert_status(&r, 202);
    let upload = r.header("location").unwrap().rsplit('/').next().unwrap().to_owned();
    let digest = sha256(b"endpoint probe");
    for (method, path) in every_endpoint(&repo, &digest, &upload) {
        let r = request(method, path.clone()).send().await;
        assert_eq!(r.status, 401, "{method} {path} without a token:\n{}", r.describe());
        if method != "HEAD" {
            assert_challenge(&r);
        }
    }
    let reader = login("bob", BOB_PW, &[&format!("repository:{repo}:pull,push,delete")]).await;
    for (method, path) in every_endpoint(&repo, &digest, &upload) {
        let writes = !matches!(method, "GET" | "HEAD") || path.contains("/blobs/uploads/");
        let r = auth(request(method, path.clone()), &reader).send().await;
        if writes {
            assert!(r.status == 401 || r.status == 403, "{method} {path} with a pull-only token:\n{}", r.describe());
        } else {
            assert!(r.status != 401 && r.status != 403, "{method} {path} with a pull token:\n{}", r.describe());
        }
    }
    let root = login("root", ROOT_PW, &[&format!("repository:{repo}:pull,push,delete")]).await;
    for (method, path) in every_endpoint(&repo, &digest, &upload) {
        let r = auth(request(method, path.clone()), &root).send().await;
        assert!(r.status != 401 && r.status != 403, "{method} {path} with a full token:\n{}", r.describe());
    }
}

/// (Supersedes auth.rs's plain-query mount test: the first query below is that case.)
/// The gate once removed `mount`/`from` by re-serializing the query, and kept the original
/// URI when the rewrite failed to parse: a long query of characters the serializer escapes
/// then mounted from a repository the caller could not read. Whatever the query, no mount
/// without pull on the source.
#[tokio::test]
async fn no_mount_without_read_access_whatever_the_query() {
    let secret = name("other", "mount-src");
    let mine = name("team", "mount-dst");
    let root = login("root", ROOT_PW, &[&format!("repository:{secret}:push,pull")]).await;
    let blob = random_bytes(100);
    let digest = sha256(&blob);
    let r = auth(post(format!("/v2/{secret}/blobs/uploads/?digest={digest}")), &root).body(blob).send().await;
    assert_status(&r, 201);
    let alice = login("alice", ALICE_PW, &[&format!("repository:{mine}:push,pull")]).await;
    // Characters a URI may carry raw but a form serializer escapes (`!` becomes `%21`): 30,000
    // of them make a rewritten URI longer than `http::Uri` parses (64 KiB), and the old gate
    // then fell back to the original. (A runtime may refuse such a URI outright: also no mount.)
    let junk = "!".repeat(30_000);
    for query in [
        format!("mount={digest}&from={secret}"),
        format!("mount={digest}&from={secret}&x={junk}"),
        format!("x={junk}&from={secret}&mount={digest}"),
        format!("mount={digest}&from={secret}&from=team%2Fnothing"),
    ] {
        let r = auth(post(format!("/v2/{mine}/blobs/uploads/?{query}")), &alice).send().await;
        assert!(r.status != 201, "mounted from an unreadable repository with ?{}…:\n{}", &query[..60.min(query.len())], r.describe());
        let r = auth(head(format!("/v2/{mine}/blobs/{digest}")), &alice).send().await;
        assert_status(&r, 404);
    }
}

/// A mount's challenge names pull on the source too, so a client that asks for exactly what
/// the challenge lists gets a token that mounts.
#[tokio::test]
async fn a_mount_challenge_lists_the_source_repository() {
    let from = name("team", "mount-challenge-src");
    let to = name("team", "mount-challenge-dst");
    let root = login("root", ROOT_PW, &[&format!("repository:{from}:push,pull")]).await;
    let blob = random_bytes(64);
    let digest = sha256(&blob);
    assert_status(&auth(post(format!("/v2/{from}/blobs/uploads/?digest={digest}")), &root).body(blob).send().await, 201);
    let r = post(format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}")).send().await;
    let challenge = assert_challenge(&r);
    let scope = format!("scope=\"repository:{to}:pull,push repository:{from}:pull\"");
    assert!(challenge.contains(&scope), "{challenge}");
    let scopes = [format!("repository:{to}:pull,push"), format!("repository:{from}:pull")];
    let alice = login("alice", ALICE_PW, &[&scopes[0], &scopes[1]]).await;
    let r = auth(post(format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}")), &alice).send().await;
    assert_status(&r, 201);
}
