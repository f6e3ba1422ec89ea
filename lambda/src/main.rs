//! Berth on AWS Lambda: the core registry behind `lambda_http`, on S3.
//!
//! This crate only translates events ([`handler`]) and implements the core's storage traits on
//! S3 ([`s3`]); every protocol rule lives in berth-core.

mod calls;
mod config;
mod handler;
mod s3;
mod scheduled;

use std::sync::Arc;

use berth_core::Registry;
use lambda_http::request::LambdaRequest;
use lambda_http::{LambdaEvent, Service as _};

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
    let phase = std::time::Instant::now();
    let sdk = settings.sdk_config().await;
    let sdk_ms = phase.elapsed().as_secs_f64() * 1000.0;
    let blobs = S3BlobStore::new(&sdk, &settings);
    let meta = S3Meta::new(&sdk, &settings);
    // The upload key and the auth config are independent round trips to Secrets Manager (the
    // bulk of init when both are secrets): fetched at once. Each error is still the one its
    // setting alone would give, the upload key's first.
    let phase = std::time::Instant::now();
    let (core, auth) = tokio::join!(settings.core_config(&sdk), settings.auth(&sdk));
    let secrets_ms = phase.elapsed().as_secs_f64() * 1000.0;
    let mut registry = Registry::new(blobs, meta, core?);
    let auth = auth?;
    let auth_on = auth.is_some();
    if let Some(auth) = auth {
        registry = registry.with_auth(auth);
    }
    let registry: Arc<LambdaRegistry> = Arc::new(registry);
    tracing::info!(
        init_ms = started.elapsed().as_secs_f64() * 1000.0,
        sdk_ms,
        secrets_ms,
        bucket = %settings.bucket,
        meta_bucket = %settings.meta_bucket,
        auth = auth_on,
        "berth is ready for Lambda events"
    );
    // One function, two event sources: HTTP (function URL, API Gateway, ALB) and the
    // EventBridge schedule that runs garbage collection. lambda_http's adapter takes HTTP
    // events only, so the event is looked at first and handed to it when it is one.
    lambda_http::lambda_runtime::run(lambda_http::service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let registry = registry.clone();
        async move { dispatch(&registry, event).await }
    }))
    .await
}

async fn dispatch(registry: &LambdaRegistry, event: LambdaEvent<serde_json::Value>) -> Result<serde_json::Value, lambda_http::Error> {
    let LambdaEvent { payload, context } = event;
    if scheduled::is_scheduled(&payload) {
        let report = scheduled::collect(registry, context.deadline).await?;
        return Ok(serde_json::to_value(report)?);
    }
    let request: LambdaRequest = serde_json::from_value(payload)?;
    let mut adapter = lambda_http::Adapter::from(lambda_http::service_fn(|event| handler::handle(registry, event)));
    let response = adapter.call(LambdaEvent::new(request, context)).await?;
    Ok(serde_json::to_value(response)?)
}
