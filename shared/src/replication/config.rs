//! The `[[policies.replication]]` rules (docs/replication.md): which local repositories and
//! tags are copied to which registry, under which name, with which credentials. Checked at
//! load, like every policy.

use serde::{Deserialize, Serialize};

use crate::mirror::config::{check_remote, Secret};
use crate::mirror::MirrorRule;

pub(crate) fn every_tag() -> Vec<String> {
    vec!["*".to_owned()]
}
fn yes() -> bool {
    true
}
fn default_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_retry_base() -> u64 {
    DEFAULT_RETRY_BASE_SECS
}

/// Attempts of an on-push entry before it is kept as failed, unless the rule says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 12;
/// The wait after a first failed attempt, unless the rule says otherwise; it doubles after each.
pub const DEFAULT_RETRY_BASE_SECS: u64 = 5;
/// The longest wait between two attempts.
pub const RETRY_MAX_SECS: u64 = 1800;

/// One replication rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationRule {
    /// Names the rule in `berth replicate --rule`, outbox entries and status: `a-z0-9_-`, unique.
    pub name: String,
    /// Local repository globs (`team/*`, `**`).
    pub repositories: Vec<String>,
    /// Tag globs; a push by digest (no tag) replicates when the repository matches.
    #[serde(default = "every_tag")]
    pub tags: Vec<String>,
    /// The destination registry's base URL (no `/v2`): another Berth, Distribution, ECR, GHCR.
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic auth, or the destination's token service; never logged (its Debug is redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Destination repository = `<prefix>/<local name>`; "" keeps the local name.
    #[serde(default)]
    pub prefix: String,
    /// Whether a manifest deleted here is deleted at the destination.
    #[serde(default)]
    pub deletes: bool,
    /// Whether each matching push is replicated (through the outbox) within seconds.
    #[serde(default = "yes")]
    pub on_push: bool,
    /// Attempts of an on-push entry, the first included, before it is kept as failed (and a
    /// `replication_failed` webhook event is sent): 1 to 100.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each, up to 30 minutes.
    #[serde(default = "default_retry_base")]
    pub retry_base_secs: u64,
}

impl ReplicationRule {
    pub fn matches_repository(&self, repo: &str) -> bool {
        self.repositories.iter().any(|p| crate::auth::glob::matches(p, repo))
    }

    /// Whether a push of `repo` with `tag` (None: by digest) is this rule's.
    pub fn matches(&self, repo: &str, tag: Option<&str>) -> bool {
        self.matches_repository(repo) && tag.is_none_or(|t| self.tags.iter().any(|p| crate::auth::glob::matches(p, t)))
    }

    /// The wait after `attempts` failures: base, 2·base, 4·base... up to [`RETRY_MAX_SECS`].
    pub fn backoff(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_base_secs.saturating_mul(1u64 << doublings).min(RETRY_MAX_SECS)
    }

    /// The repository at the destination.
    pub fn destination_name(&self, repo: &str) -> String {
        prefixed(&self.prefix, repo)
    }

    /// The destination as the registry client (shared with the pull-through cache) sees it.
    pub(crate) fn remote(&self) -> MirrorRule {
        MirrorRule {
            prefix: String::new(),
            upstream: self.destination.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            tag_ttl_secs: 0,
        }
    }
}

/// Checks the rules; errors name the rule as numbered in the file.
pub fn validate(rules: &[ReplicationRule]) -> Result<(), String> {
    for (i, rule) in rules.iter().enumerate() {
        let at = |e: String| format!("policies.replication rule {} ({:?}): {e}", i + 1, rule.name);
        check_name(&rule.name).map_err(at)?;
        if let Some(j) = rules[..i].iter().position(|r| r.name == rule.name) {
            return Err(at(format!("rule {} has this name too", j + 1)));
        }
        if rule.max_attempts == 0 || rule.max_attempts > 100 {
            return Err(at(format!("max_attempts must be 1 to 100, not {}", rule.max_attempts)));
        }
        if rule.retry_base_secs == 0 || rule.retry_base_secs > RETRY_MAX_SECS {
            return Err(at(format!("retry_base_secs must be 1 to {RETRY_MAX_SECS}")));
        }
        if rule.repositories.is_empty() {
            return Err(at("repositories is empty; name at least one glob (`**` for all)".into()));
        }
        for p in &rule.repositories {
            crate::policy::config::check_repository_pattern(p).map_err(at)?;
        }
        check_tags_and_prefix(&rule.tags, &rule.prefix).map_err(at)?;
        check_remote(&rule.destination, "destination", &rule.username, &rule.password).map_err(at)?;
    }
    Ok(())
}

/// A rule's name (replication and sync rules share `berth replicate --rule` and the status).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("name must be 1 to 64 of a-z 0-9 - _".into())
    }
}

/// A rule's tag globs and repository prefix.
pub(crate) fn check_tags_and_prefix(tags: &[String], prefix: &str) -> Result<(), String> {
    if tags.is_empty() {
        return Err("tags is empty (leave it out for every tag)".into());
    }
    for p in tags {
        crate::policy::config::check_tag_pattern(p)?;
    }
    if !prefix.is_empty() {
        crate::names::RepoName::parse(prefix).map_err(|e| format!("prefix {prefix:?} is not a repository name: {}", e.message))?;
    }
    Ok(())
}

/// `<prefix>/<repo>`; "" keeps the name (the destination's name in push mode, the local one
/// in pull mode).
pub(crate) fn prefixed(prefix: &str, repo: &str) -> String {
    match prefix.trim_matches('/') {
        "" => repo.to_owned(),
        p => format!("{p}/{repo}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn rule(name: &str) -> ReplicationRule {
        ReplicationRule {
            name: name.into(),
            repositories: vec!["app/**".into()],
            tags: every_tag(),
            destination: "https://dest.example".into(),
            username: None,
            password: None,
            prefix: String::new(),
            deletes: false,
            on_push: true,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_base_secs: DEFAULT_RETRY_BASE_SECS,
        }
    }

    #[test]
    fn rules_parse_from_toml_with_defaults() {
        let text = r#"
            [[policies.replication]]
            name = "dr"
            repositories = ["app/**"]
            destination = "https://dr.example"
            username = "robot"
            password = "hunter2"
            prefix = "mirror"
        "#;
        let config = crate::auth::AuthConfig::from_toml(text).unwrap();
        let r = &config.policies.replication[0];
        assert_eq!((r.tags.clone(), r.on_push, r.deletes), (vec!["*".to_owned()], true, false));
        assert_eq!((r.max_attempts, r.retry_base_secs), (12, 5));
        assert_eq!([1, 2, 3, 30].map(|n| r.backoff(n)), [5, 10, 20, 1800]);
        assert_eq!(r.destination_name("app/web"), "mirror/app/web");
        assert!(r.matches("app/web", Some("v1")) && r.matches("app/web", None) && !r.matches("lib/x", None));
        config.policies.validate().unwrap();
        assert!(!format!("{r:?}").contains("hunter2"), "the password is never printed");
    }

    #[test]
    fn mistakes_are_refused_with_the_rule_named() {
        let bad = |r: ReplicationRule| validate(&[rule("a"), r]).unwrap_err();
        assert!(bad(rule("a")).contains("rule 2 (\"a\"): rule 1 has this name too"));
        assert!(bad(rule("Bad Name")).contains("name must be"));
        assert!(bad(ReplicationRule { destination: "ftp://x".into(), ..rule("b") }).contains("must start with https://"));
        assert!(bad(ReplicationRule { destination: "https://x/v2".into(), ..rule("b") }).contains("without /v2"));
        assert!(bad(ReplicationRule { repositories: vec![], ..rule("b") }).contains("repositories is empty"));
        assert!(bad(ReplicationRule { tags: vec![], ..rule("b") }).contains("tags is empty"));
        assert!(bad(ReplicationRule { prefix: "Up".into(), ..rule("b") }).contains("not a repository name"));
        assert!(bad(ReplicationRule { username: Some("u".into()), ..rule("b") }).contains("username without password"));
        assert!(bad(ReplicationRule { max_attempts: 0, ..rule("b") }).contains("max_attempts must be 1 to 100"));
        assert!(bad(ReplicationRule { retry_base_secs: 0, ..rule("b") }).contains("retry_base_secs must be"));
    }
}
