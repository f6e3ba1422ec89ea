//! Crash safety of `berth serve` on its embedded storage: a server killed with SIGKILL in the
//! middle of an upload, and a client that hangs up mid-body, leave nothing partial visible, and a
//! restart keeps everything that was acknowledged — including an upload's acknowledged chunks.
//!
//! Speaks raw HTTP/1.1 over TcpStream, so a test can stop writing a body halfway.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

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
