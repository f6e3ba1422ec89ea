//! The race workload (tests/gc_race.rs, tests/gc_race_unsafe.rs): several clients push and
//! delete random images that share layers while the server collects garbage in a loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::common::*;

const CLIENTS: usize = 4;
const ROUNDS: usize = 15;
const REPOS: [&str; 2] = ["race/a", "race/b"];

/// A small xorshift per client: the workload is random but needs no crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Puts one blob into `repo` the way a client does: HEAD, then a mount from the other
/// repository or an upload when it is missing.
async fn ensure_blob(repo: &str, other: &str, data: &[u8], rng: &mut Rng) {
    let digest = sha256(data);
    if head(format!("/v2/{repo}/blobs/{digest}")).send().await.status == 200 {
        return;
    }
    if rng.next(2) == 0 {
        let r = post(format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={other}")).send().await;
        if r.status == 201 {
            return;
        }
    }
    push_blob(repo, data).await;
}

/// One client's rounds. Returns the images it pushed (201) and did not delete, and how many
/// manifest PUTs were refused (400 MANIFEST_BLOB_UNKNOWN, 429) and retried.
async fn client(id: usize, pool: Arc<Vec<Vec<u8>>>, refused: Arc<AtomicU64>, gave_up: Arc<AtomicU64>) -> Vec<(String, String)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut live: Vec<(String, String)> = Vec::new();
    for round in 0..ROUNDS {
        let k = rng.next(2) as usize;
        let (repo, other) = (REPOS[k], REPOS[1 - k]);
        let config = config_bytes();
        let layers = [rng.next(pool.len() as u64) as usize, rng.next(pool.len() as u64) as usize];
        let manifest = to_bytes(&image_manifest(
            descriptor(OCI_CONFIG, &config),
            layers.iter().map(|&l| descriptor(OCI_LAYER, &pool[l])).collect(),
        ));
        let tag = format!("c{id}-r{round}");
        let mut pushed = false;
        for _attempt in 0..5 {
            push_blob(repo, &config).await;
            for &l in &layers {
                ensure_blob(repo, other, &pool[l], &mut rng).await;
            }
            // docker HEADs, then uploads what is missing, then PUTs the manifest a bit later.
            tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
            let r = put_manifest(repo, &tag, OCI_MANIFEST, &manifest).await;
            match r.status {
                201 => {
                    pushed = true;
                    break;
                }
                400 | 429 => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                _ => panic!("manifest PUT: {}", r.describe()),
            }
        }
        if !pushed {
            // Refused every time: a failed push, not a broken image (the safe GC never gets here).
            gave_up.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        live.push((repo.to_owned(), sha256(&manifest)));
        if rng.next(3) == 0 {
            let (repo, digest) = live.remove(rng.next(live.len() as u64) as usize);
            assert_status(&delete(format!("/v2/{repo}/manifests/{digest}")).send().await, 202);
        }
        tokio::time::sleep(Duration::from_millis(rng.next(200))).await;
    }
    live
}

/// Runs the workload against a server started with `gc_flags` on `port` (0: a free one the
/// kernel picks); returns the broken images and how many pushes were refused five times and
/// given up. A second run in one test process must pass the first one's port: the suite's
/// client reads its target (BERTH_URL) once.
pub async fn race(port: u16, gc_flags: &[&str]) -> (Vec<String>, u64, Server) {
    let data = data_dir("race");
    let server = start(&data, port, gc_flags);
    target_server(&server);
    let pool: Arc<Vec<Vec<u8>>> = Arc::new((0..6).map(|_| random_bytes(3000)).collect());
    let refused = Arc::new(AtomicU64::new(0));
    let gave_up = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, pool.clone(), refused.clone(), gave_up.clone())))
        .collect();
    let mut live = Vec::new();
    for t in tasks {
        live.extend(t.await.expect("client"));
    }
    // Let the GC go on past its grace and settle windows: anything it wrongly let go shows now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut broken = Vec::new();
    for (repo, digest) in &live {
        if let Err(e) = pull(repo, digest).await {
            broken.push(e);
        }
    }
    let gave_up = gave_up.load(Ordering::Relaxed);
    eprintln!(
        "{} images live, {} broken, {} manifest PUTs refused and retried, {} pushes given up",
        live.len(),
        broken.len(),
        refused.load(Ordering::Relaxed),
        gave_up,
    );
    (broken, gave_up, server)
}

