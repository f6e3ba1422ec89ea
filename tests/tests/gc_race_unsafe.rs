//! The race test of tests/gc_race.rs against a plain mark-and-sweep (`--gc-unsafe-sweep`,
//! test-only, Distribution's algorithm without its read-only mode): images that got 201 break.
//! This shows the race test can fail. Probabilistic: some runs break several of about 40
//! images, others none (three runs in a row here broke 0, 1 and 0), so the test makes up to
//! twelve runs (same flags as the safe run but the switch).

mod common;
mod gc_support;

use gc_support::race::race;
use gc_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_without_the_safety_rule_breaks_images() {
    if other_runtime() {
        return;
    }
    // A run often goes through clean, so up to twelve (bounded: about 10 s each), and the test
    // fails only if none broke anything.
    // Every run on the first one's port: the suite's client reads its target once per process
    // (a later run on a new port found nothing listening, seen in CI).
    let mut runs = Vec::new();
    let mut port = 0;
    for _ in 0..12 {
        let (broken, gave_up, server) = race(port, &["--gc-interval", "20ms", "--gc-grace", "2s", "--gc-unsafe-sweep"]).await;
        let _ = gave_up;
        port = server.port;
        server.stop();
        server.cleanup();
        runs.push(broken.len());
        if !broken.is_empty() {
            return;
        }
    }
    panic!("a plain mark-and-sweep broke nothing in {} runs: {runs:?}", runs.len());
}
