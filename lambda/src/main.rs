//! Berth on AWS Lambda: the core registry behind `lambda_http`, on S3.
//!
//! This crate only translates events ([`handler`]) and implements the core's storage traits on
//! S3 ([`s3`]); every protocol rule lives in berth-core.

mod calls;
mod config;
mod emf;
mod handler;
mod s3;
mod scheduled;
mod wake;

use std::sync::Arc;

use berth_core::{BlobStore, MetaStore, Registry};
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
    let (auth, policies, hooks) = auth?;
    let auth_on = auth.is_some();
    if let Some(auth) = auth {
        registry = registry.with_auth(auth);
    }
    let policies_on = !policies.is_empty();
    let mirrors = policies.config().mirrors.len();
    let replication_rules = policies.config().replication.len() + policies.config().sync.len();
    if mirrors > 0 || replication_rules > 0 {
        // One client per warm container: the upstreams' tokens and in-flight fetches are shared
        // (the pull-through cache's upstreams, replication's destinations).
        let http = berth_core::native::ReqwestUpstream::with_read_timeout(settings.upstream_timeout)?;
        registry = registry.with_upstream(berth_core::mirror::UpstreamClient::new(Arc::new(http)));
    }
    registry = registry.with_policies(policies);
    let webhook_endpoints = hooks.config().endpoints.len();
    registry = registry.with_webhooks(hooks);
    let registry: Arc<LambdaRegistry> = Arc::new(registry);
    let emf = Arc::new(emf::Emf::from_env());
    let wake = Arc::new(wake::Wake::new(&sdk, settings.webhook_queue_url.as_deref(), settings.sqs_endpoint.as_deref()));
    tracing::info!(
        init_ms = started.elapsed().as_secs_f64() * 1000.0,
        sdk_ms,
        secrets_ms,
        bucket = %settings.bucket,
        meta_bucket = %settings.meta_bucket,
        auth = auth_on,
        policies = policies_on,
        webhook_endpoints,
        webhook_queue = wake.is_some(),
        mirrors,
        replication_rules,
        "berth is ready for Lambda events"
    );
    // One function, three event sources: HTTP (function URL, API Gateway, ALB), the
    // EventBridge schedule that runs garbage collection, and the SQS queue that wakes webhook
    // delivery and replication. lambda_http's adapter takes HTTP events only, so the event is looked at first
    // and handed to it when it is one.
    lambda_http::lambda_runtime::run(lambda_http::service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let (registry, emf, wake) = (registry.clone(), emf.clone(), wake.clone());
        async move { dispatch(&registry, emf.as_ref().as_ref(), wake.as_ref().as_ref(), event).await }
    }))
    .await
}

async fn dispatch<B: BlobStore, M: MetaStore>(
    registry: &Registry<B, M>,
    emf: Option<&emf::Emf>,
    wake: Option<&wake::Wake>,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, lambda_http::Error> {
    let LambdaEvent { payload, context } = event;
    if wake::is_sqs(&payload) {
        // A wake-up from the queue: deliver what is due. Every message is answered as done
        // (the outbox, not the queue, holds what is left).
        scheduled::deliver(registry, context.deadline).await;
        // Replication entries wake the same queue: copies take what is left of the invocation.
        scheduled::replicate(registry, emf, context.deadline, false, 0.75).await;
        return Ok(wake::batch_done());
    }
    if scheduled::is_scheduled(&payload) {
        // Webhook deliveries first: they are due now, GC can wait for the next invocation.
        scheduled::deliver(registry, context.deadline).await;
        // Then replication, up to half of what is left: GC can wait for the next invocation.
        scheduled::replicate(registry, emf, context.deadline, true, 0.5).await;
        let started = std::time::Instant::now();
        let report = scheduled::collect(registry, context.deadline).await;
        if let Some(emf) = emf {
            emf.gc_run(report.as_ref().ok(), started.elapsed().as_secs_f64());
        }
        return Ok(serde_json::to_value(report?)?);
    }
    let request: LambdaRequest = serde_json::from_value(payload)?;
    let mut adapter = lambda_http::Adapter::from(lambda_http::service_fn(|event| handler::handle(registry, emf, wake, event)));
    let response = adapter.call(LambdaEvent::new(request, context)).await?;
    Ok(serde_json::to_value(response)?)
}

#[cfg(test)]
mod tests {
    use berth_core::{Config, MemoryBlobStore, MemoryMetaStore, MetaStore, Registry};
    use lambda_http::{Context, LambdaEvent};
    use serde_json::json;

    fn registry() -> Registry<MemoryBlobStore, MemoryMetaStore> {
        Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(vec![1; 32]))
    }

    fn context() -> Context {
        let mut ctx = Context::default();
        // Unix milliseconds, as the runtime API gives it: ten minutes from now.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        ctx.deadline = now.as_millis() as u64 + 600_000;
        ctx
    }

    /// An HTTP event still goes through lambda_http's adapter and comes back as its response.
    #[tokio::test]
    async fn http_events_are_answered_as_before() {
        let event = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/v2/", "rawQueryString": "",
            "headers": { "host": "example.lambda-url.eu-west-1.on.aws" },
            "requestContext": {
                "accountId": "1", "apiId": "x", "domainName": "example.lambda-url.eu-west-1.on.aws",
                "domainPrefix": "example", "requestId": "r", "routeKey": "$default", "stage": "$default",
                "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0,
                "http": { "method": "GET", "path": "/v2/", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t" }
            },
            "isBase64Encoded": false
        });
        let out = super::dispatch(&registry(), None, None, LambdaEvent::new(event, context())).await.unwrap();
        assert_eq!(out["statusCode"], 200, "{out}");
        assert!(out["headers"]["docker-distribution-api-version"].is_string(), "{out}");
    }

    /// The web interface comes from the core, with its headers, before the registry is asked.
    #[tokio::test]
    async fn the_web_interface_is_served() {
        let event = |path: &str| {
            json!({
                "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
                "headers": { "host": "example.lambda-url.eu-west-1.on.aws", "accept": "text/html" },
                "requestContext": {
                    "accountId": "1", "apiId": "x", "domainName": "example.lambda-url.eu-west-1.on.aws",
                    "domainPrefix": "example", "requestId": "r", "routeKey": "$default", "stage": "$default",
                    "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0,
                    "http": { "method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t" }
                },
                "isBase64Encoded": false
            })
        };
        let registry = registry();
        let page = super::dispatch(&registry, None, None, LambdaEvent::new(event("/ui/"), context())).await.unwrap();
        assert_eq!(page["statusCode"], 200, "{page}");
        assert!(page["headers"]["content-type"].as_str().unwrap().starts_with("text/html"), "{page}");
        assert!(page["headers"]["content-security-policy"].as_str().unwrap().contains("script-src 'self'"), "{page}");
        let script = super::dispatch(&registry, None, None, LambdaEvent::new(event("/ui/assets/app.js"), context())).await.unwrap();
        assert_eq!(script["statusCode"], 200, "{script}");
        assert!(script["headers"]["content-type"].as_str().unwrap().starts_with("text/javascript"), "{script}");
        // A browser at the root is sent to the interface.
        let root = super::dispatch(&registry, None, None, LambdaEvent::new(event("/"), context())).await.unwrap();
        assert_eq!(root["statusCode"], 302, "{root}");
        assert_eq!(root["headers"]["location"], "/ui/", "{root}");
    }

    /// EventBridge's scheduled event runs garbage collection and answers its report.
    #[tokio::test]
    async fn a_scheduled_event_collects_garbage() {
        let event = json!({
            "version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "1", "time": "2026-01-01T00:00:00Z", "region": "eu-west-1",
            "resources": ["arn:aws:events:eu-west-1:1:rule/berth-gc"], "detail": {}
        });
        let registry = registry();
        let out = super::dispatch(&registry, None, None, LambdaEvent::new(event, context())).await.unwrap();
        assert_eq!(out["finished"], true, "{out}");
        assert_eq!(out["dry_run"], false, "{out}");
        // The run left its report in the metadata store.
        assert!(registry.gc_report().await.unwrap().is_some());
    }

    /// With webhooks, the scheduled event delivers what is due (here a GC run's event) first.
    #[tokio::test]
    async fn a_scheduled_event_delivers_due_webhooks() {
        let scheduled = json!({ "detail-type": "Scheduled Event", "source": "aws.events", "detail": {} });
        delivers_due_webhooks(scheduled).await;
    }

    /// The queue's wake-up (an SQS batch) delivers what is due and answers that no message
    /// failed, so the event source mapping deletes them all.
    #[tokio::test]
    async fn an_sqs_batch_delivers_due_webhooks() {
        let batch = json!({ "Records": [{
            "messageId": "m", "receiptHandle": "r", "body": "{\"webhooks\":1}", "attributes": {},
            "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:eu-west-1:1:berth-webhooks", "awsRegion": "eu-west-1"
        }]});
        let out = delivers_due_webhooks(batch).await;
        assert_eq!(out, json!({ "batchItemFailures": [] }));
    }

    /// Dispatches `event` with one due event in the outbox; checks a local receiver got it and
    /// the outbox is empty; returns the invocation's answer.
    async fn delivers_due_webhooks(invocation: serde_json::Value) -> serde_json::Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let n = conn.read(&mut buf).await.unwrap();
            conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let config = format!(
            "[[webhooks.endpoints]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{port}/\"\nsecret = \"0123456789abcdef\"\n\
             allow_private = true\nevents = [\"gc_finished\"]\n"
        );
        let hooks = berth_core::webhooks::Webhooks::from_settings(None, Some(&config), "").unwrap();
        let registry = registry().with_webhooks(hooks);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let event = berth_core::webhooks::gc_finished(now, &Default::default());
        registry.webhooks().unwrap().enqueue(registry.meta_store(), event, [3; 16], 0).await.unwrap();
        let out = super::dispatch(&registry, None, None, LambdaEvent::new(invocation, context())).await.unwrap();
        let request = tokio::time::timeout(std::time::Duration::from_secs(10), received).await.unwrap().unwrap();
        assert!(request.starts_with("POST / HTTP/1.1"), "{request}");
        assert!(request.contains("berth-event: gc_finished"), "{request}");
        assert!(berth_core::webhooks::failed(registry.meta_store(), None, 10).await.unwrap().is_empty());
        assert!(registry.meta_store().list("webhooks/due/", None, 10).await.unwrap().is_empty(), "delivered, so removed");
        out
    }
}
