//! What the fuzz targets share: the fixed key ring and clock of the token target.

use berth_core::auth::config::KeyConfig;
use berth_core::auth::token::KeyRing;

/// The fuzz clock (Unix seconds); the seed token is valid at this time.
pub const NOW: u64 = 1_700_000_000;
pub const ISSUER: &str = "berth";
pub const AUDIENCE: &str = "berth";

/// Two fixed P-256 keys: `k1` signs, `k2` only verifies (as during a rotation).
pub fn key_ring() -> KeyRing {
    let key = |kid: &str, seed: u8| KeyConfig {
        kid: kid.into(),
        private_key: Some(berth_core::auth::key_pair_from_seed(&[seed; 32]).expect("fixed seed").0),
        private_key_file: None,
        public_key: None,
    };
    KeyRing::new(&[key("k1", 7), key("k2", 8)]).expect("fixed keys")
}

/// The one token the fuzz key ring accepts at [`NOW`] (ES256 signatures are deterministic, so
/// it is the same on every run); `corpus/tokens/valid-access` holds it as a seed.
pub fn seed_token(ring: &KeyRing) -> String {
    use berth_core::auth::scope::AccessEntry;
    use berth_core::auth::token::{BerthClaims, USE_ACCESS};
    let claims = BerthClaims {
        iss: ISSUER.into(),
        sub: "user:alice".into(),
        aud: AUDIENCE.into(),
        jti: "seed".into(),
        token_use: USE_ACCESS.into(),
        access: vec![AccessEntry::new("repository", "team/app", &["pull", "push"])],
        cred: None,
    };
    ring.sign(claims, NOW - 60, 3600).expect("the fixed key signs")
}
