//! What an outside review broke in `berth serve`, kept fixed: a stalled upload writing into a
//! published blob, slow and idle connections holding the server, stalled bodies holding their
//! upload, world-readable files, and memory under many stalled uploads.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use support::*;

/// Sends a request head and the first `sent` bytes of a body of `len`; the body then stalls.
fn stalled_body(addr: &str, method: &str, path: &str, extra: &str, len: usize, first: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {len}\r\n{extra}\r\n").unwrap();
    stream.write_all(first).unwrap();
    stream.flush().unwrap();
    stream
}

fn start_upload(addr: &str, repo: &str) -> String {
    let r = request(addr, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    r.header("location").unwrap().to_owned()
}

/// A PATCH stalls past its claim's lease; another request takes the session over and
/// completes the blob with the right digest; then the stalled request sends the rest of its
/// body. The published blob must still be exactly what its digest says: the stalled writer
/// is fenced off. (Before: its remaining bytes landed in the published file.)
#[test]
fn a_writer_whose_claim_lapsed_never_touches_the_published_blob() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start_with(data.path(), &addr, &["--upload-lease", "1", "--body-timeout", "30"]);
    let location = start_upload(&addr, "fence/app");
    let intruder = pattern(2 * 1024 * 1024, 99);
    let mut stalled = stalled_body(&addr, "PATCH", &location, "", intruder.len(), &intruder[..64 * 1024]);
    std::thread::sleep(Duration::from_millis(2500));

    // The lease lapsed: a second request completes the upload with the real content.
    let blob = pattern(1024 * 1024, 3);
    let digest = sha256(&blob);
    let done = request(&addr, "PUT", &format!("{location}?digest={digest}"), &[], &blob);
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));

    // The stalled request wakes up and sends the rest of its bytes.
    let _ = stalled.write_all(&intruder[64 * 1024..]);
    let _ = stalled.flush();
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    std::thread::sleep(Duration::from_millis(300));

    let got = request(&addr, "GET", &format!("/v2/fence/app/blobs/{digest}"), &[], b"");
    assert_eq!(got.status, 200);
    assert!(got.body.len() == blob.len() && sha256(&got.body) == digest, "the published blob no longer matches its digest");
    let on_disk = std::fs::read(data.path().join("blobs/sha256").join(&digest[7..9]).join(&digest[7..])).unwrap();
    assert!(on_disk == blob, "the blob file changed after it was published");
}

/// A body that stops arriving fails its request after --body-timeout, and its upload is
/// free again at once (not claimed for the lease's 15 minutes).
#[test]
fn a_stalled_body_times_out_and_frees_its_upload() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start_with(data.path(), &addr, &["--body-timeout", "1"]);
    let location = start_upload(&addr, "stall/app");
    let started = Instant::now();
    let mut stalled = stalled_body(&addr, "PATCH", &location, "", 10_000, &[7u8; 100]);
    stalled.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    assert!(started.elapsed() < Duration::from_secs(10), "the stalled request was not ended");
    let chunk = pattern(5000, 1);
    let r = request(&addr, "PATCH", &location, &[("Content-Range", "0-4999")], &chunk);
    assert_eq!(r.status, 202, "the upload stayed claimed: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("range"), Some("0-4999"));
}

/// Connections that send nothing, or send headers a byte at a time, are closed after
/// --header-timeout, so they cannot fill --max-connections and lock everyone else out.
#[test]
fn idle_and_slow_connections_cannot_lock_the_server_out() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start_with(data.path(), &addr, &["--header-timeout", "1", "--max-connections", "8"]);
    let mut idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut closed_slow = false;
    while started.elapsed() < Duration::from_secs(8) {
        // A slowloris client: one header byte every 200 ms, never finishing.
        if slow.write_all(b"X").is_err() {
            closed_slow = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(closed_slow, "a connection trickling its headers was kept open for {:?}", started.elapsed());
    // The idle ones were closed too: each reads end-of-file.
    for stream in &mut idle {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert!(matches!(stream.read(&mut buf), Ok(0) | Err(_)), "an idle connection was kept open");
    }
    let r = request(&addr, "GET", "/v2/", &[], b"");
    assert_eq!(r.status, 200);
}

/// Everything under the data directory is readable by berth's user only.
#[test]
fn stored_files_are_private() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("store");
    let addr = free_addr();
    let _server = Server::start_with(&root, &addr, &[]);
    push_image(&addr, "private/app", "v1", &pattern(10_000, 5));
    let _ = start_upload(&addr, "private/app");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700, "the data directory");
    let mut seen = 0;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = mode(&path);
            assert_eq!(m & 0o077, 0, "{} is {m:o}", path.display());
            seen += 1;
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    assert!(seen >= 6, "only {seen} files and directories under the data directory");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Many uploads that stall mid-body (each having sent several MiB) must not add up: the
/// registry stays under the 64 MiB memory target, and still serves others.
#[test]
fn memory_stays_bounded_under_many_stalled_uploads() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let server = Server::start_with(data.path(), &addr, &["--body-timeout", "30"]);
    let chunk = pattern(6 * 1024 * 1024, 11);
    let mut stalled = Vec::new();
    for n in 0..40 {
        let location = start_upload(&addr, &format!("mem/app{n}"));
        stalled.push(stalled_body(&addr, "PATCH", &location, "", 64 * 1024 * 1024, &chunk));
    }
    // Let the server take in what was sent.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(server.child.id());
    assert_eq!(request(&addr, "GET", "/v2/", &[], b"").status, 200);
    drop(stalled);
    assert!(rss < 64 * 1024, "berth serve holds {} MiB with 40 stalled uploads", rss / 1024);
}
