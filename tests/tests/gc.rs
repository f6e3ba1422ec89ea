//! `berth gc` on a stopped `berth serve`: push images sharing a layer, delete some, leave an
//! upload abandoned; a dry run reports the bytes and changes nothing on disk; the real run frees
//! exactly those bytes; every remaining image pulls and verifies (this suite's client, and
//! skopeo when installed). docs/gc.md.

mod common;
mod gc_support;

use common::*;
use gc_support::*;

#[tokio::test]
async fn berth_gc_frees_deleted_images_and_keeps_the_rest() {
    if other_runtime() {
        return;
    }
    let data = data_dir("offline");
    let server = start(&data, 0, &[]);
    target_server(&server);
    let (a, b) = ("gc/a", "gc/b");
    let shared = random_bytes(5000);
    let mut kept = Vec::new();
    let mut freed = 0u64;
    let mut manifest_bytes = 0u64;
    let mut gone = Vec::new();
    for i in 0..5usize {
        let repo = if i % 2 == 0 { a } else { b };
        let config = config_bytes();
        let own = random_bytes(4000 + i);
        for blob in [&config, &own, &shared] {
            push_blob(repo, blob).await;
        }
        let m = to_bytes(&image_manifest(
            descriptor(OCI_CONFIG, &config),
            vec![descriptor(OCI_LAYER, &own), descriptor(OCI_LAYER, &shared)],
        ));
        let pushed = push_manifest(repo, &format!("t{i}"), OCI_MANIFEST, &m).await;
        if i == 1 || i == 4 {
            assert_status(&delete(format!("/v2/{repo}/manifests/{}", pushed.digest)).send().await, 202);
            freed += (config.len() + own.len() + m.len()) as u64;
            manifest_bytes += m.len() as u64;
            gone.push((repo, sha256(&own), pushed.digest));
        } else {
            kept.push((repo, format!("t{i}")));
        }
    }
    // An index whose children live in the same repository, untagged.
    let child = push_image(a, "").await;
    let index = to_bytes(&index_of(OCI_INDEX, &[(OCI_MANIFEST, &child)]));
    push_manifest(a, "multi", OCI_INDEX, &index).await;
    kept.push((a, "multi".into()));
    // An upload left half-way.
    let upload = start_upload(a).await;
    let r = patch(upload).header("content-range", "0-99").body(random_bytes(100)).send().await;
    assert_status(&r, 202);
    server.stop();

    let blobs_dir = server.store().join("blobs");
    let uploads_dir = server.store().join("uploads");
    let before = files(&blobs_dir);
    let uploads_before = files(&uploads_dir);
    assert!(!uploads_before.is_empty(), "the upload left no file in {}", uploads_dir.display());

    // Within the default grace period only the deleted manifests' own bytes would go (no
    // upload protects them); their blobs stay.
    let report = gc(&server.store(), &["--dry-run"]);
    assert_eq!(report["bytes_freed"], manifest_bytes, "{report}");
    assert_eq!(report["uploads_aborted"], 0, "{report}");

    let flags = ["--grace", "0", "--upload-idle", "0"];
    let dry = gc(&server.store(), &[&flags[..], &["--dry-run"]].concat());
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["bytes_freed"], freed, "{dry}");
    assert_eq!(dry["content_deleted"], 6, "{dry}");
    assert_eq!(dry["uploads_aborted"], 1, "{dry}");
    assert_eq!(files(&blobs_dir), before, "a dry run changed the blobs");
    assert_eq!(files(&uploads_dir), uploads_before, "a dry run changed the uploads");

    let real = gc(&server.store(), &flags);
    assert_eq!(real["finished"], true, "{real}");
    assert_eq!(real["bytes_freed"], freed, "{real}");
    assert_eq!(real["uploads_aborted"], 1, "{real}");
    assert_eq!(bytes_in(&blobs_dir), before.iter().map(|(_, n)| n).sum::<u64>() - freed, "freed bytes on disk");
    assert!(files(&uploads_dir).is_empty(), "upload data left: {:?}", files(&uploads_dir));
    let again = gc(&server.store(), &flags);
    assert_eq!(again["bytes_freed"], 0, "{again}");

    let server = start(&data, server.port, &[]);
    for (repo, tag) in &kept {
        pull(repo, tag).await.unwrap();
    }
    for (repo, own, manifest) in &gone {
        assert_no_blob(repo, own).await;
        assert_status(&get(format!("/v2/{repo}/manifests/{manifest}")).send().await, 404);
    }
    if let Ok(skopeo) = which("skopeo") {
        let out = data.join("pulled");
        let status = std::process::Command::new(skopeo)
            .args(["copy", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://127.0.0.1:{}/{a}:multi", server.port))
            .arg(format!("dir:{}", out.display()))
            .status()
            .unwrap();
        assert!(status.success(), "skopeo could not pull {a}:multi after gc");
    }
    server.stop();
    server.cleanup();
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
        .ok_or(())
}
