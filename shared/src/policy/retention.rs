//! Retention: which tags and manifests of one repository its retention rule lets go.
//!
//! Pure and clock-free: garbage collection (the caller) lists a repository's tags and manifests
//! with their times (the `*_at` fields of records.rs), calls [`plan`] with the run's time, and
//! deletes what comes back, in the order given. docs/policies.md states the rules; in short:
//!
//! - The first `[[policies.retention]]` rule whose repositories match applies; none: keep all.
//! - A tag is kept if any of the rule's conditions keeps it (`keep_last`, `keep_within_days`,
//!   `keep_tags`), or it is immutable. A rule with none of those conditions keeps every tag.
//! - A manifest is kept if a kept tag points at it, if it is reachable from a kept manifest
//!   (the children of an index; the referrers of a subject, by `subject` field or by the
//!   `sha256-<hex>…` tag schema), or if it is an untagged top-level manifest the rule does not
//!   expire (`delete_untagged_after_days`, counted from its last push or pull).
//! - Everything else goes: a top-level manifest whose tags all expired (the image expired),
//!   an untagged one past its days, and whatever belongs only to deleted manifests.
//!
//! Order of the result, so that a run cut short at any point never leaves a kept manifest
//! without what it needs nor a referrer without its subject: tags first, then manifests
//! parents first (an index before its children, a subject before its referrers).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::config::RetentionRule;
use super::{any_match, Policies};

const DAY: u64 = 86_400;

/// A tag as the store has it.
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub name: String,
    pub digest: String,
    /// When the tag last moved (`TagRecord::tagged_at`); 0: unknown, long ago.
    pub tagged_at: u64,
}

/// A live manifest of the repository.
#[derive(Debug, Clone, Default)]
pub struct ManifestInfo {
    pub digest: String,
    /// `ManifestRecord::pushed_at`; 0: unknown, long ago.
    pub pushed_at: u64,
    /// `ManifestRecord::pulled_at`: the last pull, to within an hour; None: not recorded.
    pub pulled_at: Option<u64>,
    /// The `subject` of a referrer (signature, SBOM).
    pub subject: Option<String>,
    /// The manifests an index lists.
    pub children: Vec<String>,
}

impl ManifestInfo {
    fn last_used(&self) -> u64 {
        self.pushed_at.max(self.pulled_at.unwrap_or(0))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub tags: Vec<TagInfo>,
    pub manifests: Vec<ManifestInfo>,
}

/// Why something goes; `rule` is the retention rule's number in the file (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No condition of the rule keeps this tag.
    TagNotKept { rule: usize },
    /// A top-level manifest whose every tag was let go: the image expired.
    TagsExpired { rule: usize },
    /// A top-level manifest no tag pointed at, unused for longer than the rule allows.
    Untagged { rule: usize, days: u32 },
    /// Part of a deleted manifest only: a child of a deleted index, a referrer of a deleted
    /// subject, or a `sha256-<hex>…` tag naming a deleted subject.
    PartOf { parent: String },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::TagNotKept { rule } => write!(f, "no condition of retention rule {rule} keeps it"),
            Reason::TagsExpired { rule } => write!(f, "every tag of it expired under retention rule {rule}"),
            Reason::Untagged { rule, days } => {
                write!(f, "untagged and neither pushed nor pulled for {days} days (retention rule {rule})")
            }
            Reason::PartOf { parent } => write!(f, "belongs to {parent}, which is deleted"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Tag { name: String, digest: String, reason: Reason },
    Manifest { digest: String, reason: Reason },
}

/// What a retention run does in one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The rule that applied (1-based); None: no rule matches, nothing goes.
    pub rule: Option<usize>,
    pub deletions: Vec<Deletion>,
}

impl Policies {
    /// The retention rule (1-based number and rule) for `repo`: the first that matches.
    pub fn retention_rule(&self, repo: &str) -> Option<(usize, &RetentionRule)> {
        let rules = &self.config.retention;
        rules.iter().enumerate().find(|(_, r)| any_match(&r.repositories, repo)).map(|(i, r)| (i + 1, r))
    }
}

/// The subject a tag names by the referrers tag schema (`sha256-<64 hex>`, optionally with a
/// suffix such as cosign's `.sig`, `.att`, `.sbom`), as a digest.
fn tag_schema_subject(tag: &str) -> Option<String> {
    let hex = tag.strip_prefix("sha256-")?;
    let (hex, rest) = hex.split_at_checked(64)?;
    let valid = hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (valid && (rest.is_empty() || rest.starts_with('.'))).then(|| format!("sha256:{hex}"))
}

/// The deletions retention makes in `repo` at time `now` (Unix seconds).
pub fn plan(policies: &Policies, repo: &str, inventory: &Inventory, now: u64) -> Plan {
    let Some((rule_no, rule)) = policies.retention_rule(repo) else {
        return Plan::default();
    };
    let manifests: HashMap<&str, &ManifestInfo> =
        inventory.manifests.iter().map(|m| (m.digest.as_str(), m)).collect();
    let within = |time: u64, days: u32| now.saturating_sub(time) < u64::from(days) * DAY;

    // Tags that name their subject (referrers tag schema) follow it; the rest are judged.
    let (attached, judged): (Vec<&TagInfo>, Vec<&TagInfo>) = inventory
        .tags
        .iter()
        .partition(|t| tag_schema_subject(&t.name).is_some_and(|s| manifests.contains_key(s.as_str())));

    // 1. Tags: most recently pushed first (ties by name, so runs agree).
    let mut ranked = judged.clone();
    ranked.sort_by(|a, b| b.tagged_at.cmp(&a.tagged_at).then_with(|| a.name.cmp(&b.name)));
    let mut deletions = Vec::new();
    let mut kept_roots: Vec<&str> = Vec::new();
    for (rank, tag) in ranked.iter().enumerate() {
        let pulled = manifests.get(tag.digest.as_str()).and_then(|m| m.pulled_at).unwrap_or(0);
        let keep = !rule.judges_tags()
            || policies.immutable_rule(repo, &tag.name).is_some()
            || any_match(&rule.keep_tags, &tag.name)
            || rule.keep_last.is_some_and(|n| rank < n as usize)
            || rule.keep_within_days.is_some_and(|d| within(tag.tagged_at.max(pulled), d));
        if keep {
            kept_roots.push(&tag.digest);
        } else {
            let reason = Reason::TagNotKept { rule: rule_no };
            deletions.push(Deletion::Tag { name: tag.name.clone(), digest: tag.digest.clone(), reason });
        }
    }

    // 2. What belongs to what: parents[m] are the manifests m is part of.
    let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in &inventory.manifests {
        for child in m.children.iter().filter(|c| manifests.contains_key(c.as_str())) {
            parents.entry(child).or_default().push(&m.digest);
        }
        if let Some(subject) = m.subject.as_deref().and_then(|s| manifests.get_key_value(s).map(|(k, _)| *k)) {
            parents.entry(&m.digest).or_default().push(subject);
        }
    }
    let schema_subjects: Vec<(&TagInfo, String)> =
        attached.iter().map(|t| (*t, tag_schema_subject(&t.name).unwrap_or_default())).collect();
    for (tag, subject) in &schema_subjects {
        if let (Some((s, _)), true) = (manifests.get_key_value(subject.as_str()), manifests.contains_key(tag.digest.as_str())) {
            if *s != tag.digest {
                parents.entry(&tag.digest).or_default().push(s);
            }
        }
    }
    let top_level = |d: &str| parents.get(d).is_none_or(|p| p.is_empty());
    let tagged: BTreeSet<&str> = judged.iter().map(|t| t.digest.as_str()).collect();

    // 3. Roots: manifests of kept tags, and untagged top-level manifests not expired.
    let mut roots: Vec<&str> = kept_roots.into_iter().filter(|d| manifests.contains_key(d)).collect();
    for m in &inventory.manifests {
        let expired = rule.delete_untagged_after_days.is_some_and(|d| !within(m.last_used(), d));
        if top_level(&m.digest) && !tagged.contains(m.digest.as_str()) && !expired {
            roots.push(&m.digest);
        }
    }

    // 4. Kept: everything reachable from a root through "is part of" edges, walked downwards.
    let mut below: HashMap<&str, Vec<&str>> = HashMap::new();
    for (child, ps) in &parents {
        for p in ps {
            below.entry(p).or_default().push(child);
        }
    }
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    while let Some(d) = roots.pop() {
        if kept.insert(d) {
            roots.extend(below.get(d).into_iter().flatten().copied());
        }
    }

    // 5. Tags of the referrers tag schema go with their subject.
    for (tag, subject) in &schema_subjects {
        if !kept.contains(subject.as_str()) && policies.immutable_rule(repo, &tag.name).is_none() {
            let reason = Reason::PartOf { parent: subject.clone() };
            deletions.push(Deletion::Tag { name: tag.name.clone(), digest: tag.digest.clone(), reason });
        }
    }
    deletions.sort_by(|a, b| match (a, b) {
        (Deletion::Tag { name: x, .. }, Deletion::Tag { name: y, .. }) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    });

    // 6. Manifests not kept, parents first.
    let mut depth_memo: HashMap<&str, usize> = HashMap::new();
    let mut gone: Vec<(usize, &str)> = inventory
        .manifests
        .iter()
        .map(|m| m.digest.as_str())
        .filter(|d| !kept.contains(d))
        .map(|d| (depth(d, &parents, &mut depth_memo, 0), d))
        .collect();
    gone.sort();
    for (_, digest) in gone {
        let reason = if !top_level(digest) && !tagged.contains(digest) {
            Reason::PartOf { parent: parents[digest][0].to_owned() }
        } else if tagged.contains(digest) {
            Reason::TagsExpired { rule: rule_no }
        } else {
            Reason::Untagged { rule: rule_no, days: rule.delete_untagged_after_days.unwrap_or(0) }
        };
        deletions.push(Deletion::Manifest { digest: digest.to_owned(), reason });
    }
    Plan { rule: Some(rule_no), deletions }
}

/// The length of the longest chain of parents above `digest` (0 for a top-level manifest).
/// Bounded by the number of manifests, so a malformed cycle cannot recurse for ever.
fn depth<'a>(digest: &'a str, parents: &BTreeMap<&'a str, Vec<&'a str>>, memo: &mut HashMap<&'a str, usize>, seen: usize) -> usize {
    if let Some(d) = memo.get(digest) {
        return *d;
    }
    if seen > parents.len() {
        return 0;
    }
    let d = parents
        .get(digest)
        .into_iter()
        .flatten()
        .map(|p| depth(p, parents, memo, seen + 1) + 1)
        .max()
        .unwrap_or(0);
    memo.insert(digest, d);
    d
}

#[cfg(test)]
mod tests;
