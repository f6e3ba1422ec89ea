//! Token verification with a fixed key ring: never a panic, arbitrary strings (and mutations of
//! a valid token) are refused with a reason, and the verified-token cache answers like a first
//! verification does.
#![no_main]

use std::sync::OnceLock;

use berth_core::auth::token::{BerthClaims, KeyRing, USE_ACCESS, USE_REFRESH};
use berth_fuzz::{key_ring, seed_token, AUDIENCE, ISSUER, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The ring and the claims of its one valid token: other claims that verify are a forgery.
    // (The same claims under another spelling, e.g. a malleable encoding, would be harmless.)
    static RING: OnceLock<(KeyRing, BerthClaims)> = OnceLock::new();
    let (ring, seed) = RING.get_or_init(|| {
        let ring = key_ring();
        let token = seed_token(&ring);
        let seed = ring.verify(&token, NOW, ISSUER, AUDIENCE, USE_ACCESS).expect("the seed verifies");
        (ring, seed)
    });
    let Ok(token) = std::str::from_utf8(data) else { return };
    let first = ring.verify(token, NOW, ISSUER, AUDIENCE, USE_ACCESS);
    if let Ok(claims) = &first {
        let same = (&claims.sub, &claims.jti, &claims.access) == (&seed.sub, &seed.jti, &seed.access);
        assert!(same, "forged claims verified: {claims:?}");
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), (ISSUER, AUDIENCE));
    }
    // A second check is answered from the cache when the signature held: same verdict.
    let again = ring.verify(token, NOW, ISSUER, AUDIENCE, USE_ACCESS);
    assert_eq!(first.is_ok(), again.is_ok());
    // An access token is never a refresh token.
    assert!(ring.verify(token, NOW, ISSUER, AUDIENCE, USE_REFRESH).is_err());
});
