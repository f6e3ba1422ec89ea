//! Webhooks from `berth serve` to real local receivers (docs/webhooks.md): every delivery
//! signed, a receiver that fails the first attempts still gets every event (none twice under
//! different ids), and one that is down while `berth serve` restarts gets every event after the
//! restart (the outbox is durable). Then replication outcomes as webhook events
//! (`replication_done`, `replication_failed`, both formats) and the GC and replication run
//! metrics on `/metrics`.
//!
//! This file starts its own `berth serve` (BERTH_BIN) with a `[webhooks]` config on a free
//! port, restarts it on the same data directory and port, and runs the receivers in-process on
//! 127.0.0.1. With BERTH_URL (another runtime) it skips: the Worker and Lambda do not deliver
//! webhooks yet.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use hmac::{KeyInit, Mac};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "webhook-test-secret-0123456789";

static SERVER_PID: AtomicI32 = AtomicI32::new(0);
/// The replication destination's `berth serve`.
static DEST_PID: AtomicI32 = AtomicI32::new(0);
static DATA: OnceLock<PathBuf> = OnceLock::new();

fn bin() -> PathBuf {
    std::env::var_os("BERTH_BIN").map(PathBuf::from).unwrap_or_else(default_bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One delivery as a receiver got it.
#[derive(Clone, Debug)]
struct Got {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Got {
    fn id(&self) -> String {
        self.headers.get("berth-event-id").cloned().unwrap_or_default()
    }
    /// What the event is about, whatever its id: (kind, digest, tag).
    fn what(&self) -> (String, String, String) {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        let e = &v["events"][0];
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        (s(&e["berth"]["kind"]), s(&e["target"]["digest"]), s(&e["target"]["tag"]))
    }
}

/// A receiver on 127.0.0.1: answers 500 to the first `fail_first` attempts of each event id,
/// then 200, and records every request.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    /// Attempts per event id answered 500 before 200 (changeable while it runs).
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(port: u16, fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let seen = got.clone();
        let fail_first = Arc::new(AtomicUsize::new(fail_first));
        let failing = fail_first.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let seen = seen.clone();
                let fail_first = failing.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut conn).await else { return };
                    let status = {
                        let mut all = seen.lock().unwrap();
                        let before = all.iter().filter(|g| g.id() == request.id()).count();
                        all.push(request);
                        if before < fail_first { 500 } else { 200 }
                    };
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        Receiver { port, got, fail_first }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn ids(&self) -> HashSet<String> {
        self.got().iter().map(Got::id).collect()
    }
}

/// A minimal HTTP/1.1 request reader: headers, then a Content-Length body (bounded).
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Got> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = buf[end..].to_vec();
    while body.len() < length.min(1 << 20) {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Got { headers, body })
}

/// The receiver's side of the signature (docs/webhooks.md): HMAC-SHA256 of "t.body".
fn signature_holds(got: &Got) -> bool {
    let Some(header) = got.headers.get("berth-signature") else { return false };
    let parts: HashMap<&str, &str> = header.split(',').filter_map(|p| p.split_once('=')).collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if t.parse::<u64>().map_or(true, |t| t.abs_diff(now) > 300) {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&got.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    expected == *v1
}

fn config(dir: &std::path::Path, ports: &[(&str, u16)], max_attempts: u32) -> PathBuf {
    let mut text = format!("[webhooks]\nretry_base_secs = 1\nretry_max_secs = 2\nmax_attempts = {max_attempts}\n");
    for (name, port) in ports {
        text += &format!(
            "[[webhooks.endpoints]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\n\
             allow_private = true\nevents = [\"push\", \"tag\", \"tag_moved\"]\n"
        );
    }
    let path = dir.join("webhooks.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `berth serve` and waits until it answers.
fn start(dir: &std::path::Path, port: u16, config: &std::path::Path, extra: &[String]) -> Arc<AtomicBool> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
    let args: Vec<String> = vec![
        "serve".to_string(),
        "--addr".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.join("store").to_string_lossy().into_owned(),
        "--policy-config".into(),
        config.to_string_lossy().into_owned(),
        "--webhook-interval".into(),
        "100".into(),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .collect();
    let (pid, exited) = spawn_owned(&bin(), args, log);
    SERVER_PID.store(pid, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline && !exited.load(Ordering::SeqCst),
            "berth serve did not start; log:\n{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    exited
}

/// SIGTERM, then waits for the process to end (SIGKILL after 10 s).
fn stop(exited: &AtomicBool) {
    let pid = SERVER_PID.swap(0, Ordering::SeqCst);
    if pid <= 0 {
        return;
    }
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exited.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

extern "C" fn cleanup() {
    for pid in [SERVER_PID.load(Ordering::SeqCst), DEST_PID.load(Ordering::SeqCst)] {
        if pid > 0 {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Some(dir) = DATA.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every delivery is signed, and no event went under two ids.
fn check(name: &str, got: &[Got]) {
    for g in got {
        assert!(signature_holds(g), "{name}: a delivery's signature does not verify: {:?}", g.headers);
        assert_eq!(g.headers.get("content-type").map(String::as_str), Some("application/vnd.docker.distribution.events.v1+json"));
    }
    let mut ids_of: HashMap<(String, String, String), HashSet<String>> = HashMap::new();
    for g in got {
        ids_of.entry(g.what()).or_default().insert(g.id());
    }
    for (what, ids) in ids_of {
        assert_eq!(ids.len(), 1, "{name}: event {what:?} arrived under several ids: {ids:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_through_failures_and_a_restart() {
    if std::env::var("BERTH_URL").is_ok_and(|u| !u.trim().is_empty()) {
        return skip("webhook delivery is tested on berth serve only (the Worker and Lambda do not deliver yet)");
    }
    let dir = DATA
        .get_or_init(|| {
            let d = std::env::temp_dir().join(format!("berth-webhooks-{}-{}", std::process::id(), run_id()));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .clone();
    unsafe { libc::atexit(cleanup) };
    let (good, flaky, down) = (free_port(), free_port(), free_port());
    let good = Receiver::start(good, 0).await;
    let flaky = Receiver::start(flaky, 2).await;
    let config = config(&dir, &[("good", good.port), ("flaky", flaky.port), ("down", down)], 30);
    let port = free_port();
    std::env::set_var("BERTH_URL", format!("http://127.0.0.1:{port}"));
    let exited = start(&dir, port, &config, &[]);

    // Three tagged pushes and a tag moved: push + tag for each, and one tag_moved.
    let repo = repo("hooks");
    let mut pushed = Vec::new();
    for tag in ["a", "b", "a"] {
        pushed.push(push_image(&repo, tag).await.digest);
    }
    const EVENTS: usize = 7;
    wait_for("every event at the good receiver", 30, || good.ids().len() == EVENTS).await;
    wait_for("every event at the flaky receiver", 60, || flaky.ids().len() == EVENTS && flaky.got().len() == 3 * EVENTS).await;
    assert_eq!(good.got().len(), EVENTS, "a receiver that answers 200 gets each event once");
    assert_eq!(good.ids(), flaky.ids(), "the same event ids for every endpoint");
    let moved: Vec<Got> = good.got().into_iter().filter(|g| g.what().0 == "tag_moved").collect();
    assert_eq!(moved.len(), 1);
    let e: serde_json::Value = serde_json::from_slice(&moved[0].body).unwrap();
    assert_eq!(e["events"][0]["berth"]["previousDigest"], pushed[0].as_str());
    assert_eq!(e["events"][0]["target"]["digest"], pushed[2].as_str());
    assert_eq!(e["events"][0]["target"]["repository"], repo.as_str());
    assert_eq!(e["events"][0]["request"]["method"], "PUT");

    // The third receiver has been down all along; berth serve restarts while it is.
    stop(&exited);
    let exited = start(&dir, port, &config, &[]);
    let down = Receiver::start(down, 0).await;
    wait_for("every event at the receiver that was down during the restart", 30, || down.ids().len() == EVENTS).await;
    assert_eq!(down.ids(), good.ids());
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (name, r) in [("good", &good), ("flaky", &flaky), ("down", &down)] {
        check(name, &r.got());
    }
    assert_eq!(down.got().len(), EVENTS, "delivered once each after the restart");
    stop(&exited);

    // Nothing is left as failed (offline admin command on the stopped server's data).
    assert_eq!(admin(&dir, &["failed"]), "");

    // A receiver that fails every attempt: after max_attempts the deliveries are kept as
    // failed, listed, and once it is fixed, redelivered with the ids they always had.
    let broken = Receiver::start(free_port(), usize::MAX).await;
    let config = self::config(&dir, &[("broken", broken.port)], 2);
    let exited = start(&dir, port, &config, &[]);
    let digest = push_image(&repo, "c").await.digest;
    let listed = |out: &str| out.lines().map(|l| l.split('\t').next().unwrap().to_owned()).collect::<HashSet<_>>();
    wait_for("two failed attempts of each event", 30, || broken.got().len() == 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(&exited);
    let failed = admin(&dir, &["failed"]);
    let ids = listed(&failed);
    assert_eq!(ids.len(), 2, "push and tag kept as failed:\n{failed}");
    assert!(failed.contains("attempts=2") && failed.contains("the receiver answered 500"), "{failed}");
    assert!(admin(&dir, &["failed", "--json"]).contains(&digest));
    broken.fail_first.store(0, Ordering::SeqCst);
    assert!(admin(&dir, &["redeliver", "--all"]).starts_with("2 deliveries"));
    assert_eq!(admin(&dir, &["failed"]), "");
    let exited = start(&dir, port, &config, &[]);
    wait_for("the redelivered events", 30, || broken.got().len() == 6).await;
    stop(&exited);
    let expected: HashSet<String> = ids.iter().map(|id| id.strip_suffix(".broken").unwrap().to_owned()).collect();
    assert_eq!(broken.ids(), expected, "redelivered under the ids they always had");
    check("broken", &broken.got());

    replication_events_and_run_metrics(&dir, port).await;
}

/// The same `berth serve` (same port: this process's client reads BERTH_URL once) with two
/// replication rules, one to a second `berth serve` and one to a port nobody listens on
/// (given up after two attempts), webhook endpoints for the replication outcomes in both
/// formats, GC every 300 ms and `--metrics-addr`: each outcome arrives once, signed, with the
/// rule, source and destination; /metrics shows the GC runs, what they freed, and the copies.
async fn replication_events_and_run_metrics(dir: &std::path::Path, port: u16) {
    let dest_port = free_port();
    let log = std::fs::File::create(dir.join("dest.log")).unwrap();
    let dest_data = dir.join("dest").to_string_lossy().into_owned();
    let dest_args = ["serve", "--addr", &format!("127.0.0.1:{dest_port}"), "--data-dir", &dest_data].map(String::from);
    let (pid, dest_exited) = spawn_owned(&bin(), dest_args.to_vec(), log);
    DEST_PID.store(pid, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", dest_port)).is_err() {
        assert!(Instant::now() < deadline && !dest_exited.load(Ordering::SeqCst), "the destination did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (dist, ce) = (Receiver::start(free_port(), 0).await, Receiver::start(free_port(), 0).await);
    let endpoint = |name: &str, port: u16, format: &str| {
        format!(
            "[[webhooks.endpoints]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\n\
             allow_private = true\nformat = \"{format}\"\nevents = [\"replication_done\", \"replication_failed\"]\n"
        )
    };
    let text = format!(
        "[webhooks]\n{}{}\
         [[policies.replication]]\nname = \"mirror\"\nrepositories = [\"**\"]\ndestination = \"http://127.0.0.1:{dest_port}\"\nprefix = \"copy\"\n\
         [[policies.replication]]\nname = \"dead\"\nrepositories = [\"**\"]\ndestination = \"http://127.0.0.1:{}\"\n\
         max_attempts = 2\nretry_base_secs = 1\n",
        endpoint("rep", dist.port, "distribution"),
        endpoint("rep-ce", ce.port, "cloudevents"),
        free_port(),
    );
    let config = dir.join("replication.toml");
    std::fs::write(&config, text).unwrap();
    let metrics_port = free_port();
    let extra: Vec<String> = [
        "--metrics-addr", &format!("127.0.0.1:{metrics_port}"), "--replication-interval", "100",
        "--gc-interval", "300ms", "--gc-grace", "2s", "--gc-settle", "2s",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let exited = start(dir, port, &config, &extra);

    let repo = repo("replicated");
    let pushed = push_image(&repo, "v1").await;
    wait_for("replication_done and replication_failed at both receivers", 30, || dist.got().len() == 2 && ce.got().len() == 2).await;
    // The destination has the image under the rule's prefix, with the same digest.
    let (status, head, _) = http_get(dest_port, &format!("/v2/copy/{repo}/manifests/v1"));
    assert_eq!((status, head.get("docker-content-digest")), (200, Some(&pushed.digest)));
    let body = |g: &Got| serde_json::from_slice::<serde_json::Value>(&g.body).unwrap();
    for g in dist.got().iter().chain(ce.got().iter()) {
        assert!(signature_holds(g), "a replication event's signature does not verify: {:?}", g.headers);
    }
    let by_kind = |r: &Receiver, kind: &str| r.got().into_iter().find(|g| g.headers.get("berth-event").map(String::as_str) == Some(kind)).unwrap();
    let done = body(&by_kind(&dist, "replication_done"))["events"][0].clone();
    assert_eq!(done["action"], "replication_done");
    assert_eq!((done["target"]["repository"].as_str(), done["target"]["tag"].as_str()), (Some(repo.as_str()), Some("v1")));
    assert_eq!(done["target"]["digest"], pushed.digest.as_str());
    assert_eq!(done["berth"]["detail"]["rule"], "mirror");
    assert_eq!(done["berth"]["detail"]["destinationRepository"], format!("copy/{repo}"));
    assert_eq!(done["berth"]["detail"]["attempts"], 1);
    let failed = body(&by_kind(&dist, "replication_failed"))["events"][0].clone();
    assert_eq!(failed["berth"]["detail"]["rule"], "dead");
    assert_eq!(failed["berth"]["detail"]["attempts"], 2, "given up after max_attempts = 2: {failed}");
    assert!(failed["berth"]["detail"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    let ce_failed = by_kind(&ce, "replication_failed");
    assert_eq!(ce_failed.headers.get("content-type").map(String::as_str), Some("application/cloudevents+json"));
    let ce_failed = body(&ce_failed);
    assert_eq!(ce_failed["type"], "io.berth.registry.replication_failed");
    assert_eq!(ce_failed["subject"], format!("{repo}:v1"));
    assert_eq!(ce_failed["id"], failed["id"], "one event, one id, whatever the format");
    assert_eq!(body(&by_kind(&ce, "replication_done"))["type"], "io.berth.registry.replication_done");

    // Garbage for GC: an image pushed, then deleted. (Its replications add copies too.)
    let victim = push_image(&repo, "gone").await;
    assert_eq!(delete(format!("/v2/{repo}/manifests/{}", victim.digest)).send().await.status, 202);
    let scrape = || http_get(metrics_port, "/metrics").2;
    let value = |text: &str, series: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
    };
    let mut text = String::new();
    wait_for("GC to delete the image's blobs", 30, || {
        text = scrape();
        value(&text, "berth_gc_deleted_blobs_total") > 0.0
    })
    .await;
    assert!(value(&text, "berth_gc_runs_total{result=\"ok\"}") >= 1.0, "{text}");
    assert_eq!(value(&text, "berth_gc_runs_total{result=\"error\"}"), 0.0, "{text}");
    assert!(value(&text, "berth_gc_freed_bytes_total") > 0.0, "{text}");
    assert!(value(&text, "berth_gc_last_run_timestamp_seconds") > 1.7e9, "{text}");
    assert!(text.contains("\nberth_gc_duration_seconds "), "{text}");
    assert!(value(&text, "berth_replication_copies_total{rule=\"mirror\",result=\"done\"}") >= 1.0, "{text}");
    assert!(value(&text, "berth_replication_copies_total{rule=\"dead\",result=\"retrying\"}") >= 1.0, "{text}");
    assert!(value(&text, "berth_replication_copies_total{rule=\"dead\",result=\"failed\"}") >= 1.0, "{text}");
    assert_eq!(value(&text, "berth_replication_copies_total{rule=\"mirror\",result=\"failed\"}"), 0.0, "{text}");
    assert!(value(&text, "berth_replication_last_success_timestamp_seconds{rule=\"mirror\"}") > 1.7e9, "{text}");
    assert!(!text.contains("berth_replication_last_success_timestamp_seconds{rule=\"dead\"}"), "{text}");
    assert!(value(&text, "berth_replication_failed_entries") >= 1.0, "{text}");
    assert!(text.contains("\nberth_replication_pending "), "{text}");
    stop(&exited);
    let pid = DEST_PID.swap(0, Ordering::SeqCst);
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

/// A plain HTTP/1.0 GET on 127.0.0.1: status, headers (lower-case names), body.
fn http_get(port: u16, path: &str) -> (u16, HashMap<String, String>, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\naccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n").unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = head.lines().skip(1).filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    (status, headers, body.to_owned())
}

/// Runs `berth webhooks ARGS --data-dir DIR/store` and returns its output.
fn admin(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(bin()).arg("webhooks").args(args).arg("--data-dir").arg(dir.join("store")).output().unwrap();
    assert!(out.status.success(), "berth webhooks {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
