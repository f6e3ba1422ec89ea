//! Retention policies run by `berth gc` on a stopped `berth serve --policy-config`: push four
//! tags, collect, the two oldest tags and their images are gone (tag list, manifests, bytes on
//! disk), the others pull, every deletion is an audit line, and the quota's usage shrank
//! (GET /v2/_berth/quotas). docs/gc.md "Retention", docs/policies.md.

mod common;
mod gc_support;

use common::*;
use gc_support::*;

const POLICY: &str = r#"
[[policies.retention]]
repositories = ["ret/**"]
keep_last = 2

[[policies.quotas]]
name = "ret"
repositories = ["ret/**"]
limit = "1 GiB"
"#;

async fn quota_used() -> u64 {
    let r = get("/v2/_berth/quotas").send().await;
    assert_status(&r, 200);
    r.json()["quotas"][0]["used"].as_u64().expect("used")
}

#[tokio::test]
async fn berth_gc_applies_retention_and_shrinks_quotas() {
    if other_runtime() {
        return;
    }
    let data = data_dir("retention");
    let policy = data.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let policy_flag = ["--policy-config", policy.to_str().unwrap()];
    let server = start(&data, 0, &policy_flag);
    target_server(&server);
    let repo = "ret/app";
    // Four images a second apart: keep_last ranks tags by the second they were pushed.
    let mut images = Vec::new();
    for i in 1..=4 {
        if i > 1 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        let config = config_bytes();
        let layer = random_bytes(20_000 + i);
        push_blob(repo, &config).await;
        push_blob(repo, &layer).await;
        let m = to_bytes(&image_manifest(descriptor(OCI_CONFIG, &config), vec![descriptor(OCI_LAYER, &layer)]));
        let pushed = push_manifest(repo, &format!("t{i}"), OCI_MANIFEST, &m).await;
        images.push((pushed.digest, sha256(&layer), (config.len() + layer.len() + m.len()) as u64));
    }
    let used_before = quota_used().await;
    server.stop();

    let blobs_dir = server.store().join("blobs");
    let before = bytes_in(&blobs_dir);
    let flags = ["--grace", "0", "--policy-config", policy.to_str().unwrap()];
    let dry = gc(&server.store(), &[&flags[..], &["--dry-run"]].concat());
    assert_eq!((dry["tags_deleted"].as_u64(), dry["manifests_deleted"].as_u64()), (Some(2), Some(2)), "{dry}");
    assert_eq!(bytes_in(&blobs_dir), before, "a dry run changed the blobs");

    // The real run, with its log: every deletion is an audit line.
    let out = std::process::Command::new(bin())
        .args(["gc", "--json", "--data-dir"])
        .arg(server.store())
        .args(flags)
        .output()
        .expect("run berth gc");
    assert!(out.status.success(), "berth gc failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["finished"], true, "{report}");
    assert_eq!((report["tags_deleted"].as_u64(), report["manifests_deleted"].as_u64()), (Some(2), Some(2)), "{report}");
    assert_eq!(report["quotas_recounted"], 1, "{report}");
    let freed: u64 = images[..2].iter().map(|(_, _, n)| n).sum();
    assert_eq!(report["bytes_freed"].as_u64(), Some(freed), "{report}");
    assert_eq!(bytes_in(&blobs_dir), before - freed, "freed bytes on disk");
    let log = String::from_utf8_lossy(&out.stderr);
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("retention-delete")).collect();
    for tag in ["t1", "t2"] {
        let line = audit.iter().find(|l| l.contains("kind=\"tag\"") && l.contains(&format!("reference={tag} ")));
        let line = line.unwrap_or_else(|| panic!("no audit line for tag {tag}:\n{log}"));
        assert!(line.contains("rule=1") && line.contains("outcome=\"deleted\""), "{line}");
    }
    for (digest, _, _) in &images[..2] {
        let about = |outcome: &str| {
            audit.iter().any(|l| l.contains("kind=\"manifest\"") && l.contains(digest.as_str()) && l.contains(outcome))
        };
        assert!(about("outcome=\"condemned\"") && about("outcome=\"deleted\""), "manifest {digest} not audited:\n{log}");
    }
    assert_eq!(dry["bytes_freed"].as_u64(), Some(freed), "the dry run's estimate: {dry}");

    let server = start(&data, server.port, &policy_flag);
    let tags = get(format!("/v2/{repo}/tags/list")).send().await;
    assert_status(&tags, 200);
    assert_eq!(tags.json()["tags"], serde_json::json!(["t3", "t4"]));
    for tag in ["t3", "t4"] {
        pull(repo, tag).await.unwrap();
    }
    for (digest, layer, _) in &images[..2] {
        assert_status(&get(format!("/v2/{repo}/manifests/{digest}")).send().await, 404);
        assert_no_blob(repo, layer).await;
    }
    let used_after = quota_used().await;
    assert_eq!(used_after, used_before - freed, "quota usage: {used_before} before, {used_after} after");
    server.stop();
    server.cleanup();
}
