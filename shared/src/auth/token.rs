//! Berth's own tokens: ES256 JWTs with `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti` and
//! Docker's `access` claim. Several keys verify (rotation, by `kid`); the first private one signs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use jwt_compact::alg::Es256;
use jwt_compact::{AlgorithmExt as _, Claims, Header, UntrustedToken};
use p256::ecdsa::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::config::KeyConfig;
use super::scope::AccessEntry;

/// Larger tokens are refused before any parsing (a registry token is well under 4 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew tolerated between the instance that issued a token and the one checking it.
pub const LEEWAY_SECS: i64 = 30;

pub const USE_ACCESS: &str = "access";
pub const USE_REFRESH: &str = "refresh";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BerthClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub jti: String,
    /// `access` for registry requests, `refresh` for the refresh_token grant: one can never
    /// stand in for the other.
    pub token_use: String,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// Refresh tokens only: the fingerprint of the account's credential when issued
    /// (`Directory::credential_fingerprint`); a reset or re-created account no longer matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred: Option<String>,
}

/// The token keys: the first private key signs, every key verifies (by `kid`). Public so the
/// fuzz targets (fuzz/) can feed arbitrary strings to [`KeyRing::verify`].
pub struct KeyRing {
    signing: Option<(String, SigningKey)>,
    verifying: Vec<(String, VerifyingKey)>,
    /// Tokens whose signature was verified, by sha256 of the token: a pull sends the same token
    /// dozens of times, and an ES256 verification costs more than serving a manifest. Times
    /// and claims are still checked on every use.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], Verified>>,
}

#[derive(Clone)]
struct Verified {
    claims: BerthClaims,
    exp: Option<DateTime<Utc>>,
    nbf: Option<DateTime<Utc>>,
}

/// Verified tokens remembered at most; when full, expired ones go, and if none had expired,
/// all (a cheap bound; the cost is one verification per token again).
const VERIFIED_CACHE_ENTRIES: usize = 4096;

/// Why a presented token is refused; the message goes into the 401.
pub type TokenError = String;

impl KeyRing {
    pub fn new(keys: &[KeyConfig]) -> Result<Self, String> {
        let mut signing = None;
        let mut verifying: Vec<(String, VerifyingKey)> = Vec::new();
        for key in keys {
            if key.kid.is_empty() || verifying.iter().any(|(kid, _)| *kid == key.kid) {
                return Err(format!("signing keys need distinct, non-empty kids (got {:?})", key.kid));
            }
            let public = match (&key.private_key, &key.public_key) {
                (Some(private), _) => {
                    let sk = decode_private_key(private).map_err(|e| format!("key {:?}: {e}", key.kid))?;
                    let vk = *sk.verifying_key();
                    if signing.is_none() {
                        signing = Some((key.kid.clone(), sk));
                    }
                    vk
                }
                (None, Some(public)) => decode_public_key(public).map_err(|e| format!("key {:?}: {e}", key.kid))?,
                (None, None) => {
                    return Err(format!(
                        "key {:?}: needs private_key (or private_key_file) or public_key",
                        key.kid
                    ))
                }
            };
            verifying.push((key.kid.clone(), public));
        }
        if signing.is_none() {
            return Err("auth config: [[token.keys]] needs at least one private key (berth key generate)".into());
        }
        Ok(KeyRing { signing, verifying, verified: Default::default() })
    }

    pub fn sign(&self, claims: BerthClaims, now: u64, ttl: u64) -> Result<String, String> {
        let (kid, key) = self.signing.as_ref().ok_or("no signing key")?;
        let mut full = Claims::new(claims);
        full.issued_at = Some(timestamp(now));
        full.not_before = Some(timestamp(now));
        full.expiration = Some(timestamp(now.saturating_add(ttl)));
        let header = Header::empty().with_key_id(kid.clone()).with_token_type("JWT");
        Es256.token(&header, &full, key).map_err(|e| format!("cannot sign a token: {e}"))
    }

    /// Verifies a token Berth issued: size, algorithm, key, signature, times, issuer, audience
    /// and use. Every failure is a reason string, never a panic.
    pub fn verify(
        &self,
        token: &str,
        now: u64,
        issuer: &str,
        audience: &str,
        token_use: &str,
    ) -> Result<BerthClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("token is larger than {MAX_TOKEN_BYTES} bytes"));
        }
        use sha2::Digest as _;
        // Signature checked once per token; times and claims on every use.
        let fingerprint: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let cached = self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(&fingerprint).cloned();
        let verified = match cached {
            Some(hit) => hit,
            None => {
                let fresh = self.verify_signature(token)?;
                self.remember(fingerprint, fresh.clone(), now);
                fresh
            }
        };
        check_times(verified.exp, verified.nbf, now)?;
        let claims = verified.claims;
        if claims.iss != issuer {
            return Err(format!("token issuer {:?} is not {issuer:?}", claims.iss));
        }
        if claims.aud != audience {
            return Err(format!("token audience {:?} is not this registry ({audience:?})", claims.aud));
        }
        if claims.token_use != token_use {
            return Err(format!("a {} token cannot be used as a {token_use} token", claims.token_use));
        }
        Ok(claims)
    }

    /// Header, algorithm, key and signature; the claims parsed but not yet checked.
    fn verify_signature(&self, token: &str) -> Result<Verified, TokenError> {
        let untrusted = UntrustedToken::new(token).map_err(|e| format!("malformed token: {e}"))?;
        if untrusted.algorithm() != "ES256" {
            return Err(format!("token algorithm {:?} is not accepted (ES256 only)", untrusted.algorithm()));
        }
        let kid = untrusted.header().key_id.as_deref().ok_or("token has no key id (kid)")?;
        let (_, key) = self
            .verifying
            .iter()
            .find(|(k, _)| k == kid)
            .ok_or_else(|| format!("token key id {kid:?} is unknown"))?;
        let token = Es256
            .validator::<BerthClaims>(key)
            .validate(&untrusted)
            .map_err(|e| format!("token signature or claims are invalid: {e}"))?;
        let (_, claims) = token.into_parts();
        Ok(Verified { exp: claims.expiration, nbf: claims.not_before, claims: claims.custom })
    }

    fn remember(&self, fingerprint: [u8; 32], verified: Verified, now: u64) {
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VERIFIED_CACHE_ENTRIES {
            let now = timestamp(now);
            cache.retain(|_, v| v.exp.is_some_and(|exp| exp >= now));
            if cache.len() >= VERIFIED_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(fingerprint, verified);
    }
}

/// `exp` is required; `nbf` is checked when present; both with [`LEEWAY_SECS`].
pub(crate) fn check_times(
    exp: Option<DateTime<Utc>>,
    nbf: Option<DateTime<Utc>>,
    now: u64,
) -> Result<(), TokenError> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let exp = exp.ok_or("token has no expiry (exp)")?.timestamp();
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err("token has expired".into());
    }
    if let Some(nbf) = nbf {
        if now < nbf.timestamp().saturating_sub(LEEWAY_SECS) {
            return Err("token is not valid yet (nbf)".into());
        }
    }
    Ok(())
}

pub(crate) fn timestamp(secs: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub fn decode_private_key(b64: &str) -> Result<SigningKey, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64.trim())
        .map_err(|_| "private_key is not base64url".to_string())?;
    SigningKey::from_slice(&bytes).map_err(|_| "private_key is not a P-256 scalar".to_string())
}

pub fn decode_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64.trim())
        .map_err(|_| "public_key is not base64url".to_string())?;
    VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| "public_key is not a P-256 point".to_string())
}

/// A key pair from 32 random bytes (the caller's RNG: the core has none), base64url-encoded
/// as the config file holds them: (private, public).
pub fn key_pair_from_seed(seed: &[u8; 32]) -> Result<(String, String), String> {
    let sk = SigningKey::from_slice(seed).map_err(|_| "seed is not a valid P-256 scalar; retry".to_string())?;
    let public = sk.verifying_key().to_encoded_point(false);
    Ok((URL_SAFE_NO_PAD.encode(sk.to_bytes()), URL_SAFE_NO_PAD.encode(public.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(kids: &[(&str, u8)]) -> KeyRing {
        let keys: Vec<KeyConfig> = kids
            .iter()
            .map(|(kid, seed)| KeyConfig {
                kid: kid.to_string(),
                private_key: Some(key_pair_from_seed(&[*seed; 32]).unwrap().0),
                private_key_file: None,
                public_key: None,
            })
            .collect();
        KeyRing::new(&keys).unwrap()
    }

    fn claims(aud: &str, token_use: &str) -> BerthClaims {
        BerthClaims {
            iss: "berth".into(),
            sub: "user:alice".into(),
            aud: aud.into(),
            jti: "j1".into(),
            token_use: token_use.into(),
            access: vec![AccessEntry::new("repository", "a", &["pull"])],
            cred: None,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let keys = ring(&[("k1", 7)]);
        let t = keys.sign(claims("berth", USE_ACCESS), 1000, 300).unwrap();
        let ok = keys.verify(&t, 1100, "berth", "berth", USE_ACCESS).unwrap();
        assert_eq!(ok.access[0].name, "a");
        // Verified once, then answered from the cache: times are still checked on every use.
        assert!(keys.verify(&t, 1100, "berth", "berth", USE_ACCESS).is_ok());
        assert!(keys.verify(&t, 1400, "berth", "berth", USE_ACCESS).unwrap_err().contains("expired"));
        assert!(keys.verify(&t, 900, "berth", "berth", USE_ACCESS).unwrap_err().contains("not valid yet"));
        assert!(keys.verify(&t, 1100, "other", "berth", USE_ACCESS).unwrap_err().contains("issuer"));
        assert!(keys.verify(&t, 1100, "berth", "elsewhere", USE_ACCESS).unwrap_err().contains("audience"));
        assert!(keys.verify(&t, 1100, "berth", "berth", USE_REFRESH).unwrap_err().contains("cannot be used"));
        // Another key with the same kid: signature check fails.
        let other = ring(&[("k1", 9)]);
        assert!(other.verify(&t, 1100, "berth", "berth", USE_ACCESS).unwrap_err().contains("invalid"));
        // Unknown kid.
        let rotated = ring(&[("k2", 7)]);
        assert!(rotated.verify(&t, 1100, "berth", "berth", USE_ACCESS).unwrap_err().contains("unknown"));
        // Rotation: a new signing key first, the old one still verifies.
        let both = ring(&[("k2", 8), ("k1", 7)]);
        assert!(both.verify(&t, 1100, "berth", "berth", USE_ACCESS).is_ok());
        let t2 = both.sign(claims("berth", USE_ACCESS), 1000, 300).unwrap();
        assert!(both.verify(&t2, 1100, "berth", "berth", USE_ACCESS).is_ok());
        assert!(keys.verify(&t2, 1100, "berth", "berth", USE_ACCESS).is_err());
        // Garbage and oversize input.
        assert!(keys.verify("a.b.c", 1100, "berth", "berth", USE_ACCESS).is_err());
        assert!(keys.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), 1100, "berth", "berth", USE_ACCESS)
            .unwrap_err()
            .contains("larger"));
    }

    #[test]
    fn refuses_none_and_hmac_confusion() {
        use jwt_compact::alg::{Hs256, Hs256Key};
        let keys = ring(&[("k1", 7)]);
        let (_, public) = key_pair_from_seed(&[7; 32]).unwrap();
        let mut full = Claims::new(claims("berth", USE_ACCESS));
        full.expiration = Some(timestamp(2000));
        // HS256 keyed with the public key: the classic algorithm-confusion forgery.
        let hs = Hs256
            .token(&Header::empty().with_key_id("k1"), &full, &Hs256Key::new(public.as_bytes()))
            .unwrap();
        assert!(keys.verify(&hs, 1100, "berth", "berth", USE_ACCESS).unwrap_err().contains("HS256"));
        // alg none: header {"alg":"none","kid":"k1"}, no signature.
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&full).unwrap());
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#);
        let none = format!("{head}.{body}.");
        assert!(keys.verify(&none, 1100, "berth", "berth", USE_ACCESS).is_err());
    }
}
