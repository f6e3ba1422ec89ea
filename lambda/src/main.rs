//! Berth on AWS Lambda: the core registry behind `lambda_http`, on S3.
//!
//! This crate only translates events ([`handler`]) and implements the core's storage traits on
//! S3 ([`s3`]); every protocol rule lives in berth-core.

mod calls;
mod config;
mod handler;
mod s3;

use std::sync::Arc;

use berth_core::Registry;

use crate::handler::LambdaRegistry;
use crate::s3::{S3BlobStore, S3Meta};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let started = std::time::Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // CloudWatch adds its own timestamps and shows escape codes verbatim.
        .without_time()
        .with_ansi(false)
        .init();
    let settings = config::Settings::from_env()?;
    let sdk = settings.sdk_config().await;
    let blobs = S3BlobStore::new(&sdk, &settings);
    let meta = S3Meta::new(&sdk, &settings);
    let mut registry = Registry::new(blobs, meta, settings.core_config(&sdk).await?);
    let auth = settings.auth(&sdk).await?;
    let auth_on = auth.is_some();
    if let Some(auth) = auth {
        registry = registry.with_auth(auth);
    }
    let registry: Arc<LambdaRegistry> = Arc::new(registry);
    tracing::info!(
        init_ms = started.elapsed().as_secs_f64() * 1000.0,
        bucket = %settings.bucket,
        meta_bucket = %settings.meta_bucket,
        auth = auth_on,
        "berth is ready for Lambda events"
    );
    lambda_http::run(lambda_http::service_fn(move |event| {
        let registry = registry.clone();
        async move { handler::handle(&registry, event).await }
    }))
    .await
}
