//! CI without stored secrets: an OIDC identity token (GitHub Actions, GitLab CI, any issuer with
//! a JWKS) is exchanged for a short-lived registry token when a trust policy matches it.
//!
//! The core does no I/O: the adapter supplies an [`HttpFetch`] and the core caches the issuer's
//! keys, with `now` from the request, for [`JWKS_TTL_SECS`].

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::alg::Es256;
use jwt_compact::{AlgorithmExt as _, Claims, UntrustedToken};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::{TrustPolicy, DEFAULT_TOKEN_TTL_SECS, MAX_TOKEN_TTL_SECS};
use super::glob;
use super::policy::Principal;
use super::rs256::{Rs256, MIN_RSA_BITS};
use super::token::check_times;
use crate::storage::MaybeSendSync;

/// Identity tokens larger than this are refused unread (GitHub's are about 1-2 KiB).
pub const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;
/// How long fetched keys are trusted before they are fetched again.
pub const JWKS_TTL_SECS: u64 = 600;
/// An unknown `kid` triggers a refetch (the issuer rotated), at most this often.
pub const JWKS_MIN_REFETCH_SECS: u64 = 30;
/// Discovery documents and key sets larger than this are refused.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;

/// The one piece of I/O OIDC needs: an HTTP GET returning a 2xx response's body.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait HttpFetch: MaybeSendSync {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String>;
}

/// Why an identity token was not exchanged.
#[derive(Debug)]
pub(crate) enum OidcError {
    /// Not a valid token from a trusted issuer: 401.
    Invalid(String),
    /// Valid, but no trust policy admits it: 403.
    Denied(String),
    /// The issuer's keys could not be fetched: 503.
    Unavailable(String),
}

pub(crate) struct Trust {
    policies: Vec<TrustPolicy>,
    fetcher: Option<Box<dyn HttpFetch>>,
    cache: Mutex<HashMap<String, CachedKeys>>,
}

#[derive(Clone)]
struct CachedKeys {
    fetched_at: u64,
    keys: Vec<IssuerKey>,
}

#[derive(Clone)]
struct IssuerKey {
    kid: Option<String>,
    key: KeyMaterial,
}

#[derive(Clone)]
enum KeyMaterial {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// What a matched identity token becomes.
pub(crate) struct Exchanged {
    pub principal: Principal,
    pub ttl_secs: u64,
    /// The identity token's `sub` (e.g. `repo:org/app:ref:refs/heads/main`), for the audit log.
    pub identity: String,
}

impl Trust {
    pub fn new(policies: &[TrustPolicy]) -> Result<Self, String> {
        let mut names: Vec<&str> = Vec::new();
        for p in policies {
            if p.name.is_empty() || names.contains(&p.name.as_str()) {
                return Err(format!("oidc trust policies need distinct, non-empty names ({:?})", p.name));
            }
            names.push(&p.name);
            if p.audience.is_empty() {
                return Err(format!("oidc policy {:?}: audience must not be empty", p.name));
            }
            check_url(&p.issuer).map_err(|e| format!("oidc policy {:?}: issuer {e}", p.name))?;
            if let Some(uri) = &p.jwks_uri {
                check_url(uri).map_err(|e| format!("oidc policy {:?}: jwks_uri {e}", p.name))?;
            }
        }
        Ok(Trust { policies: policies.to_vec(), fetcher: None, cache: Mutex::new(HashMap::new()) })
    }

    pub fn set_fetcher(&mut self, fetcher: Box<dyn HttpFetch>) {
        self.fetcher = Some(fetcher);
    }

    pub fn has_policies(&self) -> bool {
        !self.policies.is_empty()
    }

    pub fn policy(&self, name: &str) -> Option<&TrustPolicy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// Verifies an identity token and finds the trust policy it satisfies.
    pub async fn exchange(&self, token: &str, now: u64) -> Result<Exchanged, OidcError> {
        use OidcError::*;
        if token.len() > MAX_ID_TOKEN_BYTES {
            return Err(Invalid(format!("identity token is larger than {MAX_ID_TOKEN_BYTES} bytes")));
        }
        let untrusted = UntrustedToken::new(token).map_err(|e| Invalid(format!("malformed identity token: {e}")))?;
        let unverified: Claims<Map<String, Value>> = untrusted
            .deserialize_claims_unchecked()
            .map_err(|e| Invalid(format!("identity token claims are malformed: {e}")))?;
        let issuer = unverified.custom.get("iss").and_then(Value::as_str).unwrap_or_default().to_owned();
        let candidates: Vec<&TrustPolicy> = self.policies.iter().filter(|p| p.issuer == issuer).collect();
        let Some(first) = candidates.first() else {
            return Err(Invalid(format!("no trust policy for issuer {issuer:?}")));
        };
        let alg = untrusted.algorithm().to_owned();
        if alg != "RS256" && alg != "ES256" {
            return Err(Invalid(format!("identity token algorithm {alg:?} is not accepted (RS256, ES256)")));
        }
        let kid = untrusted.header().key_id.clone();
        let key = self.key_for(first, kid.as_deref(), now).await?;
        let verified = match (&key.key, alg.as_str()) {
            (KeyMaterial::Rsa(k), "RS256") => Rs256.validator::<Map<String, Value>>(k).validate(&untrusted),
            (KeyMaterial::P256(k), "ES256") => Es256.validator::<Map<String, Value>>(k).validate(&untrusted),
            _ => return Err(Invalid(format!("identity token algorithm {alg} does not fit the issuer's key"))),
        }
        .map_err(|e| Invalid(format!("identity token signature is invalid: {e}")))?;
        let claims = verified.claims();
        check_times(claims.expiration, claims.not_before, now).map_err(|e| Invalid(format!("identity {e}")))?;
        let claims = &claims.custom;
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let for_us: Vec<&&TrustPolicy> = candidates.iter().filter(|p| audiences.contains(&p.audience.as_str())).collect();
        if for_us.is_empty() {
            return Err(Invalid(format!("identity token audience {audiences:?} is not one this registry trusts")));
        }
        let identity = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned();
        let Some(policy) = for_us.into_iter().find(|p| claims_match(p, claims)) else {
            return Err(Denied(format!(
                "no trust policy for issuer {issuer:?} admits this identity (sub {identity:?})"
            )));
        };
        Ok(Exchanged {
            principal: Principal { subject: format!("oidc:{}", policy.name), groups: policy.groups.clone() },
            ttl_secs: policy.token_ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS).clamp(1, MAX_TOKEN_TTL_SECS),
            identity,
        })
    }

    /// The issuer key for `kid`, from the cache or fetched; refetched on an unknown kid.
    async fn key_for(&self, policy: &TrustPolicy, kid: Option<&str>, now: u64) -> Result<IssuerKey, OidcError> {
        let source = policy.jwks_uri.clone().unwrap_or_else(|| policy.issuer.clone());
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&source).cloned();
        let fresh = |c: &CachedKeys| now < c.fetched_at.saturating_add(JWKS_TTL_SECS);
        if let Some(c) = cached.as_ref().filter(|c| fresh(c)) {
            if let Some(k) = pick(&c.keys, kid) {
                return Ok(k);
            }
            if now < c.fetched_at.saturating_add(JWKS_MIN_REFETCH_SECS) {
                return Err(OidcError::Invalid(format!("identity token key id {kid:?} is unknown to the issuer")));
            }
        }
        let keys = self.fetch_keys(policy).await?;
        let found = pick(&keys, kid);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source, CachedKeys { fetched_at: now, keys });
        found.ok_or_else(|| OidcError::Invalid(format!("identity token key id {kid:?} is unknown to the issuer")))
    }

    /// Keys of the policy's issuer: discovery document (unless `jwks_uri` is given), then JWKS.
    async fn fetch_keys(&self, policy: &TrustPolicy) -> Result<Vec<IssuerKey>, OidcError> {
        let fetcher = self
            .fetcher
            .as_ref()
            .ok_or_else(|| OidcError::Unavailable("this runtime cannot fetch OIDC keys".into()))?;
        let unavailable = |what: &str, e: String| OidcError::Unavailable(format!("cannot fetch {what} of {}: {e}", policy.issuer));
        let jwks_uri = match &policy.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!("{}/.well-known/openid-configuration", policy.issuer.trim_end_matches('/'));
                let doc = get_retrying(fetcher.as_ref(), &url).await.map_err(|e| unavailable("the discovery document", e))?;
                let doc: Discovery = parse_limited(&doc).map_err(|e| unavailable("the discovery document", e))?;
                if doc.issuer.trim_end_matches('/') != policy.issuer.trim_end_matches('/') {
                    return Err(unavailable("the discovery document", format!("it names issuer {:?}", doc.issuer)));
                }
                check_url(&doc.jwks_uri).map_err(|e| unavailable("the discovery document", format!("jwks_uri {e}")))?;
                doc.jwks_uri
            }
        };
        let body = get_retrying(fetcher.as_ref(), &jwks_uri).await.map_err(|e| unavailable("the JWKS", e))?;
        let set: JwkSet = parse_limited(&body).map_err(|e| unavailable("the JWKS", e))?;
        Ok(set.keys.iter().filter_map(IssuerKey::from_jwk).collect())
    }
}

fn pick(keys: &[IssuerKey], kid: Option<&str>) -> Option<IssuerKey> {
    match kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned(),
        // No kid: acceptable only when the issuer has exactly one key.
        None if keys.len() == 1 => keys.first().cloned(),
        None => None,
    }
}

/// Every configured claim pattern must match the token's claim (strings; numbers and booleans
/// compared as text). A missing claim never matches.
fn claims_match(policy: &TrustPolicy, claims: &Map<String, Value>) -> bool {
    policy.claims.iter().all(|(name, pattern)| {
        let value = match claims.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Bool(_) | Value::Number(_))) => v.to_string(),
            _ => return false,
        };
        pattern.patterns().iter().any(|p| glob::matches(p, &value))
    })
}

/// Issuers and key URLs must be https, except on loopback (tests, local issuers).
fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?} must be an https:// URL"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    if ["127.0.0.1", "localhost", "[::1]"].contains(&host) {
        Ok(())
    } else {
        Err(format!("{url:?} must be https:// (plain http only for loopback issuers)"))
    }
}

/// One GET, tried a second time if the first fails: a dropped connection or a blip at the issuer
/// should not fail a CI job's login (the keys are then cached for [`JWKS_TTL_SECS`]).
async fn get_retrying(fetcher: &dyn HttpFetch, url: &str) -> Result<Vec<u8>, String> {
    match fetcher.get(url).await {
        Ok(body) => Ok(body),
        Err(first) => fetcher.get(url).await.map_err(|second| format!("{second} (and before that: {first})")),
    }
}

fn parse_limited<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!("response is larger than {MAX_JWKS_BYTES} bytes"));
    }
    serde_json::from_slice(body).map_err(|e| format!("response is not the expected JSON: {e}"))
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl IssuerKey {
    /// Signature keys we can use; anything else in the set is skipped.
    fn from_jwk(jwk: &Jwk) -> Option<IssuerKey> {
        if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let b64 = |s: &Option<String>| s.as_deref().and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
        let key = match jwk.kty.as_str() {
            "RSA" => {
                let n = rsa::BigUint::from_bytes_be(&b64(&jwk.n)?);
                let e = rsa::BigUint::from_bytes_be(&b64(&jwk.e)?);
                let key = rsa::RsaPublicKey::new(n, e).ok()?;
                if rsa::traits::PublicKeyParts::size(&key) * 8 < MIN_RSA_BITS {
                    return None;
                }
                KeyMaterial::Rsa(key)
            }
            "EC" if jwk.crv.as_deref() == Some("P-256") => {
                let (x, y) = (b64(&jwk.x)?, b64(&jwk.y)?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                KeyMaterial::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).ok()?)
            }
            _ => return None,
        };
        Some(IssuerKey { kid: jwk.kid.clone(), key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_claims() {
        assert!(check_url("https://token.example").is_ok());
        assert!(check_url("http://127.0.0.1:5300").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://issuer.example").is_err());
        assert!(check_url("http://127.0.0.1.evil.example/").is_err());
        assert!(check_url("ftp://x").is_err());
        let policy: TrustPolicy = toml::from_str(
            r#"
            name = "gh"
            issuer = "https://token.example"
            audience = "berth"
            [claims]
            repository = "org/*"
            ref = ["refs/heads/main", "refs/tags/v*"]
            "#,
        )
        .unwrap();
        let claims = |repo: &str, r: &str| -> Map<String, Value> {
            serde_json::from_value(serde_json::json!({"repository": repo, "ref": r})).unwrap()
        };
        assert!(claims_match(&policy, &claims("org/app", "refs/heads/main")));
        assert!(claims_match(&policy, &claims("org/app", "refs/tags/v1.2")));
        assert!(!claims_match(&policy, &claims("org/app", "refs/heads/dev")));
        assert!(!claims_match(&policy, &claims("other/app", "refs/heads/main")));
        assert!(!claims_match(&policy, &serde_json::from_value(serde_json::json!({"repository": "org/app"})).unwrap()));
    }
}
