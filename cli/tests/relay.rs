//! `berth relay` in front of a `berth serve` upstream: docker-style pushes (one streamed PATCH
//! without a Content-Length, then `PUT ?digest=`) arrive whole, in chunks within the upstream's
//! limits; a wrong digest or an upstream that dies leaves nothing behind upstream; the relay logs
//! in upstream itself; its memory stays bounded whatever the blob's size.
//! Direct parts run against a fake upstream that offers them (real S3: the Lambda suite).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use support::*;

struct Relay {
    child: Child,
    /// `http://127.0.0.1:PORT`
    url: String,
    /// `127.0.0.1:PORT`
    addr: String,
    log: PathBuf,
}

impl Relay {
    fn start(upstream: &str, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Relay {
        let log = dir.join(format!("relay-{}.log", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["relay", "--upstream", &format!("http://{upstream}"), "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("BERTH_TOKEN")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("berth relay starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {line:?}; log: {}", std::fs::read_to_string(&log).unwrap_or_default()))
            .to_owned();
        assert!(line.contains(&format!("-> http://{upstream}")), "{line}");
        let addr = url.trim_start_matches("http://").to_owned();
        Relay { child, url, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The relay's peak resident memory, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// `len` pattern bytes in 1 MiB pieces, as a body of unknown length (chunked transfer
/// encoding, as docker sends a layer); returns it with the bytes' digest.
fn streamed(len: usize, seed: u8) -> (reqwest::Body, String) {
    const PIECE: usize = 1024 * 1024;
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < len {
        let n = PIECE.min(len - offset);
        hasher.update(piece_at(offset, n, seed));
        offset += n;
    }
    let digest = format!("sha256:{}", hex(&hasher.finalize()));
    let pieces = (0..len.div_ceil(PIECE)).map(move |i| {
        let start = i * PIECE;
        Ok::<_, std::io::Error>(Bytes::from(piece_at(start, PIECE.min(len - start), seed)))
    });
    (reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)), digest)
}

fn piece_at(offset: usize, len: usize, seed: u8) -> Vec<u8> {
    (offset..offset + len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 20) as u8)).collect()
}

/// POST + one streamed PATCH + PUT ?digest= through the relay; the PUT's status.
async fn docker_push(http: &reqwest::Client, relay: &str, repo: &str, body: reqwest::Body, digest: &str) -> u16 {
    let post = http.post(format!("{relay}/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(post.status(), 202);
    let location = post.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("/v2/{repo}/blobs/uploads/")), "{location}");
    let patch = http
        .patch(format!("{relay}{location}"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 202, "{:?}", patch.text().await);
    let location = patch.headers()["location"].to_str().unwrap().to_owned();
    let put = http.put(format!("{relay}{location}?digest={digest}")).send().await.unwrap();
    put.status().as_u16()
}

#[test]
fn a_64_mib_layer_pushed_docker_style_arrives_whole_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Server::start(&dir.path().join("data"), &free_addr());
    let relay = Relay::start(&upstream.addr, dir.path(), &["--part-mib", "16"], &[]);
    let len = 64 * 1024 * 1024;
    let (body, digest) = streamed(len, 7);
    runtime().block_on(async {
        let http = client();
        assert_eq!(docker_push(&http, &relay.url, "big/layer", body, &digest).await, 201);
        // On the upstream itself: the digest and every byte.
        let up = format!("http://{}", upstream.addr);
        let head = http.head(format!("{up}/v2/big/layer/blobs/{digest}")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(head.headers()["content-length"], len.to_string().as_str());
        let got = http.get(format!("{up}/v2/big/layer/blobs/{digest}")).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(sha256(&got), digest);
        // And through the relay.
        let head = http.head(format!("{}/v2/big/layer/blobs/{digest}", relay.url)).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
    });
    // Four chunked PATCHes of 16 MiB upstream, not one.
    let log = relay.log();
    assert!(log.contains("blob relayed") && log.contains("pieces=4") && log.contains("direct=false"), "{log}");
}

#[test]
fn several_patches_and_a_final_body_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Server::start(&dir.path().join("data"), &free_addr());
    let relay = Relay::start(&upstream.addr, dir.path(), &["--part-mib", "1"], &[]);
    let blob = pattern(3 * 1024 * 1024 + 12345, 3);
    let (a, rest) = blob.split_at(700_001);
    let (b, c) = rest.split_at(1_900_000);
    let digest = sha256(&blob);
    runtime().block_on(async {
        let http = client();
        let post = http.post(format!("{}/v2/many/patches/blobs/uploads/", relay.url)).send().await.unwrap();
        let mut location = post.headers()["location"].to_str().unwrap().to_owned();
        let mut offset = 0;
        for part in [a, b] {
            let patch = http
                .patch(format!("{}{location}", relay.url))
                .header("content-range", format!("{offset}-{}", offset + part.len() - 1))
                .body(part.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(patch.status(), 202);
            offset += part.len();
            assert_eq!(patch.headers()["range"], format!("0-{}", offset - 1).as_str());
            location = patch.headers()["location"].to_str().unwrap().to_owned();
        }
        // A chunk out of order: 416 with where the session is.
        let bad = http.patch(format!("{}{location}", relay.url)).header("content-range", "5-9").body(vec![0u8; 5]).send().await.unwrap();
        assert_eq!(bad.status(), 416);
        assert_eq!(bad.headers()["range"], format!("0-{}", offset - 1).as_str());
        let status = http.get(format!("{}{location}", relay.url)).send().await.unwrap();
        assert_eq!(status.status(), 204);
        assert_eq!(status.headers()["range"], format!("0-{}", offset - 1).as_str());
        let put = http.put(format!("{}{location}?digest={digest}", relay.url)).body(c.to_vec()).send().await.unwrap();
        assert_eq!(put.status(), 201);
        assert_eq!(put.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(put.headers()["location"], format!("/v2/many/patches/blobs/{digest}").as_str());
        let got = http.get(format!("http://{}/v2/many/patches/blobs/{digest}", upstream.addr)).send().await.unwrap();
        assert_eq!(got.bytes().await.unwrap(), blob);
    });
}

#[test]
fn a_wrong_digest_is_refused_and_nothing_reaches_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Server::start(&dir.path().join("data"), &free_addr());
    let relay = Relay::start(&upstream.addr, dir.path(), &["--part-mib", "1"], &[]);
    let (body, real) = streamed(3 * 1024 * 1024 + 5, 9);
    let claimed = sha256(b"something else");
    runtime().block_on(async {
        let http = client();
        let post = http.post(format!("{}/v2/wrong/digest/blobs/uploads/", relay.url)).send().await.unwrap();
        let location = post.headers()["location"].to_str().unwrap().to_owned();
        let patch = http.patch(format!("{}{location}", relay.url)).body(body).send().await.unwrap();
        assert_eq!(patch.status(), 202);
        let put = http.put(format!("{}{location}?digest={claimed}", relay.url)).send().await.unwrap();
        assert_eq!(put.status(), 400);
        let text = put.text().await.unwrap();
        assert!(text.contains("DIGEST_INVALID"), "{text}");
        for digest in [&real, &claimed] {
            let head = http.head(format!("http://{}/v2/wrong/digest/blobs/{digest}", upstream.addr)).send().await.unwrap();
            assert_eq!(head.status(), 404, "{digest} is on the upstream");
        }
        // The session is gone.
        let again = http.put(format!("{}{location}?digest={real}", relay.url)).send().await.unwrap();
        assert_eq!(again.status(), 404);
    });
}

#[test]
fn manifests_tags_and_monolithic_pushes_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Server::start(&dir.path().join("data"), &free_addr());
    let relay = Relay::start(&upstream.addr, dir.path(), &[], &[]);
    // Monolithic POST ?digest= of both blobs, then the manifest PUT, all through the relay.
    let layer = pattern(100_000, 1);
    let manifest_digest = push_image(&relay.addr, "app/web", "v1", &layer);
    let r = request(&relay.addr, "GET", "/v2/", &[], b"");
    assert_eq!(r.status, 200);
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let by_tag = request(&relay.addr, "GET", "/v2/app/web/manifests/v1", &accept, b"");
    assert_eq!(by_tag.status, 200, "{}", by_tag.text());
    assert_eq!(by_tag.header("docker-content-digest"), Some(manifest_digest.as_str()));
    assert_eq!(sha256(&by_tag.body), manifest_digest);
    let upstream_copy = request(&upstream.addr, "GET", "/v2/app/web/manifests/v1", &accept, b"");
    assert_eq!(upstream_copy.body, by_tag.body);
    let tags = request(&relay.addr, "GET", "/v2/app/web/tags/list", &[], b"");
    assert_eq!(tags.status, 200);
    assert!(tags.text().contains("\"v1\""), "{}", tags.text());
    let blob = request(&relay.addr, "GET", &format!("/v2/app/web/blobs/{}", sha256(&layer)), &[], b"");
    assert_eq!(blob.status, 200);
    assert_eq!(blob.body, layer);
    let missing = request(&relay.addr, "GET", "/v2/app/web/manifests/nope", &accept, b"");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("MANIFEST_UNKNOWN"), "{}", missing.text());
}

#[test]
fn an_upstream_that_dies_mid_upload_fails_the_push_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = free_addr();
    let upstream = Server::start(&data, &addr);
    let relay = Relay::start(&addr, dir.path(), &["--part-mib", "1"], &[]);
    let blob = pattern(40 * 1024 * 1024, 5);
    let digest = sha256(&blob);
    runtime().block_on(async {
        let http = client();
        let post = http.post(format!("{}/v2/dies/midway/blobs/uploads/", relay.url)).send().await.unwrap();
        let location = post.headers()["location"].to_str().unwrap().to_owned();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let patch = tokio::spawn(http.patch(format!("{}{location}", relay.url)).body(body).send());
        let mut pieces = blob.chunks(1024 * 1024).map(Bytes::copy_from_slice);
        for piece in pieces.by_ref().take(8) {
            tx.send(Ok(piece)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        upstream.kill();
        for piece in pieces {
            if tx.send(Ok(piece)).await.is_err() {
                break;
            }
        }
        drop(tx);
        let patched = tokio::time::timeout(Duration::from_secs(60), patch).await.expect("the PATCH ends").unwrap();
        if let Ok(resp) = patched {
            assert!(!resp.status().is_success(), "PATCH answered {}", resp.status());
        }
        // The client goes on to complete anyway: not a 201.
        let put = http.put(format!("{}{location}?digest={digest}", relay.url)).send().await.unwrap();
        assert_ne!(put.status(), 201);
    });
    let upstream = Server::start(&data, &addr);
    let head = request(&upstream.addr, "HEAD", &format!("/v2/dies/midway/blobs/{digest}"), &[], b"");
    assert_eq!(head.status, 404);
    drop(relay);
}

#[test]
fn memory_stays_bounded_for_a_256_mib_layer() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Server::start(&dir.path().join("data"), &free_addr());
    let relay = Relay::start(&upstream.addr, dir.path(), &["--part-mib", "16"], &[]);
    let (body, digest) = streamed(256 * 1024 * 1024, 11);
    runtime().block_on(async {
        let http = client();
        assert_eq!(docker_push(&http, &relay.url, "big/mem", body, &digest).await, 201);
        let head = http.head(format!("http://{}/v2/big/mem/blobs/{digest}", upstream.addr)).send().await.unwrap();
        assert_eq!(head.status(), 200);
    });
    // Two 16 MiB pieces (one filling, one in flight) plus the process itself: 51 MiB measured
    // (debug build); 70 before pieces were mapped on their own (mod.rs), 152 before each piece
    // had one exact buffer.
    let peak = relay.peak_rss_kib();
    assert!(peak < 64 * 1024, "the relay peaked at {} MiB", peak / 1024);
    eprintln!("relay peak RSS after 256 MiB: {} MiB", peak / 1024);
}

/// An auth config in `dir` with user `ci` (password `a-long-password`) allowed to push `team/**`,
/// plus `extra` settings of its `[token]` table.
fn auth_config(dir: &Path, extra: &str) -> PathBuf {
    let config = dir.join("auth.toml");
    let admin = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    admin(&["key", "generate"], "");
    admin(&["user", "add", "ci", "--group", "builders"], "a-long-password\n");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[[access]]\nrepositories = [\"team/**\"]\nprincipals = [\"group:builders\"]\nactions = [\"pull\", \"push\"]\n");
    std::fs::write(&config, text).unwrap();
    if !extra.is_empty() {
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("[token]\n"), "{text}");
        std::fs::write(&config, text.replacen("[token]\n", &format!("[token]\n{extra}\n"), 1)).unwrap();
    }
    config
}

/// A `berth serve` with that auth config, and a relay logged in to it as `ci`.
fn relay_logged_in(dir: &Path, token_settings: &str) -> (Server, Relay) {
    let config = auth_config(dir, token_settings);
    let upstream = Server::start_with(&dir.join("data"), &free_addr(), &["--auth-config", config.to_str().unwrap()]);
    let relay = Relay::start(
        &upstream.addr,
        dir,
        &["--part-mib", "1", "--username", "ci"],
        &[("BERTH_PASSWORD", "a-long-password")],
    );
    (upstream, relay)
}

#[test]
fn the_relay_logs_in_upstream_while_the_client_sends_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, relay) = relay_logged_in(dir.path(), "");
    let (body, digest) = streamed(5 * 1024 * 1024 + 3, 13);
    runtime().block_on(async {
        let http = client();
        assert_eq!(docker_push(&http, &relay.url, "team/app", body, &digest).await, 201);
        // The upstream wants a token for it; the relay has one.
        let anonymous = http.head(format!("http://{}/v2/team/app/blobs/{digest}", upstream.addr)).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
        let via_relay = http.head(format!("{}/v2/team/app/blobs/{digest}", relay.url)).send().await.unwrap();
        assert_eq!(via_relay.status(), 200);
        // The relay's account may not push elsewhere: the client gets the refusal, no challenge
        // that would send it to log in upstream itself.
        let other = http.post(format!("{}/v2/other/app/blobs/uploads/", relay.url)).send().await.unwrap();
        assert!(other.status().is_client_error(), "{}", other.status());
        assert!(other.headers().get("www-authenticate").is_none());
    });
}

/// Upstream tokens live one second here (and are accepted for 30 more: the clock-skew leeway),
/// while the client takes 34 seconds to send its layer: every chunk after the first half-minute
/// reaches the upstream only because the relay renewed its token on the way.
#[test]
fn a_token_that_expires_mid_push_is_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, relay) = relay_logged_in(dir.path(), "ttl_secs = 1");
    const PIECES: usize = 34;
    const PIECE: usize = 1024 * 1024;
    let digest = format!(
        "sha256:{}",
        hex(&(0..PIECES).fold(Sha256::new(), |h, i| h.chain_update(piece_at(i * PIECE, PIECE, 21))).finalize())
    );
    // One piece a second, as a slow CI link would send it.
    let paced = futures_util::stream::unfold(0usize, |i| async move {
        if i == PIECES {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(piece_at(i * PIECE, PIECE, 21))), i + 1))
    });
    runtime().block_on(async {
        let http = client();
        let status = docker_push(&http, &relay.url, "team/slow", reqwest::Body::wrap_stream(paced), &digest).await;
        assert_eq!(status, 201, "relay log:\n{}", relay.log());
        let via_relay = http.head(format!("{}/v2/team/slow/blobs/{digest}", relay.url)).send().await.unwrap();
        assert_eq!(via_relay.status(), 200);
    });
}

/// The relay killed in the middle of a layer: the client's request fails (no 2xx), and the
/// upstream shows nothing of the layer, since only a completed, verified upload becomes a blob.
#[test]
fn a_relay_killed_mid_layer_leaves_nothing_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Server::start(&dir.path().join("data"), &free_addr());
    let mut relay = Relay::start(&upstream.addr, dir.path(), &["--part-mib", "1"], &[]);
    const PIECES: usize = 40;
    const PIECE: usize = 256 * 1024;
    let digest = format!(
        "sha256:{}",
        hex(&(0..PIECES).fold(Sha256::new(), |h, i| h.chain_update(piece_at(i * PIECE, PIECE, 9))).finalize())
    );
    let paced = futures_util::stream::unfold(0usize, |i| async move {
        if i == PIECES {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from(piece_at(i * PIECE, PIECE, 9))), i + 1))
    });
    runtime().block_on(async {
        let http = client();
        let post = http.post(format!("{}/v2/team/killed/blobs/uploads/", relay.url)).send().await.unwrap();
        assert_eq!(post.status(), 202);
        let location = post.headers()["location"].to_str().unwrap().to_owned();
        let patch = tokio::spawn(http.patch(format!("{}{location}", relay.url)).body(reqwest::Body::wrap_stream(paced)).send());
        // About half the layer is through (and some of it upstream) when the relay dies.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        relay.child.kill().unwrap();
        relay.child.wait().unwrap();
        // Usually the connection breaks (what docker sees); an answer must not be a success.
        if let Ok(resp) = patch.await.unwrap() {
            assert!(!resp.status().is_success(), "PATCH answered {} after the relay died", resp.status());
        }
        let head = http.head(format!("http://{}/v2/team/killed/blobs/{digest}", upstream.addr)).send().await.unwrap();
        assert_eq!(head.status(), 404, "a half-sent layer is visible upstream");
    });
}

/// A stand-in for Berth on Lambda: it offers direct uploads, hands out part URLs that point at
/// its own `/storage/N`, refuses PATCHes and bodies without a Content-Length at storage (as S3
/// does), and at completion assembles the parts and checks the digest and part sizes.
mod fake_direct {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use sha2::{Digest, Sha256};

    pub const MIN_PART: usize = 5 * 1024 * 1024;

    #[derive(Default)]
    pub struct Store {
        pub parts: BTreeMap<u32, Vec<u8>>,
        pub blobs: Vec<(String, usize)>,
        pub patches: usize,
    }

    pub async fn start() -> (String, Arc<Mutex<Store>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let store = Arc::new(Mutex::new(Store::default()));
        let (s, a) = (store.clone(), addr.clone());
        let app = axum::Router::new().fallback(move |method: http::Method, uri: http::Uri, headers: http::HeaderMap, body: Bytes| {
            let (store, addr) = (s.clone(), a.clone());
            async move { handle(&store, &addr, method, uri, headers, body) }
        })
        .layer(axum::extract::DefaultBodyLimit::disable());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, store)
    }

    fn handle(
        store: &Mutex<Store>,
        addr: &str,
        method: http::Method,
        uri: http::Uri,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> http::Response<axum::body::Body> {
        let path = uri.path();
        let query = uri.query().unwrap_or_default();
        let reply = |status: u16, hdrs: &[(&str, String)], body: String| {
            let mut r = http::Response::builder().status(status);
            for (k, v) in hdrs {
                r = r.header(*k, v);
            }
            r.body(axum::body::Body::from(body)).unwrap()
        };
        let mut store = store.lock().unwrap();
        // The relay's --token on every registry call; storage URLs are checked for none below.
        if path.starts_with("/v2/") && path != "/v2/" && headers.get("authorization").is_none_or(|v| v != "Bearer secret") {
            return reply(401, &[], r#"{"errors":[{"code":"UNAUTHORIZED","message":"no token"}]}"#.into());
        }
        match (&method, path) {
            (&http::Method::GET, "/v2/") => reply(200, &[], "{}".into()),
            (&http::Method::POST, p) if p.ends_with("/blobs/uploads/") => reply(
                202,
                &[
                    ("location", format!("http://{addr}/v2/d/app/blobs/uploads/s1")),
                    ("berth-direct-upload", "parts".into()),
                    ("oci-chunk-max-length", "4500000".into()),
                ],
                String::new(),
            ),
            (&http::Method::POST, p) if p.ends_with("/parts") => {
                let arg = |k: &str| {
                    query.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).and_then(|v| v.parse::<u32>().ok())
                };
                let (first, count) = (arg("first").unwrap_or(1), arg("count").unwrap_or(100));
                let parts: Vec<_> = (first..first + count)
                    .map(|n| serde_json::json!({"number": n, "url": format!("http://{addr}/storage/{n}?X-Amz-Signature=x")}))
                    .collect();
                let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 900;
                let json = serde_json::json!({"parts": parts, "min_part_size": MIN_PART, "max_part_size": 5u64 << 30, "max_parts": 10000, "expires": expires});
                reply(200, &[("content-type", "application/json".into())], json.to_string())
            }
            (&http::Method::PUT, p) if p.starts_with("/storage/") => {
                if headers.contains_key("authorization") {
                    return reply(400, &[], "a registry token sent to storage".into());
                }
                if !headers.contains_key("content-length") || headers.contains_key("transfer-encoding") {
                    return reply(411, &[], "MissingContentLength".into());
                }
                let n: u32 = p.trim_start_matches("/storage/").parse().unwrap();
                store.parts.insert(n, body.to_vec());
                reply(200, &[("etag", "\"x\"".into())], String::new())
            }
            (&http::Method::PATCH, _) => {
                store.patches += 1;
                reply(400, &[], r#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"direct session"}]}"#.into())
            }
            (&http::Method::PUT, p) if p.ends_with("/uploads/s1") => {
                let digest = query.trim_start_matches("digest=").replace("%3A", ":");
                let parts = std::mem::take(&mut store.parts);
                let sizes: Vec<usize> = parts.values().map(Vec::len).collect();
                if sizes.iter().rev().skip(1).any(|&s| s < MIN_PART) || !parts.keys().copied().eq(1..=parts.len() as u32) {
                    return reply(400, &[], format!("bad parts {sizes:?}"));
                }
                let mut whole: Vec<u8> = parts.into_values().flatten().collect();
                whole.extend_from_slice(&body);
                let got = format!("sha256:{}", super::hex(&Sha256::digest(&whole)));
                if got != digest {
                    return reply(400, &[], r#"{"errors":[{"code":"DIGEST_INVALID","message":"x"}]}"#.into());
                }
                store.blobs.push((digest.clone(), whole.len()));
                reply(201, &[("location", format!("http://{addr}/v2/d/app/blobs/{digest}"))], String::new())
            }
            (&http::Method::DELETE, _) => reply(204, &[], String::new()),
            _ => reply(404, &[], String::new()),
        }
    }
}

#[test]
fn direct_parts_go_to_storage_urls_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (addr, store) = rt.block_on(fake_direct::start());
    let relay = Relay::start(&addr, dir.path(), &["--part-mib", "5", "--jobs", "3", "--token", "secret"], &[]);
    let len = 23 * 1024 * 1024 + 5;
    let (body, digest) = streamed(len, 17);
    let (small_body, small_digest) = streamed(1024 * 1024, 19);
    rt.block_on(async {
        let http = client();
        assert_eq!(docker_push(&http, &relay.url, "d/app", body, &digest).await, 201);
        // Under the upstream's OCI-Chunk-Max-Length: one PUT with the bytes, no parts.
        assert_eq!(docker_push(&http, &relay.url, "d/app", small_body, &small_digest).await, 201);
    });
    let store = store.lock().unwrap();
    assert_eq!(store.blobs, vec![(digest, len), (small_digest, 1024 * 1024)]);
    assert_eq!(store.patches, 0);
    let log = relay.log();
    assert!(log.contains("pieces=5 direct=true"), "{log}");
    assert!(log.contains("pieces=0 direct=false"), "{log}");
}

#[test]
fn a_stalled_client_fails_its_upload_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Server::start(&dir.path().join("data"), &free_addr());
    let relay = Relay::start(&upstream.addr, dir.path(), &["--part-mib", "1", "--idle-timeout", "1"], &[]);
    runtime().block_on(async {
        let http = client();
        let post = http.post(format!("{}/v2/stalled/app/blobs/uploads/", relay.url)).send().await.unwrap();
        let location = post.headers()["location"].to_str().unwrap().to_owned();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let patch = tokio::spawn(http.patch(format!("{}{location}", relay.url)).body(body).send());
        tx.send(Ok(Bytes::from(vec![1u8; 1500 * 1024]))).await.unwrap();
        // Then nothing, with the connection open.
        let answered = tokio::time::timeout(Duration::from_secs(20), patch).await.expect("the relay gave up").unwrap();
        if let Ok(resp) = answered {
            assert_eq!(resp.status(), 400);
        }
        drop(tx);
        let status = http.get(format!("{}{location}", relay.url)).send().await.unwrap();
        assert_eq!(status.status(), 404, "the session outlived its stalled client");
    });
}
