//! `berth push` as a new user meets it: a loopback registry over plain HTTP needs no flag (as
//! with docker), and a failure says once what went wrong and what to do next.

mod support;

use std::process::Command;

use support::*;

fn berth(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().expect("berth runs")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The message is printed once (before: once as a log line and once more as `berth: …`).
fn assert_said_once(err: &str, needle: &str) {
    assert_eq!(err.matches(needle).count(), 1, "expected {needle:?} exactly once in:\n{err}");
    assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "expected one line:\n{err}");
}

#[test]
fn loopback_registries_get_plain_http_and_https_failures_name_the_flag() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let _server = Server::start(data.path(), &addr);
    let file = data.path().join("blob");
    std::fs::write(&file, b"hello").unwrap();
    let file = file.to_str().unwrap();

    // host:port on loopback: plain HTTP without a flag (before: https, and a TLS failure).
    let ok = berth(&["push", "--quiet", file, &format!("{addr}/first/hour")]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), sha256(b"hello"));
    let localhost = addr.replace("127.0.0.1", "localhost");
    let ok = berth(&["push", "--quiet", file, &format!("{localhost}/first/hour")]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    // HTTPS asked for, the registry speaks HTTP: say so, and how to ask for HTTP.
    let tls = berth(&["push", "--quiet", file, &format!("https://{addr}/first/hour")]);
    assert!(!tls.status.success());
    let err = stderr(&tls);
    assert_said_once(&err, "speak plain HTTP");
    assert!(err.contains("--plain-http") && err.contains("http://"), "{err}");

    // The same with JSON logs: one log record, no plain line besides it.
    let json = berth(&["--log-format", "json", "push", "--quiet", file, &format!("https://{addr}/first/hour")]);
    assert!(!json.status.success());
    assert_said_once(&stderr(&json), "speak plain HTTP");
    assert!(stderr(&json).trim_start().starts_with('{'), "{}", stderr(&json));
}

#[test]
fn nothing_listening_says_so_once() {
    let addr = free_addr(); // nothing was started on it
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    std::fs::write(&file, b"x").unwrap();
    let out = berth(&["push", "--quiet", file.to_str().unwrap(), &format!("{addr}/a/b")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_said_once(&err, "is the registry running");
    assert!(err.contains(&format!("http://{addr}/v2/")), "{err}");
}
