//! The `[webhooks]` table of the registry's config (docs/webhooks.md), checked at load: a
//! registry must not start with an endpoint it would refuse to call.

use serde::{Deserialize, Serialize};

use super::target::check_url;

/// What a webhook can be told about. Serialized as written in the config (`push`, `tag_moved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// A manifest pushed (by tag or by digest).
    Push,
    /// A manifest pushed with a tag (the tag in the path or `?tag=`): one event per push.
    Tag,
    /// A manifest read (GET; HEAD is a probe, not a pull).
    Pull,
    /// A manifest or tag deleted.
    Delete,
    /// A push that pointed an existing tag at another manifest.
    TagMoved,
    /// A push refused because a quota would be exceeded.
    QuotaExceeded,
    /// A garbage collection run finished.
    GcFinished,
    /// An on-push replication (src/replication/outbox.rs) reached its destination.
    ReplicationDone,
    /// An on-push replication gave up: its last attempt failed (it is kept as failed).
    ReplicationFailed,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Push => "push",
            HookKind::Tag => "tag",
            HookKind::Pull => "pull",
            HookKind::Delete => "delete",
            HookKind::TagMoved => "tag_moved",
            HookKind::QuotaExceeded => "quota_exceeded",
            HookKind::GcFinished => "gc_finished",
            HookKind::ReplicationDone => "replication_done",
            HookKind::ReplicationFailed => "replication_failed",
        }
    }
}

/// How a delivery's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Distribution's notification envelope, `{"events":[...]}`, which existing receivers parse.
    #[default]
    Distribution,
    /// CloudEvents 1.0, JSON structured mode.
    Cloudevents,
}

pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
pub const DEFAULT_RETRY_BASE_SECS: u64 = 10;
pub const DEFAULT_RETRY_MAX_SECS: u64 = 3600;

/// The `[webhooks]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Attempts per delivery (the first included) before it is kept as failed.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each further failure.
    #[serde(default = "default_base")]
    pub retry_base_secs: u64,
    /// The longest wait between two attempts.
    #[serde(default = "default_max")]
    pub retry_max_secs: u64,
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_base_secs: DEFAULT_RETRY_BASE_SECS,
            retry_max_secs: DEFAULT_RETRY_MAX_SECS,
            endpoints: Vec::new(),
        }
    }
}

fn default_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_base() -> u64 {
    DEFAULT_RETRY_BASE_SECS
}
fn default_max() -> u64 {
    DEFAULT_RETRY_MAX_SECS
}
fn all_repositories() -> Vec<String> {
    vec!["**".to_owned()]
}

/// One `[[webhooks.endpoints]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Names the endpoint in outbox records and admin output: `a-z0-9_-`, unique.
    pub name: String,
    /// http(s) URL. Loopback, private and link-local addresses are refused unless `allow_private`.
    pub url: String,
    /// Signs every delivery (HMAC-SHA256; see `sign`). At least 16 bytes.
    pub secret: String,
    /// Repository globs (`team/*`, `**`); default: every repository. Events without a
    /// repository (GC finished) go to every endpoint that asks for them.
    #[serde(default = "all_repositories")]
    pub repositories: Vec<String>,
    /// What to send; at least one.
    pub events: Vec<HookKind>,
    #[serde(default)]
    pub format: Format,
    /// Lets the URL point at a loopback, private or link-local address (a receiver beside the
    /// registry). Off by default: webhooks must not become a way to reach internal services.
    #[serde(default)]
    pub allow_private: bool,
}

impl WebhookConfig {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Every problem a registry must not start with, the first one found.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(format!("webhooks.max_attempts must be 1 to 100, not {}", self.max_attempts));
        }
        if self.retry_base_secs == 0 || self.retry_max_secs < self.retry_base_secs {
            return Err("webhooks.retry_base_secs must be at least 1 and at most retry_max_secs".into());
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = format!("webhooks.endpoints[{i}] ({:?})", e.name);
            let name_ok = !e.name.is_empty()
                && e.name.len() <= 64
                && e.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(format!("{at}: name must be 1 to 64 of a-z 0-9 - _"));
            }
            if self.endpoints[..i].iter().any(|o| o.name == e.name) {
                return Err(format!("{at}: another endpoint has this name"));
            }
            check_url(&e.url, e.allow_private).map_err(|m| format!("{at}: url {:?}: {m}", e.url))?;
            if e.secret.len() < 16 {
                return Err(format!("{at}: secret must be at least 16 characters"));
            }
            if e.events.is_empty() {
                return Err(format!("{at}: events is empty; name at least one"));
            }
            if e.repositories.is_empty() {
                return Err(format!("{at}: repositories is empty (leave it out for every repository)"));
            }
            for p in &e.repositories {
                crate::policy::config::check_repository_pattern(p).map_err(|m| format!("{at}: {m}"))?;
            }
        }
        Ok(())
    }

    pub fn endpoint(&self, name: &str) -> Option<&EndpointConfig> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The wait before attempt `attempts + 1`, after `attempts` failures: base, 2·base, 4·base...
    pub fn backoff(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(40);
        self.retry_base_secs.saturating_mul(1u64 << doublings).min(self.retry_max_secs)
    }
}

impl EndpointConfig {
    /// Whether this endpoint wants `kind` events of `repository` (None: not about one).
    pub fn wants(&self, kind: HookKind, repository: Option<&str>) -> bool {
        self.events.contains(&kind)
            && repository.is_none_or(|r| self.repositories.iter().any(|p| crate::auth::glob::matches(p, r)))
    }
}
