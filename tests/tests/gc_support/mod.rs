//! What the garbage-collection tests share: a `berth serve` of their own on a data directory
//! they can inspect and collect offline, `berth gc` runs, and pulling an image completely.
//!
//! These tests need `berth gc` and the data directory, so they run against a spawned
//! `berth serve` only; with BERTH_URL (another runtime) they skip. Each test binary starts one
//! server and points the harness at it (BERTH_URL), as tests/auth.rs does.

#![allow(dead_code)]

pub mod race;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

pub struct Server {
    pub port: u16,
    pub data: PathBuf,
    pid: i32,
    exited: Arc<AtomicBool>,
}

pub fn bin() -> PathBuf {
    std::env::var_os("BERTH_BIN").map(PathBuf::from).unwrap_or_else(default_bin)
}

/// A fresh data directory under the system temp dir (removed by [`Server::cleanup`]).
pub fn data_dir(label: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("berth-gc-{label}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `berth serve` on `port` (0: a free one) with `extra` flags, and waits until it answers.
pub fn start(data: &Path, port: u16, extra: &[&str]) -> Server {
    let port = if port == 0 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    } else {
        port
    };
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data.join("server.log")).unwrap();
    let mut args = vec![
        "serve".to_string(),
        "--addr".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data.join("store").to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (pid, exited) = spawn_owned(&bin(), args, log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline && !exited.load(Ordering::SeqCst),
            "berth serve did not come up; log:\n{}",
            std::fs::read_to_string(data.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { port, data: data.to_path_buf(), pid, exited }
}

impl Server {
    /// SIGTERM, and wait for the process to end (its database is then free for `berth gc`).
    pub fn stop(&self) {
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.exited.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn store(&self) -> PathBuf {
        self.data.join("store")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    pub fn cleanup(&self) {
        if std::env::var_os("BERTH_KEEP_DATA").is_none() {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

/// True (and recorded as a skip) when the suite targets another runtime.
pub fn other_runtime() -> bool {
    if std::env::var_os("BERTH_URL").is_some() {
        skip("needs `berth gc` and the data directory of a spawned `berth serve`");
        return true;
    }
    false
}

/// Points the harness at this server (before its first request).
pub fn target_server(server: &Server) {
    std::env::set_var("BERTH_URL", format!("http://127.0.0.1:{}", server.port));
}

/// `berth gc --json ARGS` on the store; its report.
pub fn gc(store: &Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(bin())
        .arg("gc")
        .arg("--data-dir")
        .arg(store)
        .arg("--json")
        .args(args)
        .output()
        .expect("run berth gc");
    assert!(out.status.success(), "berth gc failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("report: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Every file under `dir` with its size, sorted.
pub fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push((e.path(), meta.len()));
        }
    }
    out.sort();
    out
}

pub fn bytes_in(dir: &Path) -> u64 {
    files(dir).iter().map(|(_, n)| n).sum()
}

/// Pulls `reference` from `repo` as a client does: the manifest (digest checked), then every
/// blob (content checked) or, for an index, every child. Err says what is missing.
pub async fn pull(repo: &str, reference: &str) -> Result<(), String> {
    let r = get(format!("/v2/{repo}/manifests/{reference}"))
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}"))
        .send()
        .await;
    if r.status != 200 {
        return Err(format!("{repo}:{reference}: manifest {}", r.status));
    }
    if reference.starts_with("sha256:") && sha256(&r.body) != reference {
        return Err(format!("{repo}:{reference}: manifest digest differs"));
    }
    let m: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    if let Some(children) = m["manifests"].as_array() {
        for c in children {
            Box::pin(pull(repo, c["digest"].as_str().unwrap())).await?;
        }
        return Ok(());
    }
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    blobs.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()));
    for d in blobs {
        let g = get_blob(repo, &d, &[]).await;
        if g.status != 200 {
            return Err(format!("{repo}:{reference}: blob {d} {}", g.status));
        }
        if sha256(&g.body) != d {
            return Err(format!("{repo}:{reference}: blob {d} content differs"));
        }
    }
    Ok(())
}
