//! Repository names, tags and digests, parsed strictly by the spec's grammar.

use crate::error::{oci, ErrorCode, Result};
pub use oci_spec::image::{Digest, DigestAlgorithm};

/// Distribution's limit on a whole repository name.
pub const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A validated repository name such as `org/team/app`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
    pub fn parse(name: &str) -> Result<Self> {
        let invalid = |why: &str| {
            oci(ErrorCode::NameInvalid, format!("invalid repository name {name:?}: {why}"))
                .with_detail(serde_json::json!({ "name": name }))
        };
        if name.is_empty() {
            return Err(invalid("empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("longer than 255 characters"));
        }
        for component in name.split('/') {
            if !valid_component(component) {
                return Err(invalid(
                    "each /-separated component must be lower-case letters and digits, \
                     joined by '.', '_', '__' or dashes",
                ));
            }
        }
        Ok(RepoName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Separators between alphanumeric runs: '.', '_', '__', or any number of '-'.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphanumeric() || *b == b'_' => {}
        _ => return false,
    }
    bytes.len() <= MAX_TAG_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses a digest and insists on an algorithm Berth can verify (sha256, sha512).
pub fn parse_digest(s: &str) -> Result<Digest> {
    let digest: Digest = s.parse().map_err(|e| {
        oci(ErrorCode::DigestInvalid, format!("invalid digest {s:?}: {e}"))
            .with_detail(serde_json::json!({ "digest": s }))
    })?;
    match digest.algorithm() {
        DigestAlgorithm::Sha256 | DigestAlgorithm::Sha512 => Ok(digest),
        other => Err(oci(
            ErrorCode::Unsupported,
            format!("digest algorithm {:?} is not supported; use sha256 or sha512", other.as_ref()),
        )
        .with_detail(serde_json::json!({ "digest": s }))),
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self> {
        if s.contains(':') {
            return parse_digest(s).map(Reference::Digest);
        }
        if is_valid_tag(s) {
            return Ok(Reference::Tag(s.to_owned()));
        }
        Err(oci(
            ErrorCode::TagInvalid,
            format!("invalid tag {s:?}: tags match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"),
        ))
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_grammar() {
        for good in ["a", "library/ubuntu", "org/team/app", "a.b_c__d---e", "x0/1y", "a-b"] {
            assert!(RepoName::parse(good).is_ok(), "{good} should be valid");
        }
        let too_long = "a".repeat(256);
        for bad in [
            "", "A", "a//b", "a/", "/a", "..", "a/../b", "a..b", "a___b", "-a", "a-", "a_", "a b",
            "a/.b", too_long.as_str(), "a:b", "a@b",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn tags_follow_the_grammar() {
        assert!(is_valid_tag("latest"));
        assert!(is_valid_tag("_v1.2-rc.3"));
        assert!(!is_valid_tag("-bad"));
        assert!(!is_valid_tag(".bad"));
        assert!(!is_valid_tag(""));
        assert!(!is_valid_tag(&"a".repeat(129)));
        assert!(is_valid_tag(&"a".repeat(128)));
    }

    #[test]
    fn digests_are_strict() {
        let hex64 = "a".repeat(64);
        assert!(parse_digest(&format!("sha256:{hex64}")).is_ok());
        assert!(parse_digest(&format!("sha512:{}", "b".repeat(128))).is_ok());
        let bad = [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            "sha256".to_string(),
            "sha256:".to_string(),
            ":abc".to_string(),
        ];
        for b in bad {
            assert_eq!(parse_digest(&b).unwrap_err().code, ErrorCode::DigestInvalid, "{b}");
        }
        let unsupported = parse_digest(&format!("sha384:{}", "c".repeat(96))).unwrap_err();
        assert_eq!(unsupported.code, ErrorCode::Unsupported);
        assert_eq!(parse_digest("foo:bar").unwrap_err().code, ErrorCode::Unsupported);
    }
}
