//! The policy state of one repository, as `GET /v2/<name>/_berth/policy` reports it (for the
//! web interface, docs/ui.md): which rules of the `[policies]` table apply to it, numbered as
//! in the file (1-based, as every refusal names them). Read-only and storage-free: it says what
//! the rules are, not what a retention run would delete (`berth gc --dry-run` does that).

use serde::Serialize;

use super::config::RetentionRule;
use super::{any_match, Policies};

/// A tag rule that applies to the repository: its number and tag globs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TagRuleState {
    pub rule: usize,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The retention rule that applies (the first that matches), with its number.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RetentionState {
    pub rule: usize,
    #[serde(flatten)]
    pub settings: RetentionRule,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PolicyState {
    /// Every immutable_tags rule covering the repository (a tag is immutable if any matches).
    pub immutable_tags: Vec<TagRuleState>,
    /// Every refused_tags rule covering the repository.
    pub refused_tags: Vec<TagRuleState>,
    pub retention: Option<RetentionState>,
}

impl Policies {
    /// The rules that apply to `repo`.
    pub fn state_of(&self, repo: &str) -> PolicyState {
        let config = &self.config;
        let immutable_tags = config
            .immutable_tags
            .iter()
            .enumerate()
            .filter(|(_, r)| any_match(&r.repositories, repo))
            .map(|(i, r)| TagRuleState { rule: i + 1, tags: r.tags.clone(), message: None })
            .collect();
        let refused_tags = config
            .refused_tags
            .iter()
            .enumerate()
            .filter(|(_, r)| any_match(&r.repositories, repo))
            .map(|(i, r)| TagRuleState { rule: i + 1, tags: r.tags.clone(), message: r.message.clone() })
            .collect();
        let retention =
            self.retention_rule(repo).map(|(rule, settings)| RetentionState { rule, settings: settings.clone() });
        PolicyState { immutable_tags, refused_tags, retention }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_rules_covering_the_repository_with_their_numbers() {
        let p = Policies::from_policy_file(
            "[[policies.immutable_tags]]\nrepositories = [\"dev/**\"]\ntags = [\"x\"]\n\
             [[policies.immutable_tags]]\nrepositories = [\"prod/**\"]\ntags = [\"v*\"]\n\
             [[policies.refused_tags]]\nrepositories = [\"prod/**\"]\ntags = [\"latest\"]\nmessage = \"use v*\"\n\
             [[policies.retention]]\nrepositories = [\"dev/**\"]\nkeep_last = 1\n\
             [[policies.retention]]\nrepositories = [\"**\"]\nkeep_last = 5\n",
        )
        .unwrap();
        let s = p.state_of("prod/app");
        assert_eq!(s.immutable_tags, vec![TagRuleState { rule: 2, tags: vec!["v*".into()], message: None }]);
        assert_eq!(s.refused_tags[0].message.as_deref(), Some("use v*"));
        let retention = s.retention.unwrap();
        assert_eq!((retention.rule, retention.settings.keep_last), (2, Some(5)));
        let json = serde_json::to_value(p.state_of("other")).unwrap();
        assert_eq!(json["immutable_tags"], serde_json::json!([]));
        assert_eq!(json["retention"]["keep_last"], 5, "{json}");
        assert!(Policies::default().state_of("a").retention.is_none());
    }
}
