//! `berth serve` on a full disk: a write that fails for lack of space is an error response, and
//! once space is freed the next write succeeds without a restart (redb alone refuses every
//! write after one failed commit until the database is reopened).
//!
//! Needs a small filesystem: a tmpfs mounted for the test (root, as in CI). Where mounting is not
//! permitted the test says so on stderr and returns, except under CI (CI=true), where it fails:
//! the test command runs as root there and must check this.

mod support;

use support::small_fs::SmallFs;
use support::{free_addr, request, sha256, Server};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Uploads a config (`{}`) and a layer (`layer`) into `repo`; returns a manifest naming them,
/// padded with an annotation of `pad` bytes.
fn push_blobs_for_manifest(addr: &str, repo: &str, pad: usize) -> String {
    let (config, layer) = (b"{}", b"layer");
    for blob in [&config[..], &layer[..]] {
        let r = request(addr, "POST", &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)), &[], blob);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":5}}],"annotations":{{"pad":"{}"}}}}"#,
        sha256(config),
        sha256(layer),
        "x".repeat(pad)
    )
}

#[test]
fn a_full_disk_fails_writes_until_space_is_freed_then_they_work_without_restart() {
    let Some(fs) = SmallFs::mount_or_skip("8m", "a_full_disk_fails_writes_until_space_is_freed") else { return };
    let addr = free_addr();
    let _server = Server::start(fs.path(), &addr);

    let manifest = push_blobs_for_manifest(&addr, "disk/app", 30_000);
    let push_tag = |tag: &str| {
        let r = request(&addr, "PUT", &format!("/v2/disk/app/manifests/{tag}"), &[("Content-Type", OCI_MANIFEST)], manifest.as_bytes());
        (r.status, r.text())
    };
    assert_eq!(push_tag("v1").0, 201);

    // Fill the filesystem, then push tags of the stored manifest: metadata writes only.
    let filler = fs.fill();
    let failed = (0..300).map(|i| push_tag(&format!("full-{i}"))).find(|(status, _)| *status != 201);
    let (status, text) = failed.expect("no push failed on a full disk");
    assert_eq!(status, 507, "a push on a full disk: {text}");

    std::fs::remove_file(&filler).unwrap();
    let (status, text) = push_tag("after");
    assert_eq!(status, 201, "a push once space was freed, same server: {text}");
    let r = request(&addr, "GET", "/v2/disk/app/manifests/after", &[("Accept", OCI_MANIFEST)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(request(&addr, "GET", "/v2/disk/app/manifests/v1", &[], b"").status, 200);
}

/// A manifest PUT on a full disk once answered 201 with a 0-byte file in place, for ever: the
/// write error was lost before the sync, the empty file renamed into place, and later pushes
/// skipped the write because a file existed. Now: a clear 507, nothing visible, and the same
/// push works once space is free, serving exactly the manifest's bytes.
#[test]
fn a_manifest_pushed_on_a_full_disk_is_refused_and_never_left_empty() {
    let Some(fs) = SmallFs::mount_or_skip("8m", "a_manifest_pushed_on_a_full_disk") else { return };
    let addr = free_addr();
    let _server = Server::start(fs.path(), &addr);
    let manifest = push_blobs_for_manifest(&addr, "disk/m", 200_000);
    let digest = sha256(manifest.as_bytes());
    let push = || request(&addr, "PUT", &format!("/v2/disk/m/manifests/{digest}"), &[("Content-Type", OCI_MANIFEST)], manifest.as_bytes());

    let filler = fs.fill();
    let r = push();
    assert_eq!(r.status, 507, "a manifest push on a full disk: {}", r.text());
    assert!(r.text().contains("storage is full"), "{}", r.text());
    assert_eq!(request(&addr, "GET", &format!("/v2/disk/m/manifests/{digest}"), &[], b"").status, 404);
    let blob_file = fs.path().join("blobs/sha256").join(&digest[7..9]).join(&digest[7..]);
    assert!(!blob_file.exists(), "a file for the refused manifest was left in place");

    std::fs::remove_file(&filler).unwrap();
    let r = push();
    assert_eq!(r.status, 201, "the same push once space was freed: {}", r.text());
    let r = request(&addr, "GET", &format!("/v2/disk/m/manifests/{digest}"), &[("Accept", OCI_MANIFEST)], b"");
    assert_eq!(r.status, 200);
    assert!(r.body == manifest.as_bytes(), "served {} bytes, not the manifest's {}", r.body.len(), manifest.len());
}
