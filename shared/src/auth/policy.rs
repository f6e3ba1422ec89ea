//! Who may do what: principals, groups and the access rules of the config file.

use super::config::{AccessRule, AuthConfig};
use super::glob;
use super::scope::{AccessEntry, CATALOG, REGISTRY, REPOSITORY, REPOSITORY_ACTIONS};

pub const ANONYMOUS: &str = "anonymous";

/// An authenticated (or anonymous) caller. `subject` is `user:NAME`, `robot:NAME`,
/// `oidc:POLICY` or `anonymous`; it becomes the token's `sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub groups: Vec<String>,
}

impl Principal {
    pub fn anonymous() -> Self {
        Principal { subject: ANONYMOUS.to_owned(), groups: Vec::new() }
    }

    pub fn is_anonymous(&self) -> bool {
        self.subject == ANONYMOUS
    }

    fn matches(&self, matcher: &str) -> bool {
        match matcher {
            ANONYMOUS => true,
            "*" => !self.is_anonymous(),
            m => match m.strip_prefix("group:") {
                Some(group) => self.groups.iter().any(|g| g == group),
                None => m == self.subject,
            },
        }
    }
}

pub(crate) struct Policy {
    rules: Vec<AccessRule>,
    catalog: Vec<String>,
}

impl Policy {
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let check_matchers = |list: &[String], what: &str| -> Result<(), String> {
            for m in list {
                let known = [ANONYMOUS, "*"].contains(&m.as_str())
                    || ["user:", "robot:", "oidc:", "group:"]
                        .iter()
                        .any(|p| m.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
                if !known {
                    return Err(format!(
                        "{what}: principal {m:?} is none of user:NAME, robot:NAME, oidc:POLICY, \
                         group:NAME, * or anonymous"
                    ));
                }
            }
            Ok(())
        };
        for (i, rule) in config.access.iter().enumerate() {
            let what = format!("access rule {}", i + 1);
            if rule.repositories.is_empty() || rule.repositories.iter().any(|p| p.is_empty()) {
                return Err(format!("{what}: `repositories` needs at least one non-empty pattern"));
            }
            check_matchers(&rule.principals, &what)?;
            if let Some(bad) = rule.actions.iter().find(|a| !REPOSITORY_ACTIONS.contains(&a.as_str()) && *a != "*") {
                return Err(format!("{what}: unknown action {bad:?} (pull, push, delete or *)"));
            }
            if !rule.public && (rule.principals.is_empty() || rule.actions.is_empty()) {
                return Err(format!("{what}: needs `principals` and `actions`, or `public = true`"));
            }
        }
        check_matchers(&config.catalog.principals, "catalog")?;
        Ok(Policy { rules: config.access.clone(), catalog: config.catalog.principals.clone() })
    }

    /// The repository actions `who` may perform on `repo` under the current rules.
    pub fn repository_actions(&self, who: &Principal, repo: &str) -> Vec<&'static str> {
        let mut allowed = Vec::new();
        for rule in &self.rules {
            if !rule.repositories.iter().any(|p| glob::matches(p, repo)) {
                continue;
            }
            let mut grant = |action: &'static str| {
                if !allowed.contains(&action) {
                    allowed.push(action);
                }
            };
            if rule.public {
                grant(super::scope::PULL);
            }
            if rule.principals.iter().any(|m| who.matches(m)) {
                for action in REPOSITORY_ACTIONS {
                    if rule.actions.iter().any(|a| a == action || a == "*") {
                        grant(action);
                    }
                }
            }
        }
        // A stable order keeps tokens and messages predictable.
        REPOSITORY_ACTIONS.into_iter().filter(|a| allowed.contains(a)).collect()
    }

    pub fn may_list_catalog(&self, who: &Principal) -> bool {
        self.catalog.iter().any(|m| who.matches(m))
    }

    /// What to grant of the requested scopes: for each resource, the requested actions the
    /// policy allows (`*` meaning all of them). Resources with nothing allowed are left out, as
    /// Docker's token spec says; the registry then refuses what is missing.
    pub fn grant(&self, who: &Principal, requested: &[AccessEntry]) -> Vec<AccessEntry> {
        let mut granted = Vec::new();
        for scope in requested {
            let actions: Vec<&str> = match scope.kind.as_str() {
                REPOSITORY if crate::names::RepoName::parse(&scope.name).is_ok() => {
                    let allowed = self.repository_actions(who, &scope.name);
                    let wants_all = scope.actions.iter().any(|a| a == "*");
                    allowed
                        .into_iter()
                        .filter(|a| wants_all || scope.actions.iter().any(|r| r == a))
                        .collect()
                }
                REGISTRY if scope.name == CATALOG && self.may_list_catalog(who) => {
                    if scope.actions.iter().any(|a| a == "*") { vec!["*"] } else { Vec::new() }
                }
                _ => Vec::new(),
            };
            if !actions.is_empty() {
                granted.push(AccessEntry::new(&scope.kind, &scope.name, &actions));
            }
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::parse_scopes;

    fn policy() -> Policy {
        let config = AuthConfig::from_toml(
            r#"
            [catalog]
            principals = ["group:admins"]

            [[access]]
            repositories = ["public/**"]
            public = true

            [[access]]
            repositories = ["team/*"]
            principals = ["group:devs", "robot:builder"]
            actions = ["pull", "push"]

            [[access]]
            repositories = ["team/*", "public/**"]
            principals = ["user:boss"]
            actions = ["*"]
            "#,
        )
        .unwrap();
        Policy::new(&config).unwrap()
    }

    fn user(name: &str, groups: &[&str]) -> Principal {
        Principal { subject: format!("user:{name}"), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    #[test]
    fn partial_grants() {
        let p = policy();
        let dev = user("alice", &["devs"]);
        let req = parse_scopes(["repository:team/app:pull,push,delete repository:public/x:push,pull repository:secret:pull registry:catalog:*"]).unwrap();
        let granted = p.grant(&dev, &req);
        assert_eq!(
            granted,
            vec![
                AccessEntry::new("repository", "team/app", &["pull", "push"]),
                AccessEntry::new("repository", "public/x", &["pull"]),
            ]
        );
        // Anonymous: public pull only; `*` in a request means everything allowed.
        let anon = Principal::anonymous();
        assert_eq!(
            p.grant(&anon, &parse_scopes(["repository:public/a/b:*", "repository:team/app:pull"]).unwrap()),
            vec![AccessEntry::new("repository", "public/a/b", &["pull"])]
        );
        // `team/*` does not reach nested names; bad names are never granted.
        assert!(p.grant(&dev, &parse_scopes(["repository:team/app/sub:pull"]).unwrap()).is_empty());
        assert!(p.grant(&dev, &parse_scopes(["repository:team/../x:pull"]).unwrap()).is_empty());
        let boss = user("boss", &["admins"]);
        assert_eq!(
            p.grant(&boss, &parse_scopes(["repository:team/app:*", "registry:catalog:*"]).unwrap()),
            vec![
                AccessEntry::new("repository", "team/app", &["pull", "push", "delete"]),
                AccessEntry::new("registry", "catalog", &["*"]),
            ]
        );
        let robot = Principal { subject: "robot:builder".into(), groups: vec![] };
        assert_eq!(p.repository_actions(&robot, "team/x"), vec!["pull", "push"]);
        // A user named like a group gets nothing from the group rule.
        assert!(p.repository_actions(&user("devs", &[]), "team/x").is_empty());
    }

    #[test]
    fn rejects_bad_rules() {
        for bad in [
            "[[access]]\nrepositories = []\npublic = true",
            "[[access]]\nrepositories = [\"a\"]\nprincipals = [\"alice\"]\nactions = [\"pull\"]",
            "[[access]]\nrepositories = [\"a\"]\nprincipals = [\"user:a\"]\nactions = [\"write\"]",
            "[[access]]\nrepositories = [\"a\"]\nprincipals = [\"user:a\"]",
        ] {
            let config = AuthConfig::from_toml(bad).unwrap();
            assert!(Policy::new(&config).is_err(), "{bad}");
        }
        assert!(AuthConfig::from_toml("[[access]]\nrepository = \"x\"").is_err());
    }
}
