//! Lifecycle policies from the `[policies]` table of the registry's config (docs/policies.md):
//! immutable tags, refused tags, retention. They hold whether token auth is on or off; a runtime
//! hands them to [`crate::Registry::with_policies`].
//!
//! The tag checks here are pure decisions; `manifests.rs` asks them on the tag write and delete
//! paths, inside the conditional writes that already serialize those paths, so a check and the
//! write it allows see the same tag record.

pub mod config;
pub mod quota;
pub mod retention;
pub mod state;

use crate::auth::glob;
use crate::error::{oci, ErrorCode, RegistryError};

pub use config::PolicyConfig;

/// The compiled, checked policies. `Policies::default()` has no rules (every tag is mutable).
#[derive(Debug, Clone, Default)]
pub struct Policies {
    config: PolicyConfig,
}

fn any_match(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob::matches(p, text))
}

impl Policies {
    pub fn new(config: &PolicyConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(Policies { config: config.clone() })
    }

    /// A config file that holds only `[policies]`, for a registry without token auth
    /// (`berth serve --policy-config`, the Worker's `POLICY_CONFIG`, the Lambda function's
    /// `BERTH_POLICY_CONFIG`). Any auth table in it is an error: a file meant to turn auth
    /// on must not be read here and leave the registry open.
    pub fn from_policy_file(text: &str) -> Result<Self, String> {
        let table: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
            crate::config_text::parse(text, "policy config")?;
        if let Some(other) = table.keys().find(|k| *k != "policies" && *k != "webhooks") {
            return Err(format!(
                "policy config: [{other}] belongs in the auth config; this file may hold only [policies] and [webhooks] \
                 (a registry with token auth reads its policies from its auth config)"
            ));
        }
        let config = crate::auth::AuthConfig::parse(text).map_err(|e| format!("policy {e}"))?;
        Policies::new(&config.policies).map_err(|e| format!("policy config: {e}"))
    }

    /// What a runtime applies, from its two settings: the `[policies]` of its auth config (if
    /// auth is on) and a policies-only file (see [`Policies::from_policy_file`]). At most one of
    /// them may hold policies, so no rule is silently ignored; neither: no policies.
    pub fn from_settings(auth: Option<&crate::auth::AuthConfig>, policy_file: Option<&str>) -> Result<Self, String> {
        let in_auth = auth.map(|a| &a.policies).filter(|p| !p.is_empty());
        match (in_auth, policy_file) {
            (Some(_), Some(_)) => Err("policies are given twice: in the auth config's [policies] and in the \
                                       policy config; keep them in one place"
                .into()),
            (Some(config), None) => Policies::new(config).map_err(|e| format!("auth config: {e}")),
            (None, Some(text)) => Policies::from_policy_file(text),
            (None, None) => Ok(Policies::default()),
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    pub fn is_empty(&self) -> bool {
        self.config.is_empty()
    }

    /// Whether pulls in `repo` need their time recorded: only a retention rule that keeps or
    /// deletes by use (`keep_within_days`, `delete_untagged_after_days`) reads it, so elsewhere
    /// a manifest GET stays one metadata read. The first matching rule applies, as in GC.
    pub fn records_pulls(&self, repo: &str) -> bool {
        self.config
            .retention
            .iter()
            .find(|r| any_match(&r.repositories, repo))
            .is_some_and(|r| r.keep_within_days.is_some() || r.delete_untagged_after_days.is_some())
    }

    /// The immutable_tags rule (1-based, as in docs) that covers `tag` in `repo`, if any.
    pub fn immutable_rule(&self, repo: &str, tag: &str) -> Option<usize> {
        self.config
            .immutable_tags
            .iter()
            .position(|r| any_match(&r.repositories, repo) && any_match(&r.tags, tag))
            .map(|i| i + 1)
    }

    /// The refused_tags rule that refuses `tag` in `repo`, if any.
    fn refused_rule(&self, repo: &str, tag: &str) -> Option<(usize, &config::RefusedTags)> {
        self.config
            .refused_tags
            .iter()
            .enumerate()
            .find(|(_, r)| any_match(&r.repositories, repo) && any_match(&r.tags, tag))
            .map(|(i, r)| (i + 1, r))
    }

    /// May a push point `tag` at a manifest at all? Static: by name only.
    pub fn check_tag_allowed(&self, repo: &str, tag: &str) -> Result<(), RegistryError> {
        let Some((n, rule)) = self.refused_rule(repo, tag) else { return Ok(()) };
        let extra = rule.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        Err(refused(format!("tag {tag} is not allowed in {repo} (policies.refused_tags rule {n}){extra}")))
    }

    /// May a push point `tag` at `to`, the tag pointing at `current` now (None: no such tag)?
    /// Re-pushing the same digest to an immutable tag is allowed: CI retries must succeed.
    pub fn check_tag_move(&self, repo: &str, tag: &str, current: Option<&str>, to: &str) -> Result<(), RegistryError> {
        match (self.immutable_rule(repo, tag), current) {
            (Some(n), Some(current)) if current != to => Err(refused(format!(
                "tag {tag} in {repo} is immutable (policies.immutable_tags rule {n}): it points at {current} \
                 and cannot be moved to {to}; push under a new tag"
            ))),
            _ => Ok(()),
        }
    }

    /// May `tag` (which exists) be deleted?
    pub fn check_tag_delete(&self, repo: &str, tag: &str) -> Result<(), RegistryError> {
        match self.immutable_rule(repo, tag) {
            Some(n) => Err(refused(format!(
                "tag {tag} in {repo} is immutable (policies.immutable_tags rule {n}) and cannot be deleted"
            ))),
            None => Ok(()),
        }
    }

    /// May the manifest `digest`, which the tags `tags` point at, be deleted?
    pub fn check_manifest_delete<'a>(
        &self,
        repo: &str,
        digest: &str,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), RegistryError> {
        for tag in tags {
            if let Some(n) = self.immutable_rule(repo, tag) {
                return Err(refused(format!(
                    "manifest {digest} in {repo} cannot be deleted: immutable tag {tag} points at it \
                     (policies.immutable_tags rule {n})"
                )));
            }
        }
        Ok(())
    }
}

/// Every policy refusal: 403 DENIED, see docs/policies.md for why this status (what docker,
/// podman and skopeo show for it).
fn refused(message: String) -> RegistryError {
    oci(ErrorCode::Denied, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> Policies {
        let text = r#"
            [policies]
            [[policies.immutable_tags]]
            repositories = ["prod/**"]
            tags = ["v*"]
            [[policies.refused_tags]]
            repositories = ["prod/**"]
            tags = ["latest"]
            message = "push a version tag"
        "#;
        Policies::from_policy_file(text).unwrap()
    }

    #[test]
    fn immutable_tags_never_move_but_accept_the_same_digest() {
        let p = policies();
        assert!(p.check_tag_move("prod/app", "v1", None, "sha256:a").is_ok(), "first push");
        assert!(p.check_tag_move("prod/app", "v1", Some("sha256:a"), "sha256:a").is_ok(), "retry");
        let err = p.check_tag_move("prod/app", "v1", Some("sha256:a"), "sha256:b").unwrap_err();
        assert_eq!((err.code, err.status.as_u16()), (ErrorCode::Denied, 403));
        assert!(err.message.contains("immutable") && err.message.contains("sha256:a"), "{}", err.message);
        // Other tags, other repositories: mutable.
        assert!(p.check_tag_move("prod/app", "main", Some("sha256:a"), "sha256:b").is_ok());
        assert!(p.check_tag_move("dev/app", "v1", Some("sha256:a"), "sha256:b").is_ok());
        assert!(p.check_tag_delete("prod/app", "v1").is_err());
        assert!(p.check_tag_delete("prod/app", "main").is_ok());
        assert!(p.check_manifest_delete("prod/a/b", "sha256:a", ["main", "v2"]).is_err());
        assert!(p.check_manifest_delete("prod/a/b", "sha256:a", ["main"]).is_ok());
    }

    #[test]
    fn refused_tags_by_pattern() {
        let p = policies();
        let err = p.check_tag_allowed("prod/app", "latest").unwrap_err();
        assert_eq!(err.status.as_u16(), 403);
        assert!(err.message.contains("push a version tag"), "{}", err.message);
        assert!(p.check_tag_allowed("dev/app", "latest").is_ok());
        assert!(p.check_tag_allowed("prod/app", "v1").is_ok());
        assert!(Policies::default().check_tag_allowed("prod/app", "latest").is_ok());
    }

    #[test]
    fn a_policy_file_holds_only_policies() {
        let err = Policies::from_policy_file("[[users]]\nname = \"a\"\npassword_hash = \"x\"").unwrap_err();
        assert!(err.contains("[users] belongs in the auth config"), "{err}");
        let err = Policies::from_policy_file("[token]\nservice = \"x\"\n[policies]").unwrap_err();
        assert!(err.contains("[token]"), "{err}");
        let err = Policies::from_policy_file("[policies]\nimmutable = []").unwrap_err();
        assert!(err.contains("unknown field `immutable`"), "{err}");
        let err = Policies::from_policy_file("[[policies.retention]]\nrepositories = [\"a\"]\nkeep_last = 0").unwrap_err();
        assert!(err.starts_with("policy config: policies.retention rule 1: keep_last = 0"), "{err}");
        assert!(Policies::from_policy_file("").unwrap().is_empty());
    }

    #[test]
    fn policies_come_from_one_place() {
        let file = "[[policies.refused_tags]]\nrepositories = [\"p/*\"]\ntags = [\"latest\"]";
        let auth_with = crate::auth::AuthConfig::from_toml(file).unwrap();
        let auth_without = crate::auth::AuthConfig::from_toml("[[access]]\nrepositories = [\"**\"]\npublic = true").unwrap();
        assert!(Policies::from_settings(None, None).unwrap().is_empty());
        assert!(!Policies::from_settings(None, Some(file)).unwrap().is_empty());
        assert!(!Policies::from_settings(Some(&auth_with), None).unwrap().is_empty());
        assert!(!Policies::from_settings(Some(&auth_without), Some(file)).unwrap().is_empty());
        let err = Policies::from_settings(Some(&auth_with), Some(file)).unwrap_err();
        assert!(err.contains("given twice"), "{err}");
    }
}

#[cfg(test)]
mod registry_tests;
