//! Crash safety of `berth serve` on its embedded storage: a server killed with SIGKILL in the
//! middle of an upload, and a client that hangs up mid-body, leave nothing partial visible, and a
//! restart keeps everything that was acknowledged — including an upload's acknowledged chunks.
//!
//! Speaks raw HTTP/1.1 over TcpStream, so a test can stop writing a body halfway.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data: &Path, addr: &str) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--addr", addr, "--data-dir"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth starts");
        let mut server = Server { child, addr: addr.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("berth serve on {addr} exited before it answered: {status}");
            }
            if answers_http(&server.addr) {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("berth did not start listening on {addr}");
    }

    /// SIGKILL: no graceful shutdown, no flush.
    fn kill(mut self) {
        self.child.kill().expect("kill berth");
        self.child.wait().expect("reap berth");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply { status, headers, body: raw[split + 4..].to_vec() }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether an HTTP server answers GET /v2/ at addr. A bare TCP connect is not enough: while
/// nothing listens on a port in the ephemeral range, a connect to it can pick that same port as
/// its source and connect to itself, which made a test talk to a server that was not up yet.
fn answers_http(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 "
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Pushes a blob monolithically and a manifest naming it under `tag`; returns the manifest digest.
fn push_image(addr: &str, repo: &str, tag: &str, layer: &[u8]) -> String {
    let config = b"{}";
    for blob in [&config[..], layer] {
        let r = request(addr, "POST", &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)), &[], blob);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        sha256(config),
        sha256(layer),
        layer.len()
    );
    let r = request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        manifest.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    sha256(manifest.as_bytes())
}

#[test]
fn a_killed_server_keeps_what_it_acknowledged_and_shows_nothing_partial() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let server = Server::start(data.path(), &addr);

    let layer = pattern(300_000, 7);
    let manifest_digest = push_image(&addr, "crash/app", "v1", &layer);

    // An upload with one acknowledged chunk...
    let blob = pattern(3 * 1024 * 1024, 42);
    let blob_digest = sha256(&blob);
    let start = request(&addr, "POST", "/v2/crash/app/blobs/uploads/", &[], b"");
    assert_eq!(start.status, 202);
    let location = start.header("location").unwrap().to_owned();
    let first = 1024 * 1024;
    let r = request(&addr, "PATCH", &location, &[("Content-Range", &format!("0-{}", first - 1))], &blob[..first]);
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some(&*format!("0-{}", first - 1)));

    // ...then a second chunk that is half sent when the server dies.
    let mut stream = TcpStream::connect(&addr).unwrap();
    let rest = &blob[first..];
    write!(
        stream,
        "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nContent-Range: {first}-{}\r\n\r\n",
        rest.len(),
        blob.len() - 1
    )
    .unwrap();
    stream.write_all(&rest[..rest.len() / 2]).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    drop(stream);

    let server = Server::start(data.path(), &addr);
    // Everything acknowledged is there, byte for byte.
    let m = request(&addr, "GET", "/v2/crash/app/manifests/v1", &[("Accept", "application/vnd.oci.image.manifest.v1+json")], b"");
    assert_eq!(m.status, 200);
    assert_eq!(sha256(&m.body), manifest_digest);
    let l = request(&addr, "GET", &format!("/v2/crash/app/blobs/{}", sha256(&layer)), &[], b"");
    assert_eq!(l.status, 200);
    assert_eq!(l.body, layer);
    // The unfinished blob is not visible.
    let head = request(&addr, "HEAD", &format!("/v2/crash/app/blobs/{blob_digest}"), &[], b"");
    assert_eq!(head.status, 404);
    // The upload resumes from its acknowledged offset, not from the half-sent chunk.
    let status = request(&addr, "GET", &location, &[], b"");
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), Some(&*format!("0-{}", first - 1)));
    let done = request(
        &addr,
        "PUT",
        &format!("{location}?digest={blob_digest}"),
        &[("Content-Range", &format!("{first}-{}", blob.len() - 1))],
        rest,
    );
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
    let got = request(&addr, "GET", &format!("/v2/crash/app/blobs/{blob_digest}"), &[], b"");
    assert_eq!(got.status, 200);
    assert_eq!(sha256(&got.body), blob_digest);
    drop(server);
}

#[test]
fn a_client_that_hangs_up_mid_body_leaves_nothing_visible() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start(data.path(), &addr);

    let blob = pattern(2 * 1024 * 1024, 3);
    let digest = sha256(&blob);
    // Monolithic push whose body stops halfway, then the connection closes.
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /v2/hangup/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        blob.len()
    )
    .unwrap();
    stream.write_all(&blob[..blob.len() / 2]).unwrap();
    drop(stream);
    std::thread::sleep(Duration::from_millis(300));
    let head = request(&addr, "HEAD", &format!("/v2/hangup/app/blobs/{digest}"), &[], b"");
    assert_eq!(head.status, 404);

    // A manifest whose body is cut off is not stored either.
    let mut stream = TcpStream::connect(&addr).unwrap();
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    write!(
        stream,
        "PUT /v2/hangup/app/manifests/cut HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\n\r\n",
        manifest.len()
    )
    .unwrap();
    stream.write_all(&manifest[..20]).unwrap();
    drop(stream);
    std::thread::sleep(Duration::from_millis(300));
    let m = request(&addr, "GET", "/v2/hangup/app/manifests/cut", &[], b"");
    assert_eq!(m.status, 404);

    // Docker's way: one PATCH with a chunked body and no length. Cut off between two chunks,
    // it must not count as a complete (shorter) body: the session stays at 0 and unclaimed.
    let start = request(&addr, "POST", "/v2/hangup/app/blobs/uploads/", &[], b"");
    assert_eq!(start.status, 202);
    let location = start.header("location").expect("upload location").to_owned();
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(stream, "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let half = &blob[..blob.len() / 2];
    write!(stream, "{:x}\r\n", half.len()).unwrap();
    stream.write_all(half).unwrap();
    stream.write_all(b"\r\n").unwrap();
    drop(stream);
    std::thread::sleep(Duration::from_millis(300));
    let status = request(&addr, "GET", &location, &[], b"");
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), Some("0-0"), "a cut-off streamed PATCH advanced the upload");
    // Not left claimed by the request that died: the client can resend straight away.
    let resent = request(&addr, "PATCH", &location, &[], &blob);
    assert_eq!(resent.status, 202, "{}", String::from_utf8_lossy(&resent.body));
    let done = request(&addr, "PUT", &format!("{location}?digest={digest}"), &[], b"");
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));

    // The same pushes, whole, succeed afterwards.
    let r = request(&addr, "POST", &format!("/v2/hangup/app/blobs/uploads/?digest={digest}"), &[], &blob);
    assert_eq!(r.status, 201);
    let r = request(
        &addr,
        "PUT",
        "/v2/hangup/app/manifests/cut",
        &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
        manifest,
    );
    assert_eq!(r.status, 201);
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut server = Server::start(data.path(), &addr);
    let pid = server.child.id();
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            assert!(exit.success(), "berth exited with {exit:?} on SIGTERM");
            break;
        }
        assert!(Instant::now() < deadline, "berth ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
