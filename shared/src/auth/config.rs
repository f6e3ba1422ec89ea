//! The auth configuration file (TOML), as documented in docs/auth.md. Parsed here so every
//! runtime reads the same file format; adapters only resolve `*_file` fields to contents first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Token lifetime when a config does not say; minutes, not hours.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 300;
/// The longest a registry token may live, whatever the config says.
pub const MAX_TOKEN_TTL_SECS: u64 = 3600;
/// How long `docker login`'s stored refresh token lasts.
pub const DEFAULT_REFRESH_TTL_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub token: TokenConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub robots: Vec<RobotConfig>,
    #[serde(default)]
    pub access: Vec<AccessRule>,
    #[serde(default)]
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub oidc: Vec<TrustPolicy>,
    #[serde(default)]
    pub login: LoginConfig,
    /// Immutable and refused tags, retention: see `crate::policy` and docs/policies.md.
    #[serde(default, skip_serializing_if = "crate::policy::PolicyConfig::is_empty")]
    pub policies: crate::policy::PolicyConfig,
    /// `[webhooks]` (docs/webhooks.md): checked by `webhooks::Webhooks::new`.
    #[serde(default, skip_serializing_if = "crate::webhooks::WebhookConfig::is_empty")]
    pub webhooks: crate::webhooks::WebhookConfig,
}

impl AuthConfig {
    /// A config file as written: TOML. Not on the Worker (wasm32), which reads JSON only
    /// ([`AuthConfig::parse`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("auth config: {e}"))
    }

    /// A config as a serverless runtime is given it (the Worker's `AUTH_CONFIG` and
    /// `POLICY_CONFIG`, the Lambda function's settings): JSON when it starts with `{`, else
    /// TOML. The Worker reads JSON only: TOML's parser was 48.6 KB of its gzip bundle (issue 19), and
    /// `berth auth export --json` writes the JSON from the TOML file.
    pub fn parse(text: &str) -> Result<Self, String> {
        crate::config_text::parse(text, "auth config")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The `service` of challenges and token requests, and the `aud` of every token.
    #[serde(default = "default_name")]
    pub service: String,
    /// The `iss` of every token Berth signs.
    #[serde(default = "default_name")]
    pub issuer: String,
    /// The token endpoint's URL as clients reach it. Default: `<scheme>://<Host>/token` from the
    /// request, so one config works behind any runtime or proxy.
    #[serde(default)]
    pub realm: Option<String>,
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    #[serde(default = "default_refresh_ttl")]
    pub refresh_ttl_secs: u64,
    /// Signing keys: the first with a private key signs; every listed key verifies (rotation).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            service: default_name(),
            issuer: default_name(),
            realm: None,
            ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            refresh_ttl_secs: DEFAULT_REFRESH_TTL_SECS,
            keys: Vec::new(),
        }
    }
}

fn default_name() -> String {
    "berth".to_owned()
}
fn default_ttl() -> u64 {
    DEFAULT_TOKEN_TTL_SECS
}
fn default_refresh_ttl() -> u64 {
    DEFAULT_REFRESH_TTL_SECS
}

/// Limits on failed password logins (users and robots), per instance: see auth/limits.rs.
/// 0 turns a limit off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Failed logins one client address may make per window, whatever accounts it tries.
    #[serde(default = "default_per_client")]
    pub max_failures_per_client: u32,
    /// Failed logins one account may see per window, from all clients together.
    #[serde(default = "default_per_account")]
    pub max_failures_per_account: u32,
    #[serde(default = "default_window")]
    pub window_secs: u64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            max_failures_per_client: default_per_client(),
            max_failures_per_account: default_per_account(),
            window_secs: default_window(),
        }
    }
}

fn default_per_client() -> u32 {
    30
}
fn default_per_account() -> u32 {
    10
}
fn default_window() -> u64 {
    300
}

/// A P-256 key (ES256). Keys are base64url, unpadded: the private scalar (32 bytes) or the
/// SEC1 public point. `private_key_file` is read by the adapter (berth serve) into `private_key`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// PHC string of an Argon2id hash (`berth user add` writes it).
    pub password_hash: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RobotConfig {
    pub name: String,
    /// `sha256:<hex>` of the generated secret. The secret has 256 random bits, so a fast hash is
    /// enough (no dictionary to attack) and verification stays cheap on every runtime.
    pub secret_hash: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Grants `actions` on repositories matching any of `repositories` (globs) to `principals`:
/// `user:NAME`, `robot:NAME`, `oidc:POLICY`, `group:NAME`, `*` (anyone logged in) or
/// `anonymous` (anyone at all). `public = true` is short for anonymous pull.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    pub repositories: Vec<String>,
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub public: bool,
}

/// Who may list the catalog (`registry:catalog:*`). Nobody unless listed: the catalog names
/// every repository, private ones included.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    #[serde(default)]
    pub principals: Vec<String>,
}

/// Trust in an OIDC issuer: identity tokens from `issuer` with audience `audience` whose claims
/// match every pattern in `claims` act as principal `oidc:<name>`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    /// Where the issuer's keys are; default: `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Claim name -> glob pattern (or a list of patterns, any of which may match).
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimPattern>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Lifetime of the registry token issued for an identity token (default 300 s).
    #[serde(default)]
    pub token_ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ClaimPattern {
    One(String),
    Any(Vec<String>),
}

impl ClaimPattern {
    pub fn patterns(&self) -> &[String] {
        match self {
            ClaimPattern::One(p) => std::slice::from_ref(p),
            ClaimPattern::Any(ps) => ps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AuthConfig;

    /// The TOML blocks of a Markdown page.
    fn toml_blocks(doc: &str) -> Vec<&str> {
        doc.split("```toml\n").skip(1).filter_map(|rest| rest.split("```").next()).collect()
    }

    /// The Worker reads the JSON that `berth auth export --json` makes of a TOML file (the file's
    /// table, as JSON), native builds the TOML: every documented example, and some wrong ones,
    /// must come out the same both ways (equal configs, or an error from both).
    #[test]
    fn the_json_route_reads_what_the_toml_route_reads() {
        let docs = [
            include_str!("../../../docs/auth.md"),
            include_str!("../../../docs/ci.md"),
            include_str!("../../../docs/mirror.md"),
            include_str!("../../../docs/policies.md"),
            include_str!("../../../docs/quotas.md"),
            include_str!("../../../docs/replication.md"),
            include_str!("../../../docs/webhooks.md"),
        ];
        let mut texts: Vec<&str> = docs.iter().flat_map(|d| toml_blocks(d)).collect();
        assert!(texts.len() >= 10, "the docs' TOML examples were not found");
        texts.extend([
            "[token]\nttl_secs = \"soon\"\n",
            "[token]\nservice = \"x\"\nunknown = 1\n",
            "[[policies.quotas]]\nname = \"q\"\nrepositories = [\"a/*\"]\nlimit = \"10 parsecs\"\n",
            "[[policies.quotas]]\nname = \"q\"\nrepositories = [\"a/*\"]\nlimit = 1000\n",
            "[[users]]\nname = \"a\"\n",
            "[token]\nservice = 1979-05-27T07:32:00Z\n",
            "[[access]]\nrepositories = [1979-05-27]\n",
            "[[oidc]]\nname = \"gh\"\nissuer = \"https://token.example\"\naudience = \"berth\"\n[oidc.claims]\nrepository = [\"a\", \"b\"]\n",
        ]);
        let mut parsed = 0;
        for text in texts {
            let json = crate::config_text::toml_to_json(text);
            let from_json = json.as_deref().map_err(Clone::clone).and_then(AuthConfig::parse);
            match (AuthConfig::parse(text), from_json) {
                (Ok(toml), Ok(json)) => {
                    assert_eq!(format!("{toml:?}"), format!("{json:?}"), "{text}");
                    parsed += 1;
                }
                (Err(_), Err(_)) => {}
                (toml, json) => panic!("{text}\ntoml: {toml:?}\njson: {json:?}"),
            }
        }
        assert!(parsed >= 8, "only {parsed} examples parsed");
    }

    /// What the JSON route says about a wrong field: what and where.
    #[test]
    fn the_json_route_names_what_is_wrong() {
        let error = AuthConfig::parse("{\"token\": {\"ttl_secs\": \"soon\"}}").unwrap_err();
        assert!(error.contains("auth config: invalid type") && error.contains("line 1"), "{error}");
        let error = AuthConfig::parse("{\"token\": {\"nope\": 1}}").unwrap_err();
        assert!(error.contains("unknown field `nope`"), "{error}");
        let error = AuthConfig::parse("{\"token\"").unwrap_err();
        assert!(error.starts_with("auth config: ") && error.contains("line 1"), "{error}");
    }
}
