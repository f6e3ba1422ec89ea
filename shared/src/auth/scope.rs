//! Docker token scopes (`repository:NAME:pull,push`, `registry:catalog:*`) and the `access`
//! claim that carries the granted subset, in the format of Docker's token specification.

use std::collections::hash_map::{Entry, HashMap};

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

/// Scopes one token request may name. Docker, containerd and oras ask for one to a few
/// (a push with mounts: the target plus each source); 64 leaves room for large multi-repository
/// copies while keeping the work and the audit line of one request small.
pub const MAX_SCOPES: usize = 64;

/// Parses scope parameters: each may hold several scopes separated by spaces (the OAuth2 form),
/// and a GET may repeat `scope=`. More than [`MAX_SCOPES`] is an error (the message says so).
/// Malformed scopes are skipped (nothing is granted for them); actions Berth does not know
/// are dropped; the same resource named twice is merged, in linear time.
pub fn parse_scopes<'a>(params: impl IntoIterator<Item = &'a str>) -> Result<Vec<AccessEntry>, String> {
    let mut out: Vec<AccessEntry> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut count = 0;
    for scope in params.into_iter().flat_map(|p| p.split(' ')).filter(|s| !s.is_empty()) {
        count += 1;
        if count > MAX_SCOPES {
            return Err(format!("a token request may name at most {MAX_SCOPES} scopes; split it into several requests"));
        }
        let Some(entry) = parse_scope(scope) else {
            continue;
        };
        match index.entry((entry.kind.clone(), entry.name.clone())) {
            Entry::Occupied(at) => {
                // At most four known actions per entry: this check is constant time.
                let existing = &mut out[*at.get()];
                for action in entry.actions {
                    if !existing.actions.contains(&action) {
                        existing.actions.push(action);
                    }
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(out.len());
                out.push(entry);
            }
        }
    }
    Ok(out)
}

fn parse_scope(scope: &str) -> Option<AccessEntry> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    // `repository(plugin)` is an old Docker spelling of the same resource type.
    let kind = kind.split('(').next().unwrap_or(kind);
    if kind.is_empty() || name.is_empty() || name.len() > crate::names::MAX_NAME_LEN {
        return None;
    }
    // Only actions that can be granted; each once.
    let mut known: Vec<String> = Vec::new();
    for action in actions.split(',') {
        if (action == "*" || REPOSITORY_ACTIONS.contains(&action)) && !known.iter().any(|k| k == action) {
            known.push(action.to_owned());
        }
    }
    if known.is_empty() {
        return None;
    }
    Some(AccessEntry { kind: kind.to_owned(), name: name.to_owned(), actions: known })
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
            "repository:q:fly,pull,pull,swim",
            "repository:r:fly",
        ])
        .unwrap();
        assert_eq!(
            scopes,
            vec![
                AccessEntry::new("repository", "team/app", &["pull", "push"]),
                AccessEntry::new("registry", "catalog", &["*"]),
                AccessEntry::new("repository", "a:b", &["pull"]),
                AccessEntry::new("repository", "p", &["pull"]),
                AccessEntry::new("repository", "q", &["pull"]),
            ]
        );
        assert!(scopes[1].allows("registry", "catalog", "*"));
        assert!(!scopes[0].allows("repository", "team/app", "delete"));
        assert!(!scopes[0].allows("repository", "team/other", "pull"));
        assert_eq!(scopes[0].to_scope(), "repository:team/app:pull,push");
    }

    /// Thousands of scopes cost ~250 ms of CPU (a quadratic merge) and ~115 KB of audit log
    /// per anonymous request: now a clear error past the cap.
    #[test]
    fn the_number_of_scopes_is_capped() {
        let at_cap: Vec<String> = (0..MAX_SCOPES).map(|i| format!("repository:r{i}:pull")).collect();
        assert_eq!(parse_scopes(at_cap.iter().map(String::as_str)).unwrap().len(), MAX_SCOPES);
        let one_param = at_cap.join(" ") + " repository:one-more:pull";
        assert!(parse_scopes([one_param.as_str()]).unwrap_err().contains("at most 64"));
        let same = vec!["repository:a:pull"; MAX_SCOPES + 1];
        assert!(parse_scopes(same).is_err());
    }
}
