//! `berth serve` on a full disk: a write that fails for lack of space is an error response, and
//! once space is freed the next write succeeds without a restart (redb alone refuses every
//! write after one failed commit until the database is reopened).
//!
//! Needs a small filesystem: a tmpfs mounted for the test (root, as in CI). Where mounting is not
//! permitted the test says so on stderr and returns.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

struct Mounted(tempfile::TempDir);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn small_fs(size: &str) -> Result<Mounted, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir.path())
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(Mounted(dir))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &Path, addr: &str) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--addr", addr, "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth starts");
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("berth serve exited before it answered: {status}");
        }
        if TcpStream::connect(addr).is_ok() && request(addr, "GET", "/v2/", &[], b"").0 != 0 {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("berth did not start listening on {addr}");
}

/// (status, body); status 0 when the exchange failed.
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return (0, String::new()) };
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body)).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    if stream.read_to_end(&mut raw).is_err() {
        return (0, String::new());
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn a_full_disk_fails_writes_until_space_is_freed_then_they_work_without_restart() {
    let fs = match small_fs("8m") {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("SKIPPED a_full_disk_fails_writes...: no small filesystem: {reason}");
            return;
        }
    };
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let _server = start(fs.0.path(), &addr);

    let config = b"{}";
    let layer = b"layer";
    for blob in [&config[..], &layer[..]] {
        let (status, text) = request(&addr, "POST", &format!("/v2/disk/app/blobs/uploads/?digest={}", sha256(blob)), &[], blob);
        assert_eq!(status, 201, "{text}");
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":5}}],"annotations":{{"pad":"{}"}}}}"#,
        sha256(config),
        sha256(layer),
        "x".repeat(30_000)
    );
    let push_tag = |tag: &str| {
        request(&addr, "PUT", &format!("/v2/disk/app/manifests/{tag}"), &[("Content-Type", OCI_MANIFEST)], manifest.as_bytes())
    };
    assert_eq!(push_tag("v1").0, 201);

    // Fill the filesystem, then push tags of the stored manifest: metadata writes only.
    let filler = fs.0.path().join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
    }
    let failed = (0..300).map(|i| push_tag(&format!("full-{i}"))).find(|(status, _)| *status != 201);
    let (status, text) = failed.expect("no push failed on a full disk");
    assert!(status >= 500, "a push on a full disk: {text}");

    std::fs::remove_file(&filler).unwrap();
    let (status, text) = push_tag("after");
    assert_eq!(status, 201, "a push once space was freed, same server: {text}");
    let (status, text) = request(&addr, "GET", "/v2/disk/app/manifests/after", &[("Accept", OCI_MANIFEST)], b"");
    assert_eq!(status, 200, "{text}");
    assert_eq!(request(&addr, "GET", "/v2/disk/app/manifests/v1", &[], b"").0, 200);
}
