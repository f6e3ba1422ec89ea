//! The `[[policies.sync]]` rules (docs/replication.md, "Pull mode"): which repositories of a
//! remote registry are copied into this one, under which local name, how often, with which
//! credentials. Checked at load, like every policy.

use serde::{Deserialize, Serialize};

use crate::mirror::config::{check_remote, Secret};
use crate::mirror::MirrorRule;
use crate::replication::config::{check_name, check_tags_and_prefix, every_tag, prefixed};

/// One sync rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRule {
    /// Names the rule in `berth replicate sync --rule` and the status: `a-z0-9_-`, unique
    /// among replication and sync rules.
    pub name: String,
    /// The remote registry's base URL (no `/v2`): Docker Hub, GHCR, Distribution, another Berth.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic auth, or the source's token service; never logged (its Debug is redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The remote repositories, by exact name (`library/alpine`): no globs, since a registry's
    /// `_catalog` is rarely open (Docker Hub has none).
    pub repositories: Vec<String>,
    /// Remote tag globs.
    #[serde(default = "every_tag")]
    pub tags: Vec<String>,
    /// Local repository = `<prefix>/<remote name>`; "" keeps the remote name.
    #[serde(default)]
    pub prefix: String,
    /// How often the rule runs: `"30s"`, `"15m"`, `"1h"`, `"1d"`.
    pub every: String,
    /// Removes a local tag this rule put here (and that still points where the rule put it)
    /// once the remote's complete tag list no longer has it. Off by default: a sync only adds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_missing: bool,
}

impl SyncRule {
    /// The repository here for a remote one.
    pub fn local_name(&self, remote: &str) -> String {
        prefixed(&self.prefix, remote)
    }

    pub fn matches_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|p| crate::auth::glob::matches(p, tag))
    }

    /// The interval in seconds (checked at load: never 0).
    pub fn every_secs(&self) -> u64 {
        crate::gc::parse_duration(&self.every).unwrap_or(3600).max(1)
    }

    /// The source as the registry client (shared with the pull-through cache) sees it.
    pub(crate) fn remote(&self) -> MirrorRule {
        MirrorRule {
            prefix: String::new(),
            upstream: self.source.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            tag_ttl_secs: 0,
        }
    }
}

/// Checks the rules; `replication` are the push-mode rules, whose names these may not take.
/// Errors name the rule as numbered in the file.
pub fn validate(rules: &[SyncRule], replication: &[crate::replication::ReplicationRule]) -> Result<(), String> {
    for (i, rule) in rules.iter().enumerate() {
        let at = |e: String| format!("policies.sync rule {} ({:?}): {e}", i + 1, rule.name);
        check_name(&rule.name).map_err(at)?;
        if let Some(j) = rules[..i].iter().position(|r| r.name == rule.name) {
            return Err(at(format!("rule {} has this name too", j + 1)));
        }
        if replication.iter().any(|r| r.name == rule.name) {
            return Err(at("a replication rule has this name too; names are shared by both kinds".into()));
        }
        if rule.repositories.is_empty() {
            return Err(at("repositories is empty; name the remote repositories (e.g. \"library/alpine\")".into()));
        }
        for repo in &rule.repositories {
            if repo.contains('*') {
                return Err(at(format!("repository {repo:?}: name remote repositories exactly (no globs)")));
            }
            crate::names::RepoName::parse(&rule.local_name(repo))
                .map_err(|e| at(format!("repository {repo:?} is not a repository name: {}", e.message)))?;
        }
        check_tags_and_prefix(&rule.tags, &rule.prefix).map_err(at)?;
        match crate::gc::parse_duration(&rule.every) {
            Ok(0) => return Err(at("every must be at least \"1s\"".into())),
            Ok(_) => {}
            Err(e) => return Err(at(format!("every: {e}"))),
        }
        check_remote(&rule.source, "source", &rule.username, &rule.password).map_err(at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str) -> SyncRule {
        SyncRule {
            name: name.into(),
            source: "https://hub.example".into(),
            username: None,
            password: None,
            repositories: vec!["library/alpine".into()],
            tags: every_tag(),
            prefix: "hub".into(),
            every: "1h".into(),
            delete_missing: false,
        }
    }

    #[test]
    fn rules_parse_from_toml_with_defaults() {
        let text = r#"
            [[policies.sync]]
            name = "hub"
            source = "https://registry-1.docker.io"
            username = "robot"
            password = "hunter2"
            repositories = ["library/alpine", "library/busybox"]
            tags = ["3.*", "latest"]
            prefix = "hub"
            every = "6h"
        "#;
        let config = crate::auth::AuthConfig::from_toml(text).unwrap();
        config.policies.validate().unwrap();
        let r = &config.policies.sync[0];
        assert_eq!(r.local_name("library/alpine"), "hub/library/alpine");
        assert_eq!(r.every_secs(), 6 * 3600);
        assert!(r.matches_tag("3.19") && r.matches_tag("latest") && !r.matches_tag("edge"));
        assert!(!r.delete_missing, "a sync only adds unless told");
        let deleting = crate::auth::AuthConfig::from_toml(&text.replace("every = \"6h\"", "every = \"6h\"\ndelete_missing = true")).unwrap();
        assert!(deleting.policies.sync[0].delete_missing);
        assert!(!format!("{r:?}").contains("hunter2"), "the password is never printed");
        let no_prefix = SyncRule { prefix: String::new(), ..rule("a") };
        assert_eq!(no_prefix.local_name("library/alpine"), "library/alpine");
    }

    #[test]
    fn mistakes_are_refused_with_the_rule_named() {
        let bad = |r: SyncRule| validate(&[rule("a"), r], &[]).unwrap_err();
        assert!(bad(rule("a")).contains("rule 2 (\"a\"): rule 1 has this name too"));
        assert!(bad(rule("Bad")).contains("name must be"));
        assert!(bad(SyncRule { source: "ftp://x".into(), ..rule("b") }).contains("source \"ftp://x\" must start with https://"));
        assert!(bad(SyncRule { repositories: vec![], ..rule("b") }).contains("repositories is empty"));
        assert!(bad(SyncRule { repositories: vec!["library/*".into()], ..rule("b") }).contains("no globs"));
        assert!(bad(SyncRule { repositories: vec!["Up/x".into()], ..rule("b") }).contains("not a repository name"));
        assert!(bad(SyncRule { tags: vec![], ..rule("b") }).contains("tags is empty"));
        assert!(bad(SyncRule { every: "0s".into(), ..rule("b") }).contains("at least"));
        assert!(bad(SyncRule { every: "soon".into(), ..rule("b") }).contains("every:"));
        assert!(bad(SyncRule { password: Some(Secret("p".into())), ..rule("b") }).contains("password without username"));
        let both = r#"
            [[policies.replication]]
            name = "b"
            repositories = ["**"]
            destination = "https://dr.example"
            [[policies.sync]]
            name = "b"
            source = "https://hub.example"
            repositories = ["library/alpine"]
            every = "1h"
        "#;
        let config = crate::auth::AuthConfig::from_toml(both).unwrap();
        assert!(config.policies.validate().unwrap_err().contains("a replication rule has this name too"));
    }
}
