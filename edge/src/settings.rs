//! The Worker's configuration, from its bindings, vars and secrets (see edge/README.md).

use berth_core::Config;
use std::rc::Rc;

use worker::Env;

use crate::presign::Presigner;
use crate::r2_upload::R2_MIN_PART;

/// R2 bucket binding: blobs, manifests, tags, upload sessions (the source of truth).
pub const BUCKET_BINDING: &str = "BLOBS";
/// Workers KV binding (optional): the manifest-by-digest cache.
pub const KV_BINDING: &str = "MANIFEST_CACHE";
/// Workers' default plan accepts request bodies up to 100 MB.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 100_000_000;
/// 8 MiB parts: 10,000 parts make an 78 GiB blob, and a part is small next to 128 MB of memory.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
pub const DEFAULT_PRESIGN_SECS: u64 = 600;

pub struct Settings {
    pub config: Config,
    pub part_size: u64,
    pub presigner: Option<Presigner>,
    /// Serve uploaded blobs through the Workers Cache API (BLOB_CACHE, default on).
    pub blob_cache: bool,
    /// Token auth's config (secret AUTH_CONFIG, from `berth auth export`); none: auth off.
    pub auth_config: Option<String>,
    /// The registry's public URL (var PUBLIC_URL), for webhook payloads (docs/webhooks.md).
    pub public_url: String,
    /// Tag policies for a Worker without auth (var POLICY_CONFIG: TOML with only `[policies]`,
    /// docs/policies.md); with auth they live in AUTH_CONFIG.
    pub policy_config: Option<String>,
    /// Answer with the storage operations each request made (COUNT_BACKEND_CALLS; for
    /// bench/request-cost.sh, see `calls`).
    pub count_backend_calls: bool,
    /// How long an upstream registry of a pull-through cache may stay silent, in seconds
    /// (UPSTREAM_TIMEOUT_SECS, default 30; docs/mirror.md).
    pub upstream_timeout_secs: u64,
    /// Print each Analytics Engine data point too (ANALYTICS_ECHO; for tests: `wrangler dev`'s
    /// local dataset discards points, see `analytics`).
    pub analytics_echo: bool,
}

/// A var or secret as a string, if set and not empty.
fn text(env: &Env, name: &str) -> Option<String> {
    let value = env
        .secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()?;
    Some(value).filter(|v| !v.is_empty())
}

fn number(env: &Env, name: &str, default: u64) -> Result<u64, String> {
    match text(env, name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be a whole number, not {v:?}")),
    }
}

thread_local! {
    /// The settings as first read in this isolate. Vars and secrets are fixed for an isolate's
    /// life (a deploy or a new secret value starts new isolates), so they are read and parsed
    /// once, not on every request: a dozen lookups through the JS boundary each time otherwise.
    static PARSED: std::cell::RefCell<Option<Rc<Settings>>> = const { std::cell::RefCell::new(None) };
}

impl Settings {
    /// This isolate's settings (read on its first request). Bindings (R2, KV) are not settings:
    /// they are handles, taken from the request's `env` where they are used.
    pub fn from_env(env: &Env) -> Result<Rc<Settings>, String> {
        if let Some(parsed) = PARSED.with(|p| p.borrow().clone()) {
            return Ok(parsed);
        }
        let settings = Rc::new(Self::read(env)?);
        PARSED.with(|p| *p.borrow_mut() = Some(settings.clone()));
        Ok(settings)
    }

    fn read(env: &Env) -> Result<Settings, String> {
        let secret = text(env, "UPLOAD_SECRET").ok_or(
            "the Worker has no UPLOAD_SECRET: set it with `wrangler secret put UPLOAD_SECRET` (any long random string)",
        )?;
        let part_size = number(env, "PART_SIZE", DEFAULT_PART_SIZE)?;
        if part_size < R2_MIN_PART {
            return Err(format!(
                "PART_SIZE must be at least {R2_MIN_PART} bytes (R2's smallest part)"
            ));
        }
        let mut config = Config::new(secret.into_bytes());
        // Chunks of a part's size fill parts exactly: no staging between requests.
        config.chunk_min_length = Some(part_size);
        config.max_request_body = Some(number(env, "MAX_REQUEST_BODY", DEFAULT_MAX_REQUEST_BODY)?);
        let presigner = match (
            text(env, "S3_ACCESS_KEY_ID"),
            text(env, "S3_SECRET_ACCESS_KEY"),
            text(env, "S3_ENDPOINT"),
            text(env, "S3_BUCKET"),
        ) {
            (Some(access_key_id), Some(secret_access_key), Some(endpoint), Some(bucket)) => {
                Some(Presigner {
                    endpoint: endpoint.trim_end_matches('/').to_owned(),
                    bucket,
                    region: text(env, "S3_REGION").unwrap_or_else(|| "auto".into()),
                    access_key_id,
                    secret_access_key,
                    expires_secs: number(env, "PRESIGN_SECS", DEFAULT_PRESIGN_SECS)?,
                })
            }
            _ => None,
        };
        let blob_cache = !matches!(
            text(env, "BLOB_CACHE").as_deref(),
            Some("0" | "false" | "off")
        );
        Ok(Settings {
            config,
            part_size,
            presigner,
            blob_cache,
            auth_config: text(env, "AUTH_CONFIG"),
            policy_config: text(env, "POLICY_CONFIG"),
            public_url: text(env, "PUBLIC_URL").unwrap_or_default(),
            upstream_timeout_secs: number(env, "UPSTREAM_TIMEOUT_SECS", 30)?.max(1),
            count_backend_calls: text(env, "COUNT_BACKEND_CALLS").is_some(),
            analytics_echo: text(env, "ANALYTICS_ECHO").is_some(),
        })
    }
}
