//! The `[[policies.mirrors]]` rules (docs/mirror.md): which local namespace is a pull-through
//! cache of which upstream registry, how names map, and the credentials to use there. Checked at
//! load, like every policy, so a typo stops the registry instead of mirroring the wrong thing.

use serde::{Deserialize, Serialize};

/// Tags are asked again of the upstream after this many seconds (Harbor's and Distribution's
/// proxies revalidate on every pull; a few minutes keeps Docker Hub's rate limit out of reach).
pub const DEFAULT_TAG_TTL_SECS: u64 = 300;

/// One mirrored namespace.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorRule {
    /// Repositories under `<prefix>/` are served from the upstream with the prefix taken off
    /// (`hub/library/alpine` -> `library/alpine`). `""`: every repository no other rule claims,
    /// which is what docker's `registry-mirrors` needs (it asks the mirror for `library/alpine`).
    pub prefix: String,
    /// The upstream registry's base URL, `https://registry-1.docker.io` (no `/v2`).
    pub upstream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Used for Basic auth and to ask the upstream's token service; never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// How long a tag is served from the cache before the upstream is asked (HEAD) again.
    #[serde(default = "default_ttl")]
    pub tag_ttl_secs: u64,
}

fn default_ttl() -> u64 {
    DEFAULT_TAG_TTL_SECS
}

/// A credential: its `Debug` prints nothing of it, so no log line or panic message carries it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl MirrorRule {
    /// The upstream repository for a local one, when this rule mirrors it.
    pub fn upstream_name<'a>(&self, repo: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            return Some(repo);
        }
        repo.strip_prefix(self.prefix.as_str())?.strip_prefix('/').filter(|rest| !rest.is_empty())
    }

    /// The base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.upstream.trim_end_matches('/')
    }
}

/// The rule that mirrors `repo`: the one with the longest matching prefix.
pub fn rule_for<'r>(rules: &'r [MirrorRule], repo: &str) -> Option<&'r MirrorRule> {
    rules.iter().filter(|r| r.upstream_name(repo).is_some()).max_by_key(|r| r.prefix.len())
}

/// Checks a remote registry's base URL (`what` names the field) and credentials; shared with
/// replication's destinations, which the same client talks to.
pub(crate) fn check_remote(url: &str, what: &str, username: &Option<String>, password: &Option<Secret>) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{what} {url:?} must start with https:// (or http://)"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(['@', ' ', '?', '#']) {
        return Err(format!("{what} {url:?} names no host (credentials go in username and password)"));
    }
    if url.trim_end_matches('/').ends_with("/v2") {
        return Err(format!("{what} {url:?}: give the registry's base URL, without /v2"));
    }
    match (username, password) {
        (Some(u), Some(_)) if u.is_empty() || u.contains(':') => Err("username must be non-empty and hold no ':'".into()),
        (Some(_), None) => Err("username without password".into()),
        (None, Some(_)) => Err("password without username".into()),
        _ => Ok(()),
    }
}

/// Checks the rules; errors name the rule as numbered in the file.
pub fn validate(rules: &[MirrorRule]) -> Result<(), String> {
    for (i, rule) in rules.iter().enumerate() {
        let at = |e: String| format!("policies.mirrors rule {}: {e}", i + 1);
        if !rule.prefix.is_empty() {
            crate::names::RepoName::parse(&rule.prefix)
                .map_err(|e| at(format!("prefix {:?} is not a repository name: {}", rule.prefix, e.message)))?;
        }
        if let Some(j) = rules[..i].iter().position(|r| r.prefix == rule.prefix) {
            return Err(at(format!("prefix {:?} is also rule {}'s; each namespace mirrors one upstream", rule.prefix, j + 1)));
        }
        check_remote(&rule.upstream, "upstream", &rule.username, &rule.password).map_err(at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, upstream: &str) -> MirrorRule {
        MirrorRule {
            prefix: prefix.into(),
            upstream: upstream.into(),
            username: None,
            password: None,
            tag_ttl_secs: DEFAULT_TAG_TTL_SECS,
        }
    }

    #[test]
    fn longest_prefix_wins_and_the_empty_prefix_takes_the_rest() {
        let rules = [rule("", "https://hub"), rule("ghcr", "https://ghcr.io"), rule("ghcr/x", "https://x")];
        assert_eq!(rule_for(&rules, "library/alpine").map(|r| r.base()), Some("https://hub"));
        assert_eq!(rule_for(&rules, "ghcr/a/b").map(|r| r.base()), Some("https://ghcr.io"));
        assert_eq!(rule_for(&rules, "ghcr/x/y").map(|r| r.base()), Some("https://x"));
        assert_eq!(rules[1].upstream_name("ghcr/a/b"), Some("a/b"));
        assert_eq!(rules[1].upstream_name("ghcrx/a"), None);
        assert_eq!(rules[1].upstream_name("ghcr"), None);
        assert!(rule_for(&rules[1..], "other/a").is_none());
    }

    #[test]
    fn mistakes_are_refused_with_the_rule_named() {
        let bad = |r: MirrorRule| validate(&[rule("ok", "https://a"), r]).unwrap_err();
        assert!(bad(rule("ok", "https://b")).contains("rule 2: prefix \"ok\" is also rule 1's"));
        assert!(bad(rule("Hub", "https://b")).contains("not a repository name"));
        assert!(bad(rule("hub", "ftp://b")).contains("must start with https://"));
        assert!(bad(rule("hub", "https://u:p@b")).contains("names no host"));
        assert!(bad(rule("hub", "https://b/v2/")).contains("without /v2"));
        let mut r = rule("hub", "https://b");
        r.username = Some("u".into());
        assert!(bad(r.clone()).contains("username without password"));
        r.password = Some(Secret("p".into()));
        validate(&[r]).unwrap();
    }

    #[test]
    fn the_password_is_never_printed() {
        let mut r = rule("hub", "https://b");
        r.username = Some("u".into());
        r.password = Some(Secret("hunter2".into()));
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
