//! Docker token scopes (`repository:NAME:pull,push`, `registry:catalog:*`) and the `access`
//! claim that carries the granted subset, in the format of Docker's token specification.

use serde::{Deserialize, Serialize};

pub const PULL: &str = "pull";
pub const PUSH: &str = "push";
pub const DELETE: &str = "delete";
/// The repository actions Berth knows; `*` in a scope asks for all of them.
pub const REPOSITORY_ACTIONS: [&str; 3] = [PULL, PUSH, DELETE];

pub const REPOSITORY: &str = "repository";
pub const REGISTRY: &str = "registry";
pub const CATALOG: &str = "catalog";

/// One resource and the actions on it: both a requested scope and an entry of the `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl AccessEntry {
    pub fn new(kind: &str, name: &str, actions: &[&str]) -> Self {
        AccessEntry {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind && self.name == name && self.actions.iter().any(|a| a == action || a == "*")
    }

    /// `repository:NAME:pull,push`, as a scope parameter.
    pub fn to_scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// Parses scope parameters: each may hold several scopes separated by spaces (the OAuth2 form),
/// and a GET may repeat `scope=`. Malformed scopes are skipped (nothing is granted for them);
/// the same resource named twice is merged.
pub fn parse_scopes<'a>(params: impl IntoIterator<Item = &'a str>) -> Vec<AccessEntry> {
    let mut out: Vec<AccessEntry> = Vec::new();
    for scope in params.into_iter().flat_map(|p| p.split(' ')).filter(|s| !s.is_empty()) {
        let Some(entry) = parse_scope(scope) else {
            continue;
        };
        match out.iter_mut().find(|e| e.kind == entry.kind && e.name == entry.name) {
            Some(existing) => {
                for action in entry.actions {
                    if !existing.actions.contains(&action) {
                        existing.actions.push(action);
                    }
                }
            }
            None => out.push(entry),
        }
    }
    out
}

fn parse_scope(scope: &str) -> Option<AccessEntry> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    // `repository(plugin)` is an old Docker spelling of the same resource type.
    let kind = kind.split('(').next().unwrap_or(kind);
    if kind.is_empty() || name.is_empty() || name.len() > 512 {
        return None;
    }
    let actions: Vec<String> = actions
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if actions.is_empty() {
        return None;
    }
    Some(AccessEntry { kind: kind.to_owned(), name: name.to_owned(), actions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_merges() {
        let scopes = parse_scopes([
            "repository:team/app:pull repository:team/app:push",
            "registry:catalog:*",
            "repository:a:b:pull",
            "garbage",
            "repository::pull",
            "repository(plugin):p:pull",
        ]);
        assert_eq!(
            scopes,
            vec![
                AccessEntry::new("repository", "team/app", &["pull", "push"]),
                AccessEntry::new("registry", "catalog", &["*"]),
                AccessEntry::new("repository", "a:b", &["pull"]),
                AccessEntry::new("repository", "p", &["pull"]),
            ]
        );
        assert!(scopes[1].allows("registry", "catalog", "*"));
        assert!(!scopes[0].allows("repository", "team/app", "delete"));
        assert!(!scopes[0].allows("repository", "team/other", "pull"));
        assert_eq!(scopes[0].to_scope(), "repository:team/app:pull,push");
    }
}
