//! GC in a loop (`berth serve --gc-interval`) while several clients push and delete random
//! images that share layers (HEAD first, skip what exists, mount from the other repository,
//! wait a little before the manifest PUT, as docker does), for a bounded number of rounds.
//! Afterwards every image whose manifest PUT got 201 and was not deleted pulls completely.
//!
//! tests/gc_race_unsafe.rs runs the same workload against a plain mark-and-sweep
//! (`--gc-unsafe-sweep`, test-only; same flags otherwise) and expects broken images: the check
//! can fail. (One server
//! per test binary: the harness reads BERTH_URL once.)

mod common;
mod gc_support;

use gc_support::race::race;
use gc_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_pushes_deletes_and_gc_keep_every_201_image() {
    if other_runtime() {
        return;
    }
    let (broken, gave_up, server) =
        race(0, &["--gc-interval", "20ms", "--gc-grace", "2s", "--gc-settle", "2s", "--gc-upload-idle", "1h"]).await;
    server.stop();
    let log = server.log();
    let deleted: u64 = log
        .lines()
        .filter_map(|l| l.split("content_deleted=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    server.cleanup();
    assert!(broken.is_empty(), "images broken by GC: {broken:#?}");
    assert_eq!(gave_up, 0, "pushes refused five times in a row");
    assert!(deleted > 0, "the GC deleted nothing during the race: it was not exercised");
}
