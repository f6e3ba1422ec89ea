//! Tag policies over HTTP (docs/policies.md): immutable tags (never moved nor deleted, nor the
//! manifest they point at; the same digest may be pushed again) and refused tags, with the
//! 403 DENIED a client gets; and how `berth serve` loads policies without and with auth.
//!
//! The registry must run with tests/tests/policies/policy.toml. Without BERTH_URL this file
//! starts its own `berth serve --policy-config` (auth off, as `berth serve`'s default) on a
//! free port. With BERTH_URL (another runtime, started without this policy) the tests skip,
//! unless BERTH_POLICY_URL names a registry started with it, which they then run against.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

static SERVER_PID: AtomicI32 = AtomicI32::new(0);
/// Whether the tests run (false: skip); set once.
static READY: OnceLock<bool> = OnceLock::new();
/// The spawned server's data directory, removed at exit.
static DATA: OnceLock<PathBuf> = OnceLock::new();

fn policy_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/policies/policy.toml")
}

fn bin() -> PathBuf {
    std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(default_bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory under the system temp dir, removed by the caller.
fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-policies-{label}-{}-{}", std::process::id(), run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Points the harness at a registry with the test policy; false: skip (see the file's doc).
fn policy_target() -> bool {
    *READY.get_or_init(|| {
        if let Ok(url) = std::env::var("BERTH_POLICY_URL") {
            std::env::set_var("BERTH_URL", url);
            return true;
        }
        if std::env::var("BERTH_URL").is_ok_and(|u| !u.trim().is_empty()) {
            return false;
        }
        let data = DATA.get_or_init(|| scratch("serve")).clone();
        let port = free_port();
        let log = std::fs::File::create(data.join("server.log")).unwrap();
        let args = vec![
            "serve".to_string(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            data.join("store").to_string_lossy().into_owned(),
            "--policy-config".into(),
            policy_file().to_string_lossy().into_owned(),
        ];
        let (pid, exited) = spawn_owned(&bin(), args, log);
        SERVER_PID.store(pid, Ordering::SeqCst);
        unsafe { libc::atexit(stop_server) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline && !exited.load(Ordering::SeqCst),
                "berth serve --policy-config did not start; log:\n{}",
                std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::env::set_var("BERTH_URL", format!("http://127.0.0.1:{port}"));
        true
    })
}

extern "C" fn stop_server() {
    let pid = SERVER_PID.load(Ordering::SeqCst);
    if pid > 0 {
        unsafe { libc::kill(pid, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if let Some(dir) = DATA.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

macro_rules! needs_policy {
    () => {
        if !policy_target() {
            return skip(
                "BERTH_URL's registry was not started with tests/tests/policies/policy.toml (set BERTH_POLICY_URL)",
            );
        }
    };
}

fn assert_denied(resp: &Resp, words: &[&str]) {
    let v = assert_oci_error(resp, 403, "DENIED");
    let message = v["message"].as_str().unwrap_or_default().to_string();
    for w in words {
        assert!(message.contains(w), "message {message:?} lacks {w:?}");
    }
}

#[tokio::test]
async fn an_immutable_tag_is_never_moved_and_a_retry_succeeds() {
    needs_policy!();
    let repo = repo("prod-app");
    let one = push_image(&repo, "v1").await;
    // The same digest again: CI retries must pass.
    push_manifest(&repo, "v1", OCI_MANIFEST, &one.bytes).await;
    let two = push_image(&repo, "").await;
    let r = put_manifest(&repo, "v1", OCI_MANIFEST, &two.bytes).await;
    assert_denied(&r, &["immutable", &one.digest, &two.digest]);
    // By digest with ?tag=.
    let r = put_manifest(&repo, &format!("{}?tag=v1", two.digest), OCI_MANIFEST, &two.bytes).await;
    assert_denied(&r, &["immutable"]);
    let r = get(format!("/v2/{repo}/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await;
    assert_status(&r, 200);
    assert_header(&r, "docker-content-digest", &one.digest);
    // A mutable tag in the same repository moves.
    push_manifest(&repo, "main", OCI_MANIFEST, &one.bytes).await;
    push_manifest(&repo, "main", OCI_MANIFEST, &two.bytes).await;
    // A repository the rule does not cover.
    let dev = common::repo("dev-app");
    let a = push_image(&dev, "v1").await;
    let b = push_image(&dev, "v1").await;
    assert_ne!(a.digest, b.digest);
}

#[tokio::test]
async fn an_immutable_tag_and_its_manifest_cannot_be_deleted() {
    needs_policy!();
    let repo = repo("prod-del");
    let one = push_image(&repo, "v1").await;
    assert_denied(
        &delete(format!("/v2/{repo}/manifests/v1")).send().await,
        &["immutable", "cannot be deleted"],
    );
    let r = delete(format!("/v2/{repo}/manifests/{}", one.digest)).send().await;
    assert_denied(&r, &["immutable tag v1 points at it"]);
    assert_status(&get(format!("/v2/{repo}/manifests/v1")).send().await, 200);
    // A manifest only mutable tags name is deleted as before.
    let two = push_image(&repo, "main").await;
    assert_status(
        &delete(format!("/v2/{repo}/manifests/{}", two.digest)).send().await,
        202,
    );
}

#[tokio::test]
async fn a_refused_tag_is_never_created() {
    needs_policy!();
    let repo = repo("prod-refuse");
    let one = push_image(&repo, "").await;
    let r = put_manifest(&repo, "latest", OCI_MANIFEST, &one.bytes).await;
    assert_denied(&r, &["tag latest is not allowed", "push a version tag"]);
    let r = put_manifest(
        &repo,
        &format!("{}?tag=v1&tag=latest", one.digest),
        OCI_MANIFEST,
        &one.bytes,
    )
    .await;
    assert_denied(&r, &["latest"]);
    let r = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_status(&r, 200);
    assert_eq!(
        r.json()["tags"],
        serde_json::json!([]),
        "no tag of the refused push was applied"
    );
    push_image(&common::repo("dev-refuse"), "latest").await;
}

/// What the web interface reads (docs/ui.md): the rules that apply to a repository, and
/// which of its tags are immutable.
#[tokio::test]
async fn the_policy_state_and_immutable_tags_are_readable() {
    needs_policy!();
    let repo = repo("prod-state");
    let one = push_image(&repo, "v1").await;
    push_manifest(&repo, "main", OCI_MANIFEST, &one.bytes).await;
    let r = get(format!("/v2/{repo}/_berth/policy")).send().await;
    assert_status(&r, 200);
    let state = r.json();
    assert_eq!(state["immutable_tags"], serde_json::json!([{ "rule": 1, "tags": ["v*"] }]));
    assert_eq!(
        state["refused_tags"],
        serde_json::json!([{ "rule": 1, "tags": ["latest"], "message": "push a version tag" }])
    );
    let tags = get(format!("/v2/{repo}/_berth/tags")).send().await.json();
    assert_eq!(tags["tags"][0]["name"], "main");
    assert!(tags["tags"][0].get("immutable").is_none(), "{tags}");
    assert_eq!((tags["tags"][1]["name"].clone(), tags["tags"][1]["immutable"].clone()), ("v1".into(), 1.into()));
    // A repository no rule covers.
    let dev = common::repo("dev-state");
    push_image(&dev, "v1").await;
    let state = get(format!("/v2/{dev}/_berth/policy")).send().await.json();
    assert_eq!((state["immutable_tags"].clone(), state["refused_tags"].clone()), (serde_json::json!([]), serde_json::json!([])));
}

/// Runs `berth serve FLAG FILE` (FILE holding `config`, plus a signing key made by `berth key
/// generate` when `key`) until it answers or exits; returns (the status of GET /v2/, None if it
/// exited; its log).
fn serve_once(label: &str, config: &str, key: bool, flag: &str) -> (Option<u16>, String) {
    let dir = scratch(label);
    let file = dir.join("config.toml");
    std::fs::write(&file, config).unwrap();
    if key {
        let out = Command::new(bin())
            .args(["key", "generate", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "berth key generate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let port = free_port();
    let mut child = Command::new(bin())
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.join("store"))
        .arg(flag)
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if child.try_wait().unwrap().is_some() {
            break None;
        }
        if let Some(code) = status_of_v2(port) {
            break Some(code);
        }
        assert!(Instant::now() < deadline, "berth serve neither answered nor exited");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (status, log)
}

fn status_of_v2(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

/// Loading, on `berth serve` itself (nothing here depends on BERTH_URL): a policies-only file
/// leaves auth off; the same policies in an auth config leave auth on, as any auth config does
/// today (users or not), and an auth config without a key is refused as it was; a policy file
/// with an auth table, or a bad rule, stops start-up.
#[test]
fn berth_serve_loads_policies_without_changing_auth() {
    if !bin().exists() {
        return skip("no berth binary (BERTH_BIN)");
    }
    let policies = std::fs::read_to_string(policy_file()).unwrap();
    assert_eq!(
        serve_once("only", &policies, false, "--policy-config").0,
        Some(200),
        "auth stays off"
    );
    assert_eq!(
        serve_once("in-auth", &policies, true, "--auth-config").0,
        Some(401),
        "an auth config turns auth on"
    );
    let public = format!("[[access]]\nrepositories = [\"**\"]\npublic = true\n{policies}");
    assert_eq!(
        serve_once("no-users", &public, true, "--auth-config").0,
        Some(401),
        "no users: auth still on"
    );
    let (status, log) = serve_once("no-key", &policies, false, "--auth-config");
    assert_eq!(status, None, "an auth config without a key is refused, as before");
    assert!(log.contains("needs at least one private key"), "{log}");
    let (status, log) = serve_once("auth-table", &public, false, "--policy-config");
    assert_eq!(
        status, None,
        "a policy file with [[access]] must not start (auth would be off)"
    );
    assert!(log.contains("[access] belongs in the auth config"), "{log}");
    let bad = "[[policies.retention]]\nrepositories = [\"team/**\"]\nkeep_last = 0\n";
    let (status, log) = serve_once("bad", bad, false, "--policy-config");
    assert_eq!(status, None);
    assert!(log.contains("policies.retention rule 1: keep_last = 0"), "{log}");
    let (status, log) = serve_once("bad-in-auth", &format!("{public}{bad}"), true, "--auth-config");
    assert_eq!(status, None);
    // After the policy file's own retention rules (one, for the preview test).
    let n = policies.matches("[[policies.retention]]").count() + 1;
    assert!(log.contains(&format!("policies.retention rule {n}: keep_last = 0")), "{log}");
}

/// A quota of 2 KiB over `*/quota-*`: a blob that fits is counted once however many of its
/// repositories hold it; one over the rest is 403 DENIED naming the quota and the usage, and
/// is not in the repository; `GET /v2/_berth/quotas` reports the usage.
#[tokio::test]
async fn a_push_over_quota_is_refused() {
    needs_policy!();
    let (a, b) = (common::repo("quota-a"), common::repo("quota-b"));
    let layer = random_bytes(1500);
    push_blob(&a, &layer).await;
    push_blob(&b, &layer).await;
    let big = random_bytes(1000);
    let r = post(format!("/v2/{a}/blobs/uploads/?digest={}", sha256(&big))).body(big.clone()).send().await;
    let v = assert_oci_error(&r, 403, "DENIED");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("quota small exceeded") && message.contains("1500 bytes) used"), "{message}");
    assert_eq!(v["detail"]["used"], 1500);
    assert_status(&head(format!("/v2/{a}/blobs/{}", sha256(&big))).send().await, 404);
    let r = get("/v2/_berth/quotas").send().await;
    assert_status(&r, 200);
    assert_eq!(r.json()["quotas"][0]["name"], "small");
    assert_eq!(r.json()["quotas"][0]["limit"], 2048);
    assert_eq!(r.json()["quotas"][0]["used"], 1500);
    // The admin command reads the same endpoint.
    if bin().exists() {
        let out = Command::new(bin()).args(["quota", "usage", "--url", &target().base_url()]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.starts_with("small\t1.5 KiB of 2.0 KiB (73.2%)\t1500 of 2048 bytes\t*/quota-*"), "{text}");
    }
}

/// `GET /v2/<name>/_berth/retention`: what the rule covering `*/ret-*` (keep_last = 1) would
/// delete now, read-only: the older tag and its manifest, which no kept tag names.
#[tokio::test]
async fn the_retention_preview_names_what_a_run_would_delete() {
    needs_policy!();
    let repo = repo("ret-preview");
    let old = push_image(&repo, "old").await;
    // Push times are whole seconds: the second push is a later second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let new = push_image(&repo, "new").await;
    let r = get(format!("/v2/{repo}/_berth/retention")).send().await;
    assert_status(&r, 200);
    let body = r.json();
    let tags: Vec<&str> = body["tags"].as_array().expect("tags").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(tags, ["old"], "{body}");
    let manifests: Vec<&str> = body["manifests"].as_array().expect("manifests").iter().filter_map(|m| m["digest"].as_str()).collect();
    assert_eq!(manifests, [old.digest.as_str()], "{body}");
    assert!(body["rule"].as_u64().is_some(), "{body}");
    // Read-only: both tags still resolve.
    for (tag, image) in [("old", &old), ("new", &new)] {
        let r = get(format!("/v2/{repo}/manifests/{tag}")).header("accept", OCI_MANIFEST).send().await;
        assert_status(&r, 200);
        assert_header(&r, "docker-content-digest", &image.digest);
    }
    // A repository no rule covers: nothing.
    let dev = common::repo("dev-ret");
    push_image(&dev, "v1").await;
    let body = get(format!("/v2/{dev}/_berth/retention")).send().await.json();
    assert_eq!((body["rule"].is_null(), body["tags"].clone()), (true, serde_json::json!([])), "{body}");
}
