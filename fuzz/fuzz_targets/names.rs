//! Repository names, tags, references and digests: never a panic, and whatever parses
//! re-serializes to exactly the input (a name or reference is stored and compared as text).
#![no_main]

use berth_core::names::{is_valid_tag, parse_digest, Reference, RepoName, MAX_NAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(name) = RepoName::parse(s) {
        assert_eq!(name.as_str(), s);
        assert_eq!(name.to_string(), s);
        assert!(s.len() <= MAX_NAME_LEN);
        // Names are path parts and storage keys: nothing outside the grammar's alphabet.
        assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
        assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
    }
    if is_valid_tag(s) {
        assert_eq!(Reference::parse(s).ok(), Some(Reference::Tag(s.to_owned())));
    }
    if let Ok(digest) = parse_digest(s) {
        assert_eq!(digest.to_string(), s);
        assert_eq!(parse_digest(&digest.to_string()).ok(), Some(digest));
    }
    if let Ok(reference) = Reference::parse(s) {
        assert_eq!(reference.to_string(), s);
        assert_eq!(Reference::parse(&reference.to_string()).ok(), Some(reference));
    }
});
