//! Auth, once for every runtime: Docker token authentication (401 challenge, token endpoint,
//! short-lived ES256 JWTs with the `access` claim), users and robots, per-repository access
//! rules with anonymous pull, and OIDC identity tokens exchanged for push tokens in CI.
//! See docs/auth.md for the config file and the flows.
//!
//! Like the rest of the core it has no clock, RNG or I/O: `now` and random bytes come from
//! [`crate::RequestContext`], OIDC keys through an adapter's [`HttpFetch`].

mod audit;
pub mod config;
mod cpu;
mod endpoint;
mod gate;
pub mod glob;
mod limits;
mod oidc;
mod policy;
mod principals;
mod rs256;
pub mod scope;
pub mod token;

pub use audit::ClientAddr;
pub(crate) use audit::{client_of, policy_delete, AuditLog};
pub use config::AuthConfig;
pub use cpu::{CpuJob, CpuPool};
pub use oidc::{HttpFetch, MAX_JWKS_BYTES};
pub use policy::Principal;
pub use principals::{hash_password, robot_secret_hash, validate_name, OIDC_USERNAME, ROBOT_SECRET_PREFIX};
pub use rs256::Rs256;
pub use token::key_pair_from_seed;

pub(crate) use gate::{mark_private, mount_source, Gate, Grant};

/// Where the token endpoint is served (the realm's path unless the config names another URL).
pub const TOKEN_PATH: &str = "/token";

/// The compiled auth configuration a [`crate::Registry`] checks requests against.
pub struct Auth {
    service: String,
    issuer: String,
    realm: Option<String>,
    ttl_secs: u64,
    refresh_ttl_secs: u64,
    keys: token::KeyRing,
    directory: principals::Directory,
    policy: policy::Policy,
    oidc: oidc::Trust,
    /// Failed-login limits, per client address and per account (in memory, per instance).
    limits: limits::LoginLimits,
    /// Where Argon2 runs: the adapter's pool (berth serve), else inline.
    cpu: Option<Box<dyn CpuPool>>,
    /// Scheme of the derived realm when the request does not say (`X-Forwarded-Proto`).
    default_scheme: &'static str,
}

impl Auth {
    /// Checks the whole config up front: a bad file stops start-up instead of failing requests.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let t = &config.token;
        if t.service.is_empty() || t.issuer.is_empty() {
            return Err("auth config: token.service and token.issuer must not be empty".into());
        }
        for (what, value) in [("service", &t.service), ("issuer", &t.issuer)] {
            if value.contains('"') || value.contains('\\') {
                return Err(format!("auth config: token.{what} must not contain quotes or backslashes"));
            }
        }
        if let Some(realm) = &t.realm {
            if !(realm.starts_with("https://") || realm.starts_with("http://")) || realm.contains('"') {
                return Err(format!("auth config: token.realm {realm:?} must be an http(s) URL"));
            }
        }
        // Checked here too, so that the admin commands never write a file serve would refuse.
        crate::policy::Policies::new(&config.policies).map_err(|e| format!("auth config: {e}"))?;
        Ok(Auth {
            service: t.service.clone(),
            issuer: t.issuer.clone(),
            realm: t.realm.clone(),
            ttl_secs: t.ttl_secs.clamp(1, config::MAX_TOKEN_TTL_SECS),
            refresh_ttl_secs: t.refresh_ttl_secs.max(1),
            keys: token::KeyRing::new(&t.keys)?,
            directory: principals::Directory::new(config)?,
            policy: policy::Policy::new(config)?,
            oidc: oidc::Trust::new(&config.oidc)?,
            limits: limits::LoginLimits::new(&config.login),
            cpu: None,
            default_scheme: "https",
        })
    }

    /// For runtimes without a filesystem (the Worker's secret, the Lambda function's setting):
    /// the whole config as text (JSON, or TOML where the runtime reads it:
    /// [`AuthConfig::parse`]), signing keys inline. `berth auth export [--json]` writes one from
    /// a config whose keys are in files.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config = AuthConfig::parse(text)?;
        if let Some(key) = config.token.keys.iter().find(|k| k.private_key.is_none() && k.private_key_file.is_some()) {
            return Err(format!(
                "auth config: key {:?} names private_key_file, which this runtime cannot read; \
                 inline the keys with `berth auth export --config FILE`",
                key.kid
            ));
        }
        Auth::new(&config)
    }

    /// Whether the config trusts OIDC issuers, i.e. needs [`Auth::with_fetcher`].
    pub fn trusts_oidc_issuers(&self) -> bool {
        self.oidc.has_policies()
    }

    /// The adapter's HTTP client, for fetching OIDC issuers' keys.
    pub fn with_fetcher(mut self, fetcher: Box<dyn HttpFetch>) -> Self {
        self.oidc.set_fetcher(fetcher);
        self
    }

    /// The adapter's pool for CPU-heavy work (password hashing), so it does not run on the
    /// async workers. Runtimes that serve one request per isolate or instance need none.
    pub fn with_cpu_pool(mut self, pool: Box<dyn CpuPool>) -> Self {
        self.cpu = Some(pool);
        self
    }

    /// `http` for a runtime that serves plain HTTP (berth serve), so the derived realm works.
    pub fn with_default_scheme(mut self, scheme: &'static str) -> Self {
        self.default_scheme = scheme;
        self
    }

    /// The principal a token's `sub` names, with groups as the config has them now.
    fn principal(&self, subject: &str) -> Principal {
        if let Some(name) = subject.strip_prefix("oidc:") {
            let groups = self.oidc.policy(name).map(|p| p.groups.clone()).unwrap_or_default();
            return Principal { subject: subject.to_owned(), groups };
        }
        if subject == policy::ANONYMOUS {
            return Principal::anonymous();
        }
        self.directory.lookup(subject)
    }
}
