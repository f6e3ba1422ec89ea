//! Every retention rule alone, then together, on small hand-made repositories.

use super::*;

const NOW: u64 = 1_800_000_000;

fn days_ago(d: u64) -> u64 {
    NOW - d * DAY
}

fn policies(rules: &str) -> Policies {
    Policies::from_policy_file(rules).unwrap()
}

/// A digest made from a short name, so tests read as names.
fn dg(name: &str) -> String {
    crate::hash::sha256_of(name.as_bytes())
}

fn manifest(name: &str, pushed_days_ago: u64) -> ManifestInfo {
    ManifestInfo { digest: dg(name), pushed_at: days_ago(pushed_days_ago), ..Default::default() }
}

fn tag(name: &str, target: &str, days: u64) -> TagInfo {
    TagInfo { name: name.into(), digest: dg(target), tagged_at: days_ago(days) }
}

/// (deleted tags, deleted manifests by name): tags in plan order; manifests in plan order
/// with each run of equal depth (parents before children) sorted by name.
fn run(p: &Policies, repo: &str, inv: &Inventory, names: &[&str]) -> (Vec<String>, Vec<String>) {
    let name_of = |d: &str| names.iter().find(|n| dg(n) == d).map(|n| n.to_string()).unwrap_or(d.to_string());
    let plan = plan(p, repo, inv, NOW);
    let mut tags = Vec::new();
    let mut manifests = Vec::new();
    let mut seen_manifest = false;
    for d in plan.deletions {
        match d {
            Deletion::Tag { name, .. } => {
                assert!(!seen_manifest, "tags come before manifests");
                tags.push(name)
            }
            Deletion::Manifest { digest, .. } => {
                seen_manifest = true;
                manifests.push(name_of(&digest))
            }
        }
    }
    // Plan order sorts equal depths by digest; by name reads better here.
    let depth_of = |n: &String| test_depth(inv, &dg(n));
    let mut ordered = manifests.clone();
    ordered.sort_by_key(|n| (depth_of(n), n.clone()));
    let depths: Vec<usize> = manifests.iter().map(depth_of).collect();
    assert!(depths.windows(2).all(|w| w[0] <= w[1]), "parents before children: {manifests:?}");
    (tags, ordered)
}

/// How many manifests sit above `digest` (subject or listing index), independently of `depth`.
fn test_depth(inv: &Inventory, digest: &str) -> usize {
    let Some(m) = inv.manifests.iter().find(|m| m.digest == digest) else { return 0 };
    let mut above: Vec<&str> = inv.manifests.iter().filter(|p| p.children.iter().any(|c| c == digest)).map(|p| p.digest.as_str()).collect();
    above.extend(m.subject.as_deref().filter(|s| inv.manifests.iter().any(|x| x.digest == *s)));
    above.into_iter().map(|p| test_depth(inv, p) + 1).max().unwrap_or(0)
}

/// Five images a..e, pushed 10, 8, 6, 4, 2 days ago, tagged t-a..t-e at the same times.
fn five() -> (Inventory, Vec<&'static str>) {
    let names = vec!["a", "b", "c", "d", "e"];
    let mut inv = Inventory::default();
    for (i, n) in names.iter().enumerate() {
        let age = 10 - 2 * i as u64;
        inv.manifests.push(manifest(n, age));
        inv.tags.push(tag(&format!("t-{n}"), n, age));
    }
    (inv, names)
}

#[test]
fn no_matching_rule_keeps_everything() {
    let p = policies("[[policies.retention]]\nrepositories = [\"other/**\"]\nkeep_last = 1");
    let (inv, _) = five();
    assert_eq!(plan(&p, "team/app", &inv, NOW), Plan::default());
    assert_eq!(plan(&Policies::default(), "team/app", &inv, NOW), Plan::default());
}

#[test]
fn keep_last_keeps_the_most_recently_pushed_tags() {
    let p = policies("[[policies.retention]]\nrepositories = [\"team/**\"]\nkeep_last = 2");
    let (inv, names) = five();
    let (tags, manifests) = run(&p, "team/app", &inv, &names);
    assert_eq!(tags, ["t-a", "t-b", "t-c"]);
    assert_eq!(manifests, ["a", "b", "c"]);
    let plan = plan(&p, "team/app", &inv, NOW);
    assert_eq!(plan.rule, Some(1));
    assert!(plan.deletions.contains(&Deletion::Manifest { digest: dg("a"), reason: Reason::TagsExpired { rule: 1 } }));
    assert!(plan.deletions.contains(&Deletion::Tag { name: "t-a".into(), digest: dg("a"), reason: Reason::TagNotKept { rule: 1 } }));
}

#[test]
fn a_manifest_keeps_while_any_tag_of_it_is_kept() {
    let p = policies("[[policies.retention]]\nrepositories = [\"**\"]\nkeep_last = 1");
    let mut inv = Inventory::default();
    inv.manifests.push(manifest("a", 9));
    inv.tags.push(tag("old", "a", 9));
    inv.tags.push(tag("new", "a", 1));
    let (tags, manifests) = run(&p, "x", &inv, &["a"]);
    assert_eq!((tags, manifests), (vec!["old".to_string()], vec![]));
}

#[test]
fn keep_within_days_counts_pushes_and_pulls() {
    let p = policies("[[policies.retention]]\nrepositories = [\"**\"]\nkeep_within_days = 5");
    let (mut inv, names) = five();
    let (tags, _) = run(&p, "x", &inv, &names);
    assert_eq!(tags, ["t-a", "t-b", "t-c"], "pushed 10, 8, 6 days ago");
    inv.manifests[0].pulled_at = Some(days_ago(1));
    let (tags, manifests) = run(&p, "x", &inv, &names);
    assert_eq!((tags, manifests), (vec!["t-b".to_string(), "t-c".into()], vec!["b".to_string(), "c".into()]));
}

#[test]
fn keep_tags_patterns_are_always_kept() {
    let p = policies("[[policies.retention]]\nrepositories = [\"**\"]\nkeep_tags = [\"v*\", \"release-*\"]");
    let mut inv = Inventory::default();
    for (n, t) in [("a", "v1.0"), ("b", "release-7"), ("c", "main"), ("d", "pr-12")] {
        inv.manifests.push(manifest(n, 400));
        inv.tags.push(tag(t, n, 400));
    }
    let (tags, manifests) = run(&p, "x", &inv, &["a", "b", "c", "d"]);
    assert_eq!((tags, manifests), (vec!["main".to_string(), "pr-12".into()], vec!["c".to_string(), "d".into()]));
}

#[test]
fn untagged_manifests_go_after_their_days_and_tags_stay_alone() {
    let p = policies("[[policies.retention]]\nrepositories = [\"**\"]\ndelete_untagged_after_days = 7");
    let mut inv = Inventory::default();
    inv.manifests.push(manifest("old-untagged", 30));
    inv.manifests.push(manifest("young-untagged", 2));
    inv.manifests.push(manifest("old-tagged", 300));
    inv.tags.push(tag("ancient", "old-tagged", 300));
    let mut pulled = manifest("pulled", 30);
    pulled.pulled_at = Some(days_ago(1));
    inv.manifests.push(pulled);
    let names = ["old-untagged", "young-untagged", "old-tagged", "pulled"];
    let (tags, manifests) = run(&p, "x", &inv, &names);
    assert!(tags.is_empty(), "a rule without keep conditions judges no tag");
    assert_eq!(manifests, ["old-untagged"]);
    let plan = plan(&p, "x", &inv, NOW);
    assert_eq!(
        plan.deletions,
        [Deletion::Manifest { digest: dg("old-untagged"), reason: Reason::Untagged { rule: 1, days: 7 } }]
    );
    // Without the rule, untagged manifests stay.
    let keep = policies("[[policies.retention]]\nrepositories = [\"**\"]\nkeep_last = 5");
    assert!(run(&keep, "x", &inv, &names).1.is_empty());
}

#[test]
fn times_of_zero_are_long_ago() {
    let p = policies("[[policies.retention]]\nrepositories = [\"**\"]\ndelete_untagged_after_days = 1");
    let inv = Inventory { tags: vec![], manifests: vec![ManifestInfo { digest: dg("legacy"), ..Default::default() }] };
    assert_eq!(run(&p, "x", &inv, &["legacy"]).1, ["legacy"]);
}

/// sig is a referrer of a (subject field), sbom a referrer of sig; both untagged and old.
fn with_referrers() -> Inventory {
    let mut inv = Inventory::default();
    inv.manifests.push(manifest("a", 100));
    let mut sig = manifest("sig", 100);
    sig.subject = Some(dg("a"));
    let mut sbom = manifest("sbom", 100);
    sbom.subject = Some(dg("sig"));
    inv.manifests.push(sbom);
    inv.manifests.push(sig);
    inv
}

#[test]
fn referrers_stay_with_a_kept_subject_and_go_after_it() {
    let p = policies(
        "[[policies.retention]]\nrepositories = [\"**\"]\nkeep_tags = [\"keep\"]\ndelete_untagged_after_days = 1",
    );
    let names = ["a", "sig", "sbom"];
    let mut inv = with_referrers();
    inv.tags.push(tag("keep", "a", 100));
    assert_eq!(run(&p, "x", &inv, &names), (vec![], vec![]), "old untagged referrers of a kept subject stay");
    inv.tags[0].name = "drop".into();
    let (tags, manifests) = run(&p, "x", &inv, &names);
    assert_eq!(tags, ["drop"]);
    assert_eq!(manifests, ["a", "sig", "sbom"], "subject before referrer, never the other way");
    let plan = plan(&p, "x", &inv, NOW);
    assert!(plan.deletions.contains(&Deletion::Manifest { digest: dg("sig"), reason: Reason::PartOf { parent: dg("a") } }));
}

#[test]
fn a_referrer_whose_subject_is_gone_is_judged_as_untagged() {
    let p = policies("[[policies.retention]]\nrepositories = [\"**\"]\ndelete_untagged_after_days = 1");
    let mut orphan = manifest("orphan", 5);
    orphan.subject = Some(dg("never-pushed"));
    let inv = Inventory { tags: vec![], manifests: vec![orphan] };
    assert_eq!(run(&p, "x", &inv, &["orphan"]).1, ["orphan"]);
}

#[test]
fn referrer_schema_tags_follow_their_subject() {
    let p = policies("[[policies.retention]]\nrepositories = [\"**\"]\nkeep_last = 1");
    let mut inv = Inventory::default();
    inv.manifests.push(manifest("a", 10));
    inv.manifests.push(manifest("b", 1));
    inv.manifests.push(manifest("sig-a", 10));
    inv.manifests.push(manifest("sig-b", 1));
    inv.tags.push(tag("old", "a", 10));
    inv.tags.push(tag("new", "b", 1));
    // cosign's tags, pushed after their images: they must not push `new` out of keep_last = 1.
    let schema = |subject: &str| format!("sha256-{}.sig", dg(subject).trim_start_matches("sha256:"));
    inv.tags.push(TagInfo { name: schema("a"), digest: dg("sig-a"), tagged_at: days_ago(0) });
    inv.tags.push(TagInfo { name: schema("b"), digest: dg("sig-b"), tagged_at: days_ago(0) });
    let (tags, manifests) = run(&p, "x", &inv, &["a", "b", "sig-a", "sig-b"]);
    assert_eq!(tags, ["old".to_string(), schema("a")]);
    assert_eq!(manifests, ["a", "sig-a"]);
}

/// An index `idx` with children c1, c2 (untagged, old), and a child shared with `other`.
fn with_index() -> Inventory {
    let mut inv = Inventory::default();
    let mut idx = manifest("idx", 50);
    idx.children = vec![dg("c1"), dg("c2"), dg("shared")];
    let mut other = manifest("other", 1);
    other.children = vec![dg("shared")];
    inv.manifests.extend([manifest("c1", 50), manifest("c2", 50), manifest("shared", 50), idx, other]);
    inv.tags.push(tag("old", "idx", 50));
    inv.tags.push(tag("new", "other", 1));
    inv
}

#[test]
fn an_index_keeps_its_children_and_takes_them_along() {
    let names = ["idx", "c1", "c2", "shared", "other"];
    let keep_all = policies(
        "[[policies.retention]]\nrepositories = [\"**\"]\nkeep_last = 2\ndelete_untagged_after_days = 1",
    );
    assert_eq!(run(&keep_all, "x", &with_index(), &names), (vec![], vec![]), "old untagged children of a kept index stay");
    let keep_one = policies("[[policies.retention]]\nrepositories = [\"**\"]\nkeep_last = 1");
    let (tags, manifests) = run(&keep_one, "x", &with_index(), &names);
    assert_eq!(tags, ["old"]);
    // The index first, then its children; the child `other` still lists stays.
    assert_eq!(manifests, ["idx", "c1", "c2"]);
}

#[test]
fn immutable_tags_are_never_let_go() {
    let p = policies(
        "[[policies.immutable_tags]]\nrepositories = [\"prod/**\"]\ntags = [\"t-a\"]\n\
         [[policies.retention]]\nrepositories = [\"**\"]\nkeep_last = 1",
    );
    let (inv, names) = five();
    let (tags, manifests) = run(&p, "prod/app", &inv, &names);
    assert_eq!(tags, ["t-b", "t-c", "t-d"]);
    assert_eq!(manifests, ["b", "c", "d"]);
    // Elsewhere the same tag is not immutable.
    assert_eq!(run(&p, "dev/app", &inv, &names).0, ["t-a", "t-b", "t-c", "t-d"]);
}

#[test]
fn the_conditions_add_up_and_the_first_matching_rule_applies() {
    let p = policies(
        "[[policies.retention]]\nrepositories = [\"team/special\"]\nkeep_last = 5\n\
         [[policies.retention]]\nrepositories = [\"team/**\"]\nkeep_last = 1\nkeep_within_days = 7\n\
         keep_tags = [\"t-a\"]\ndelete_untagged_after_days = 3",
    );
    let (mut inv, mut names) = five();
    inv.manifests.push(manifest("loose-old", 4));
    inv.manifests.push(manifest("loose-new", 2));
    names.extend(["loose-old", "loose-new"]);
    // t-e: last; t-d (4 days) and t-c (6 days): within 7 days; t-a: pattern; t-b: nothing.
    let (tags, manifests) = run(&p, "team/app", &inv, &names);
    assert_eq!(tags, ["t-b"]);
    assert_eq!(manifests, ["b", "loose-old"]);
    assert_eq!(plan(&p, "team/app", &inv, NOW).rule, Some(2));
    let special = plan(&p, "team/special", &inv, NOW);
    assert_eq!((special.rule, special.deletions.len()), (Some(1), 0));
}
