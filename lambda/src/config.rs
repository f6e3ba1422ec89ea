//! Configuration from the function's environment (see lambda/README.md for the table).

use std::time::Duration;

use berth_core::auth::{Auth, AuthConfig};
use berth_core::policy::Policies;
use berth_core::webhooks::Webhooks;
use berth_core::Config;

/// Lambda refuses synchronous invocations whose event is larger than this.
pub const MAX_EVENT_BYTES: u64 = 6 * 1024 * 1024;
/// Room in the event for the request line, headers and the JSON envelope.
const EVENT_OVERHEAD_BYTES: u64 = 64 * 1024;
/// The largest body that fits in an event: binary bodies arrive base64-encoded (4 bytes per 3).
pub const MAX_BODY_BYTES: u64 = (MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES) / 4 * 3;

pub struct Settings {
    /// Bucket for blob content and upload staging.
    pub bucket: String,
    /// Bucket for metadata (tags, links, upload sessions); may be the same bucket. Kept apart so
    /// that a multi-region deployment can point every region at one metadata bucket.
    pub meta_bucket: String,
    /// Region of the metadata bucket when it differs from the function's.
    meta_region: Option<String>,
    /// Multi-region, outside the home region: the home region's bucket, where blob content
    /// not yet replicated to `bucket` is read from.
    pub home_bucket: Option<String>,
    /// Region of `home_bucket`.
    home_region: Option<String>,
    /// Custom S3 endpoint (a local S3 in tests); path-style addressing is used with it.
    endpoint: Option<String>,
    /// Custom endpoint for the metadata bucket (defaults to `endpoint`).
    meta_endpoint: Option<String>,
    /// Lifetime of presigned blob GET URLs.
    pub redirect_expiry: Duration,
    /// Lifetime of presigned part-upload URLs handed out for direct uploads.
    pub part_url_expiry: Duration,
    /// How long an upstream registry of a pull-through cache may stay silent (docs/mirror.md).
    pub upstream_timeout: Duration,
    /// The SQS queue that wakes the webhook delivery (docs/webhooks.md); without it, deliveries
    /// wait for the schedule.
    pub webhook_queue_url: Option<String>,
    /// Custom SQS endpoint (moto in tests).
    pub sqs_endpoint: Option<String>,
    upload_secret: UploadSecret,
}

/// The key that signs upload ids: given directly, or the name of a Secrets Manager secret that
/// holds it (what a deployment uses, so the key is in no function setting), read at init.
enum UploadSecret {
    Key(Vec<u8>),
    InSecret(String),
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn secs(name: &str, default: u64) -> Result<Duration, String> {
    match var(name) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0 && *s <= 7 * 24 * 3600)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{name} must be a number of seconds from 1 to 604800, got {v:?}")),
    }
}

fn checked_upload_key(key: String, setting: &str) -> Result<Vec<u8>, String> {
    if key.len() < 32 {
        return Err(format!("{setting}: the upload key must be at least 32 bytes long, got {}", key.len()));
    }
    Ok(key.into_bytes())
}

impl Settings {
    pub fn from_env() -> Result<Self, String> {
        let bucket = var("BERTH_BUCKET").ok_or("BERTH_BUCKET must name the S3 bucket for blobs")?;
        let upload_secret = match (var("BERTH_UPLOAD_SECRET"), var("BERTH_UPLOAD_SECRET_ID")) {
            (Some(_), Some(_)) => return Err("set BERTH_UPLOAD_SECRET or BERTH_UPLOAD_SECRET_ID, not both".into()),
            (Some(key), None) => UploadSecret::Key(checked_upload_key(key, "BERTH_UPLOAD_SECRET")?),
            (None, Some(id)) => UploadSecret::InSecret(id),
            (None, None) => {
                return Err("BERTH_UPLOAD_SECRET_ID must name the Secrets Manager secret holding the key (32+ \
                            bytes) that signs upload ids, or BERTH_UPLOAD_SECRET hold the key itself"
                    .into())
            }
        };
        Ok(Settings {
            meta_bucket: var("BERTH_META_BUCKET").unwrap_or_else(|| bucket.clone()),
            home_bucket: var("BERTH_HOME_BUCKET").filter(|home| *home != bucket),
            bucket,
            meta_region: var("BERTH_META_REGION"),
            home_region: var("BERTH_HOME_REGION"),
            meta_endpoint: var("BERTH_META_S3_ENDPOINT").or_else(|| var("BERTH_S3_ENDPOINT")),
            endpoint: var("BERTH_S3_ENDPOINT"),
            redirect_expiry: secs("BERTH_REDIRECT_EXPIRY_SECS", 300)?,
            part_url_expiry: secs("BERTH_PART_URL_EXPIRY_SECS", 3600)?,
            upstream_timeout: secs("BERTH_UPSTREAM_TIMEOUT_SECS", 30)?,
            webhook_queue_url: var("BERTH_WEBHOOK_QUEUE_URL"),
            sqs_endpoint: var("BERTH_SQS_ENDPOINT"),
            upload_secret,
        })
    }

    /// The core's settings; reads the upload key from Secrets Manager when it lives there.
    pub async fn core_config(&self, sdk: &aws_config::SdkConfig) -> Result<Config, String> {
        let key = match &self.upload_secret {
            UploadSecret::Key(key) => key.clone(),
            UploadSecret::InSecret(id) => {
                let text = self.read_secret(sdk, "BERTH_UPLOAD_SECRET_ID", id).await?;
                checked_upload_key(text, "BERTH_UPLOAD_SECRET_ID")?
            }
        };
        let mut config = Config::new(key);
        config.max_request_body = Some(MAX_BODY_BYTES);
        Ok(config)
    }

    /// Token auth: the whole auth config as TOML with keys inline (`berth auth export`), from
    /// the Secrets Manager secret named by `BERTH_AUTH_CONFIG_SECRET` (name or ARN; what a
    /// deployment should use: it holds the signing keys), else from `BERTH_AUTH_CONFIG_TOML` itself.
    /// Neither: no auth. A bad config stops the function at init, so a deployment never serves
    /// with half a policy. Also returns the tag policies: the auth config's `[policies]`, or
    /// `BERTH_POLICY_CONFIG` (TOML with only `[policies]`, for a function without auth), and
    /// the webhooks (`[webhooks]` of either; docs/webhooks.md; `BERTH_PUBLIC_URL` for payloads).
    pub async fn auth(&self, sdk: &aws_config::SdkConfig) -> Result<(Option<Auth>, Policies, Webhooks), String> {
        let text = match (var("BERTH_AUTH_CONFIG_SECRET"), var("BERTH_AUTH_CONFIG_TOML")) {
            (Some(_), Some(_)) => return Err("set BERTH_AUTH_CONFIG_SECRET or BERTH_AUTH_CONFIG_TOML, not both".into()),
            (Some(secret), None) => Some(self.read_secret(sdk, "BERTH_AUTH_CONFIG_SECRET", &secret).await?),
            (None, Some(text)) => Some(text),
            (None, None) => None,
        };
        let config = text.as_deref().map(AuthConfig::parse).transpose()?;
        let policies = Policies::from_settings(config.as_ref(), var("BERTH_POLICY_CONFIG").as_deref())
            .map_err(|e| format!("BERTH_POLICY_CONFIG or the auth config: {e}"))?;
        let public_url = var("BERTH_PUBLIC_URL").unwrap_or_default();
        let hooks = Webhooks::from_settings(config.as_ref(), var("BERTH_POLICY_CONFIG").as_deref(), &public_url)
            .map_err(|e| format!("BERTH_POLICY_CONFIG or the auth config: {e}"))?;
        let Some(text) = text else { return Ok((None, policies, hooks)) };
        let auth = Auth::parse(&text)?;
        if !auth.trusts_oidc_issuers() {
            return Ok((Some(auth), policies, hooks));
        }
        let fetcher = berth_core::native::ReqwestFetch::new()?;
        Ok((Some(auth.with_fetcher(Box::new(fetcher))), policies, hooks))
    }

    /// A secret's string value; `setting` names the variable that pointed at it, for errors.
    async fn read_secret(&self, sdk: &aws_config::SdkConfig, setting: &str, id: &str) -> Result<String, String> {
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(sdk);
        if let Some(endpoint) = var("BERTH_SECRETS_ENDPOINT") {
            builder = builder.endpoint_url(endpoint);
        }
        let client = aws_sdk_secretsmanager::Client::from_conf(builder.build());
        let out = client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| format!("{setting} {id}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
        out.secret_string.ok_or_else(|| format!("{setting} {id}: the secret has no string value"))
    }

    /// Credentials and region the standard way (the Lambda environment, or env vars locally).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
    }

    pub fn s3_client(&self, sdk: &aws_config::SdkConfig, region: Option<&str>) -> aws_sdk_s3::Client {
        self.client_for("blobs", sdk, self.endpoint.as_deref(), region)
    }

    fn client_for(
        &self,
        label: &'static str,
        sdk: &aws_config::SdkConfig,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
        // Checksums only where S3 requires them: a presigned part URL must not demand one
        // from the client.
        let mut builder = aws_sdk_s3::config::Builder::from(sdk)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        if let Some(region) = region {
            builder = builder.region(aws_sdk_s3::config::Region::new(region.to_owned()));
        }
        if crate::calls::enabled() {
            builder = builder.interceptor(crate::calls::Counter(label));
        }
        aws_sdk_s3::Client::from_conf(builder.build())
    }

    /// For the home region's bucket (same endpoint as `bucket`: local tests use one S3).
    pub fn home_client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
        self.client_for("home", sdk, self.endpoint.as_deref(), self.home_region.as_deref())
    }

    pub fn meta_client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
        self.client_for("meta", sdk, self.meta_endpoint.as_deref(), self.meta_region.as_deref())
    }
}

/// Garbage collection's settings for the scheduled invocations (docs/gc.md): durations like
/// `24h`; unset, the core's defaults. Read here, like every other setting, so that
/// terraform/tests sees the names the function reads.
pub fn gc_options() -> Result<berth_core::GcOptions, String> {
    let settings = [
        ("BERTH_GC_GRACE", var("BERTH_GC_GRACE")),
        ("BERTH_GC_SETTLE", var("BERTH_GC_SETTLE")),
        ("BERTH_GC_UPLOAD_IDLE", var("BERTH_GC_UPLOAD_IDLE")),
        ("BERTH_GC_DRY_RUN", var("BERTH_GC_DRY_RUN")),
    ];
    berth_core::GcOptions::from_vars(|name| settings.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.clone()))
}

/// How often replication copies everything each rule covers, from the scheduled invocations
/// (docs/replication.md): a duration like `6h` (`BERTH_REPLICATION_SCHEDULE`, as `berth serve
/// --replication-schedule`); unset: only on push.
pub fn replication_schedule() -> Result<u64, String> {
    match var("BERTH_REPLICATION_SCHEDULE") {
        Some(v) => berth_core::gc::parse_duration(&v).map_err(|e| format!("BERTH_REPLICATION_SCHEDULE: {e}")),
        None => Ok(0),
    }
}
