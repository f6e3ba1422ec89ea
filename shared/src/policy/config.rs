//! The `[policies]` table of the registry's config file (docs/policies.md), and its checks.
//! Every mistake is found here, at start-up, with the rule's place in the file: an invalid
//! policy stops the registry instead of deciding wrongly at 3 a.m.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Tags that, once pushed, never point elsewhere and are never deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable_tags: Vec<TagRule>,
    /// Tags no push may create or move.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_tags: Vec<RefusedTags>,
    /// What garbage collection may delete; the first rule whose repositories match applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<RetentionRule>,
    /// Storage limits per namespace (docs/quotas.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaRule>,
    /// Pull-through caches of other registries (docs/mirror.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<crate::mirror::MirrorRule>,
    /// Copies of repositories to other registries (docs/replication.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replication: Vec<crate::replication::ReplicationRule>,
    /// Copies of other registries' repositories here, on a schedule (docs/replication.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync: Vec<crate::replication::SyncRule>,
}

/// A storage limit on the repositories matching `repositories`, which share one usage
/// (each digest counted once) under `name`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    pub name: String,
    pub repositories: Vec<String>,
    pub limit: ByteSize,
}

/// A number of bytes, or a text such as `"10 GiB"`, `"500MB"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl ByteSize {
    pub fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            ByteSize::Bytes(n) => return Ok(*n),
            ByteSize::Text(t) => t.trim(),
        };
        let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
        let (number, unit) = (text[..split].trim(), text[split..].trim());
        let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a size such as \"10 GiB\""))?;
        let scale: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            other => return Err(format!("{text:?}: unknown unit {other:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
        };
        let bytes = number * scale as f64;
        if !(bytes.is_finite() && bytes < u64::MAX as f64) {
            return Err(format!("{text:?} is too large"));
        }
        Ok(bytes as u64)
    }
}

impl PolicyConfig {
    pub fn is_empty(&self) -> bool {
        *self == PolicyConfig::default()
    }
}

/// Repository globs (`*` one path segment, `**` any depth, `?` one character) and tag globs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    pub repositories: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedTags {
    pub repositories: Vec<String>,
    pub tags: Vec<String>,
    /// Added to the error a refused push gets (say what to push instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Which tags and manifests of the matching repositories are kept; see `retention.rs`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub repositories: Vec<String>,
    /// Keep the N most recently pushed tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep tags pushed, or whose manifest was pulled, within this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_days: Option<u32>,
    /// Always keep tags matching these globs (`v*`, `release-*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    /// Delete manifests no tag points at once they were neither pushed nor pulled for this
    /// many days. Unset: untagged manifests are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_untagged_after_days: Option<u32>,
}

impl RetentionRule {
    /// Whether the rule decides about tags at all: a rule with only
    /// `delete_untagged_after_days` leaves every tag alone.
    pub fn judges_tags(&self) -> bool {
        self.keep_last.is_some() || self.keep_within_days.is_some() || !self.keep_tags.is_empty()
    }
}

/// A repository pattern: what a repository name may contain, plus `*` and `?`; no empty
/// path segment. A pattern no repository could match is a typo, refused.
pub fn check_repository_pattern(pattern: &str) -> Result<(), String> {
    check_pattern(pattern, "repository", |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)
    })?;
    if pattern.starts_with('/') || pattern.ends_with('/') || pattern.contains("//") {
        return Err(format!("repository pattern {pattern:?} has an empty path segment"));
    }
    Ok(())
}

/// A tag pattern: what a tag may contain (`A-Za-z0-9._-`), plus `*` and `?`.
pub fn check_tag_pattern(pattern: &str) -> Result<(), String> {
    check_pattern(pattern, "tag", |c| c.is_ascii_alphanumeric() || "._-".contains(c))?;
    if pattern.len() > 128 {
        return Err(format!("tag pattern {pattern:?} is longer than a tag can be (128)"));
    }
    Ok(())
}

fn check_pattern(pattern: &str, what: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if pattern.is_empty() {
        return Err(format!("an empty {what} pattern matches nothing"));
    }
    if let Some(bad) = pattern.chars().find(|c| !allowed(*c) && *c != '*' && *c != '?') {
        let hint = if bad.is_ascii_uppercase() { " (repository names are lower case)" } else { "" };
        return Err(format!("{what} pattern {pattern:?}: {bad:?} cannot appear in a {what} name{hint}"));
    }
    if pattern.contains("***") {
        return Err(format!("{what} pattern {pattern:?}: `***` means nothing; use `*` or `**`"));
    }
    Ok(())
}

fn check_list(list: &[String], what: &str, check: fn(&str) -> Result<(), String>) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!("`{what}` needs at least one pattern"));
    }
    list.iter().try_for_each(|p| check(p))
}

impl PolicyConfig {
    /// Checks every rule; the error names the table and rule number as written in the file.
    pub fn validate(&self) -> Result<(), String> {
        crate::mirror::config::validate(&self.mirrors)?;
        crate::replication::config::validate(&self.replication)?;
        crate::replication::sync::config::validate(&self.sync, &self.replication)?;
        for (i, rule) in self.quotas.iter().enumerate() {
            let at = |e: String| format!("policies.quotas rule {}: {e}", i + 1);
            let name_ok = !rule.name.is_empty()
                && rule.name.len() <= 64
                && rule.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
            if !name_ok {
                return Err(at(format!("name {:?} must be 1-64 of a-z 0-9 . _ -", rule.name)));
            }
            if let Some(j) = self.quotas[..i].iter().position(|q| q.name == rule.name) {
                return Err(at(format!("name {:?} is also rule {}'s; each quota needs its own", rule.name, j + 1)));
            }
            check_list(&rule.repositories, "repositories", check_repository_pattern).map_err(at)?;
            if rule.limit.bytes().map_err(at)? == 0 {
                return Err(at("limit = 0 would refuse every push; leave the repositories out of quotas instead".into()));
            }
        }
        for (i, rule) in self.immutable_tags.iter().enumerate() {
            let at = |e: String| format!("policies.immutable_tags rule {}: {e}", i + 1);
            check_list(&rule.repositories, "repositories", check_repository_pattern).map_err(at)?;
            check_list(&rule.tags, "tags", check_tag_pattern).map_err(at)?;
        }
        for (i, rule) in self.refused_tags.iter().enumerate() {
            let at = |e: String| format!("policies.refused_tags rule {}: {e}", i + 1);
            check_list(&rule.repositories, "repositories", check_repository_pattern).map_err(at)?;
            check_list(&rule.tags, "tags", check_tag_pattern).map_err(at)?;
            for (j, other) in self.immutable_tags.iter().enumerate() {
                if other.repositories == rule.repositories && other.tags == rule.tags {
                    return Err(at(format!(
                        "refuses exactly the tags policies.immutable_tags rule {} makes immutable; \
                         keep one of the two",
                        j + 1
                    )));
                }
            }
        }
        for (i, rule) in self.retention.iter().enumerate() {
            let at = |e: String| format!("policies.retention rule {}: {e}", i + 1);
            check_list(&rule.repositories, "repositories", check_repository_pattern).map_err(at)?;
            rule.keep_tags.iter().try_for_each(|p| check_tag_pattern(p)).map_err(at)?;
            if rule.keep_last == Some(0) {
                return Err(at("keep_last = 0 would keep no tag; leave it out to not keep tags by count".into()));
            }
            for (key, value) in [
                ("keep_within_days", rule.keep_within_days),
                ("delete_untagged_after_days", rule.delete_untagged_after_days),
            ] {
                if value == Some(0) {
                    return Err(at(format!("{key} = 0 is no time at all; give at least 1 day")));
                }
            }
            if !rule.judges_tags() && rule.delete_untagged_after_days.is_none() {
                return Err(at(
                    "says nothing: give keep_last, keep_within_days, keep_tags or delete_untagged_after_days".into(),
                ));
            }
            // The first matching rule applies: a later rule whose every pattern an earlier rule
            // already lists can never apply.
            for (j, earlier) in self.retention[..i].iter().enumerate() {
                if rule.repositories.iter().all(|p| earlier.repositories.contains(p)) {
                    return Err(at(format!(
                        "can never apply: rule {} lists the same repositories and the first matching rule applies",
                        j + 1
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicyConfig, String> {
        let config: PolicyConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn a_full_config_parses() {
        let config = parse(
            r#"
            [[immutable_tags]]
            repositories = ["prod/**"]
            tags = ["v*"]
            [[refused_tags]]
            repositories = ["prod/**"]
            tags = ["latest"]
            message = "push a version tag"
            [[retention]]
            repositories = ["team/**"]
            keep_last = 10
            keep_within_days = 30
            keep_tags = ["v*", "release-*"]
            delete_untagged_after_days = 7
            [[retention]]
            repositories = ["**"]
            delete_untagged_after_days = 30
            "#,
        )
        .unwrap();
        assert_eq!(config.immutable_tags.len(), 1);
        assert_eq!(config.retention[0].keep_last, Some(10));
        assert!(!config.retention[1].judges_tags());
    }

    #[test]
    fn sizes() {
        let size = |t: &str| ByteSize::Text(t.into()).bytes();
        assert_eq!(size("10 GiB"), Ok(10 << 30));
        assert_eq!(size("500MB"), Ok(500_000_000));
        assert_eq!(size("1.5 KiB"), Ok(1536));
        assert_eq!(size("42"), Ok(42));
        assert_eq!(ByteSize::Bytes(7).bytes(), Ok(7));
        assert!(size("GiB").is_err());
    }

    #[test]
    fn mistakes_are_refused_with_the_rule_named() {
        let cases = [
            ("[[immutable_tags]]\nrepositories = [\"prod/**\"]\ntags = []", "immutable_tags rule 1: `tags` needs"),
            ("[[immutable_tags]]\nrepositories = [\"\"]\ntags = [\"v*\"]", "empty repository pattern"),
            ("[[immutable_tags]]\nrepositories = [\"Prod/*\"]\ntags = [\"v*\"]", "lower case"),
            ("[[immutable_tags]]\nrepositories = [\"prod//x\"]\ntags = [\"v*\"]", "empty path segment"),
            ("[[immutable_tags]]\nrepositories = [\"prod/*\"]\ntags = [\"a/b\"]", "'/' cannot appear in a tag"),
            ("[[immutable_tags]]\nrepositories = [\"prod/***\"]\ntags = [\"v*\"]", "`***`"),
            ("[[immutable_tags]]\nrepositories = [\"prod/*\"]\ntags = [\"v*\"]\ntag = [\"x\"]", "unknown field `tag`"),
            ("[[immutable_tags]]\nrepositories = [\"prod/*\"]", "missing field `tags`"),
            ("[[refused_tags]]\nrepositories = [\"p\"]\ntags = [\"x y\"]", "' ' cannot appear"),
            (
                "[[immutable_tags]]\nrepositories = [\"p\"]\ntags = [\"v*\"]\n[[refused_tags]]\nrepositories = [\"p\"]\ntags = [\"v*\"]",
                "refused_tags rule 1: refuses exactly",
            ),
            ("[[retention]]\nrepositories = [\"a\"]\nkeep_last = 0", "retention rule 1: keep_last = 0"),
            ("[[retention]]\nrepositories = [\"a\"]\nkeep_within_days = 0", "keep_within_days = 0"),
            ("[[retention]]\nrepositories = [\"a\"]\ndelete_untagged_after_days = 0", "delete_untagged_after_days = 0"),
            ("[[retention]]\nrepositories = [\"a\"]\nkeep_last = -1", "invalid value"),
            ("[[retention]]\nrepositories = [\"a\"]", "says nothing"),
            ("[[retention]]\nrepositories = [\"a\"]\nkeep_tags = [\"\"]", "empty tag pattern"),
            (
                "[[retention]]\nrepositories = [\"a\", \"b\"]\nkeep_last = 1\n[[retention]]\nrepositories = [\"b\"]\nkeep_last = 2",
                "retention rule 2: can never apply: rule 1",
            ),
            ("[[retention]]\nrepositories = [\"a\"]\nkeep_days = 3", "unknown field `keep_days`"),
            ("[[quota]]\nrepositories = [\"a\"]", "unknown field `quota`"),
            ("[[quotas]]\nname = \"t\"\nrepositories = [\"a\"]\nlimit = 0", "quotas rule 1: limit = 0"),
            ("[[quotas]]\nname = \"t\"\nrepositories = [\"a\"]\nlimit = \"10 GB!\"", "unknown unit"),
            ("[[quotas]]\nname = \"t\"\nrepositories = [\"a\"]\nlimit = \"lots\"", "is not a size"),
            ("[[quotas]]\nname = \"T\"\nrepositories = [\"a\"]\nlimit = 1", "name \"T\" must be"),
            ("[[quotas]]\nname = \"t\"\nrepositories = [\"a\"]", "missing field `limit`"),
            (
                "[[quotas]]\nname = \"t\"\nrepositories = [\"a\"]\nlimit = 1\n[[quotas]]\nname = \"t\"\nrepositories = [\"b\"]\nlimit = 1",
                "quotas rule 2: name \"t\" is also rule 1's",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
            assert!(err.contains(expected), "{text}\n-> {err}\n(expected {expected:?})");
        }
    }
}
