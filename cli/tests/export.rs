//! `berth auth export`: the self-contained config text for runtimes without a filesystem, as
//! TOML or, with `--json`, as the JSON the Worker reads (it is built without a TOML parser).

use std::path::Path;
use std::process::{Command, Output};

use berth_core::auth::{Auth, AuthConfig};
use berth_core::policy::Policies;

fn berth(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth")).args(args).arg("--config").arg(config).output().expect("run berth")
}

fn stdout(out: Output) -> String {
    assert!(out.status.success(), "berth failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn json_export_is_the_same_config_with_its_keys_inlined() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auth.toml");
    stdout(berth(&["key", "generate", "--kid", "k1"], &config));
    let mut text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("private_key_file"), "the key is in a file of its own: {text}");
    text.push_str("\n[[access]]\nrepositories = [\"ci/**\"]\nprincipals = [\"user:ci\"]\nactions = [\"pull\", \"push\"]\n");
    text.push_str("\n[[policies.immutable_tags]]\nrepositories = [\"ci/**\"]\ntags = [\"v*\"]\n");
    std::fs::write(&config, text).unwrap();

    let toml = stdout(berth(&["auth", "export"], &config));
    let json = stdout(berth(&["auth", "export", "--json"], &config));
    let value: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    let key = &value["token"]["keys"][0];
    assert_eq!(key["kid"], "k1");
    assert!(key["private_key"].as_str().is_some_and(|k| k.len() > 20), "{key}");
    assert!(key.get("private_key_file").is_none(), "{key}");
    assert_eq!(json.lines().count(), 1, "one line, for a secret store");
    // Both texts are the same config, and a runtime can start from either.
    let (from_toml, from_json) = (AuthConfig::parse(&toml).unwrap(), AuthConfig::parse(&json).unwrap());
    assert_eq!(format!("{from_toml:?}"), format!("{from_json:?}"));
    Auth::parse(&json).expect("the Worker's route compiles it");
}

#[test]
fn a_policies_only_file_exports_as_it_is_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("policies.toml");
    std::fs::write(&config, "[[policies.immutable_tags]]\nrepositories = [\"a/**\"]\ntags = [\"v*\"]\n").unwrap();
    let json = stdout(berth(&["auth", "export", "--json"], &config));
    assert_eq!(json.trim(), r#"{"policies":{"immutable_tags":[{"repositories":["a/**"],"tags":["v*"]}]}}"#);
    let policies = Policies::from_policy_file(&json).expect("the Worker's POLICY_CONFIG");
    assert_eq!(policies.config().immutable_tags.len(), 1);

    // Checked before it is printed: a webhook without a URL, a rule that keeps nothing.
    for bad in ["[[webhooks.endpoints]]\nname = \"x\"\n", "[[policies.retention]]\nrepositories = [\"a\"]\nkeep_last = 0\n"] {
        std::fs::write(&config, bad).unwrap();
        let out = berth(&["auth", "export", "--json"], &config);
        assert!(!out.status.success() && out.stdout.is_empty(), "{bad}: {}", String::from_utf8_lossy(&out.stdout));
    }
}
