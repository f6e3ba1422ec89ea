//! Token request scopes: never a panic, every entry is well formed, resources are merged, and
//! an entry written back as a scope parses to itself (the token endpoint echoes scopes).
//! Input: scope parameters, one per line.
#![no_main]

use berth_core::auth::scope::parse_scopes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // Too many scopes is a refusal (Err), never a panic.
    let Ok(entries) = parse_scopes(s.split('\n')) else { return };
    for (i, e) in entries.iter().enumerate() {
        assert!(!e.kind.is_empty() && !e.name.is_empty() && e.name.len() <= 512);
        assert!(!e.kind.contains([':', '(', ' ']) && !e.name.contains(' '));
        assert!(!e.actions.is_empty() && e.actions.iter().all(|a| !a.is_empty() && !a.contains([',', ':', ' '])));
        assert!(!entries[..i].iter().any(|o| o.kind == e.kind && o.name == e.name), "not merged");
        assert_eq!(parse_scopes([e.to_scope().as_str()]), Ok(vec![e.clone()]));
    }
});
