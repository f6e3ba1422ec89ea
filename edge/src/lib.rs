//! Berth as a Cloudflare Worker: the core registry over R2 (the source of truth for blobs,
//! manifests, tags and upload sessions) and Workers KV (a cache of manifests by digest).
//! This crate only translates requests/responses and implements the storage traits.

// The Worker itself exists only on wasm32; natively (`cargo test --lib`) only the runtime-free
// parts build, so their unit tests run on the host.
// A bundle with one of the features `serve` and `maintenance` (a half of a two-Worker
// deployment) leaves the other half's helpers unused; the default build, both, is the one the
// compiler's dead-code warnings are read from.
#![cfg_attr(not(all(feature = "serve", feature = "maintenance")), allow(dead_code, unused_imports))]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod analytics;
#[cfg(target_arch = "wasm32")]
mod auth;
#[cfg(target_arch = "wasm32")]
mod blob_cache;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod calls;
#[cfg(target_arch = "wasm32")]
mod handoff;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod logs;
#[cfg(target_arch = "wasm32")]
mod manifest_cache;
#[cfg(all(target_arch = "wasm32", feature = "contract"))]
mod contract;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod presign;
#[cfg(target_arch = "wasm32")]
mod native;
#[cfg(target_arch = "wasm32")]
mod r2_blobs;
#[cfg(target_arch = "wasm32")]
mod r2_meta;
#[cfg(target_arch = "wasm32")]
mod r2_upload;
#[cfg(target_arch = "wasm32")]
mod replication;
#[cfg(target_arch = "wasm32")]
mod settings;
#[cfg(target_arch = "wasm32")]
mod translate;
#[cfg(target_arch = "wasm32")]
mod webhooks;
#[cfg(target_arch = "wasm32")]
mod upstream;

#[cfg(target_arch = "wasm32")]
mod worker_main {
    use std::rc::Rc;

    use berth_core::{Registry, RequestContext};
    use worker::{console_error, event, web_sys, Context, Env, Response};

    use crate::blob_cache::BlobCache;
    use crate::handoff::BodyHandoff;
    use crate::r2_blobs::R2Blobs;
    use crate::r2_meta::R2Meta;
    use crate::settings::{Settings, BUCKET_BINDING};
    use crate::translate;

    #[event(start)]
    fn start() {
        crate::logs::init();
    }

    #[cfg(feature = "serve")]
    #[event(fetch)]
    async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<Response> {
        let ctx = Rc::new(ctx);
        #[cfg(feature = "contract")]
        if let Some(response) = crate::contract::route(&req, &env).await {
            return response;
        }
        // The request body waits here until the core reads it or the store takes it whole.
        let request_body = BodyHandoff::default();
        let request = match translate::request(&req, &request_body) {
            Ok(r) => r,
            Err(message) => {
                return translate::response(berth_core::untranslatable_request(message), &BodyHandoff::default())
            }
        };
        // The web interface (docs/ui.md): the core decides which paths are its own; it needs no
        // storage, so it answers before the bucket and settings are looked at.
        let accept = request.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
        if let Some(page) = berth_core::ui::respond(request.method(), request.uri().path(), accept) {
            crate::calls::start(false); // no backend calls to count, nor a previous request's
            return translate::response(page, &BodyHandoff::default());
        }
        let settings = match Settings::from_env(&env) {
            Ok(s) => s,
            Err(message) => return misconfigured(&message),
        };
        let bucket = match env.bucket(BUCKET_BINDING) {
            Ok(b) => b,
            Err(_) => {
                return misconfigured(&format!(
                    "the Worker has no R2 bucket bound as {BUCKET_BINDING}"
                ))
            }
        };
        crate::calls::start(settings.count_backend_calls);
        let ctx_now = match request_context() {
            Ok(ctx) => ctx,
            Err(message) => return misconfigured(&message),
        };
        let handoff = BodyHandoff::default();
        let env_for_metrics = env.clone();
        let mut blobs = R2Blobs::configured(bucket.clone(), env, handoff.clone(), &settings).with_request_body(request_body.clone());
        if settings.blob_cache {
            if let Some(origin) = translate::origin(&request) {
                blobs = blobs.with_blob_cache(BlobCache::new(origin, ctx.clone()));
            }
        }
        let mut registry = Registry::new(blobs, R2Meta::new(bucket), settings.config.clone());
        if let Some(text) = &settings.auth_config {
            match crate::auth::compiled(text) {
                Ok(auth) => registry = registry.with_auth(auth),
                // Never serve without the policy the deployment asked for.
                Err(message) => return misconfigured(&message),
            }
        }
        match crate::auth::policies(settings.auth_config.as_deref(), settings.policy_config.as_deref()) {
            Ok(policies) => {
                if !policies.config().mirrors.is_empty() {
                    registry = registry.with_upstream(crate::upstream::client(settings.upstream_timeout_secs));
                }
                registry = registry.with_policies(policies)
            }
            Err(message) => return misconfigured(&message),
        }
        match crate::webhooks::webhooks(settings.auth_config.as_deref(), settings.policy_config.as_deref(), &settings.public_url) {
            Ok(hooks) => registry = registry.with_webhooks(hooks),
            Err(message) => return misconfigured(&message),
        }
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let bytes_in = content_length(request.headers());
        let started = js_sys::Date::now();
        let response = registry.handle(request, ctx_now).await;
        record_metrics(&env_for_metrics, &settings, &method, &path, &response, started, bytes_in);
        crate::webhooks::wake(&env_for_metrics, &ctx, &response);
        translate::response(response, &handoff)
    }

    /// The request's Analytics Engine data point (docs/observability.md), from what the core
    /// answered: time to the response head (the body streams after), and body sizes as declared.
    fn record_metrics(
        env: &Env,
        settings: &Settings,
        method: &http::Method,
        path: &str,
        response: &berth_core::Response,
        started: f64,
        bytes_in: u64,
    ) {
        let headers = response.headers();
        let bytes_out = if *method == http::Method::HEAD { 0 } else { content_length(headers) };
        let exchange = berth_core::metrics::Exchange {
            method,
            path,
            status: response.status(),
            response_headers: headers,
            seconds: (js_sys::Date::now() - started) / 1000.0,
            bytes_in,
            bytes_out,
        };
        let request_id = headers.get(berth_core::observe::REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        crate::analytics::record(env, settings.analytics_echo, &exchange, request_id);
    }

    fn content_length(headers: &http::HeaderMap) -> u64 {
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// The Cron Trigger (`[triggers] crons` in wrangler.toml, `cloudflare_workers_cron_trigger`
    /// in terraform/modules/cloudflare): due webhook deliveries first (docs/webhooks.md), then
    /// due replication copies and the scheduled full runs (docs/replication.md), then garbage
    /// collection (docs/gc.md), each for a bounded time, continued by the next trigger from the
    /// outbox or its checkpoint in R2. `wrangler dev --test-scheduled` fires it at `/__scheduled`.
    #[cfg(feature = "maintenance")]
    #[event(scheduled)]
    async fn scheduled(_event: worker::ScheduledEvent, env: Env, _ctx: worker::ScheduleContext) {
        if let Err(message) = deliver(&env, "webhook deliveries").await {
            console_error!("berth: webhook deliveries: {message}");
        }
        if let Err(message) = crate::replication::run(&env, "replication", true).await {
            console_error!("berth: replication: {message}");
        }
        if let Err(message) = collect(&env).await {
            console_error!("berth: garbage collection: {message}");
        }
    }

    /// The consumer of the wake-up queue (`[[queues.consumers]]` in wrangler.toml,
    /// src/webhooks.rs), sent after a request that wrote webhook or replication outbox entries:
    /// the same delivery and replication steps as the Cron Trigger, at once (full runs stay the
    /// trigger's). The batch is acked whatever happened: the outbox is the record, and what this
    /// run could not do the next message or Cron Trigger will (an `Err` here would also abort
    /// the isolate).
    #[cfg(feature = "maintenance")]
    #[event(queue)]
    async fn queue(batch: worker::MessageBatch<serde_json::Value>, env: Env, _ctx: Context) -> worker::Result<()> {
        if let Err(message) = deliver(&env, "webhook deliveries (queue)").await {
            console_error!("berth: webhook deliveries (queue): {message}");
        }
        if let Err(message) = crate::replication::run(&env, "replication (queue)", false).await {
            console_error!("berth: replication (queue): {message}");
        }
        batch.ack_all();
        Ok(())
    }

    /// Delivers due webhook events, batch after batch, for at most [`DELIVERY_BUDGET_SECS`];
    /// `label` starts its log line (which caller ran it).
    async fn deliver(env: &Env, label: &str) -> Result<(), String> {
        let settings = Settings::from_env(env)?;
        let hooks = crate::webhooks::webhooks(settings.auth_config.as_deref(), settings.policy_config.as_deref(), &settings.public_url)?;
        if hooks.is_empty() {
            return Ok(());
        }
        let bucket = env
            .bucket(BUCKET_BINDING)
            .map_err(|_| format!("the Worker has no R2 bucket bound as {BUCKET_BINDING}"))?;
        let meta = R2Meta::new(bucket);
        let clock = || (js_sys::Date::now() / 1000.0) as u64;
        let stop = clock() + DELIVERY_BUDGET_SECS;
        let batch = berth_core::webhooks::outbox::DEFAULT_BATCH;
        loop {
            let concurrency = berth_core::webhooks::outbox::DEFAULT_CONCURRENCY;
            let r = hooks.deliver(&meta, &crate::webhooks::FetchPost, clock(), batch, concurrency).await.map_err(|e| e.message)?;
            worker::console_log!("berth: {label}: {}", serde_json::to_string(&r).unwrap_or_default());
            if r.delivered + r.retrying + r.failed < batch || clock() >= stop {
                return Ok(());
            }
        }
    }

    /// How long one trigger (or queue batch) delivers webhooks before GC gets its turn.
    const DELIVERY_BUDGET_SECS: u64 = 30;

    async fn collect(env: &Env) -> Result<(), String> {
        let var = |name: &str| env.var(name).ok().map(|v| v.to_string());
        // R2 has no multi-key transactions: dead link records stay (docs/gc.md).
        let opts = berth_core::GcOptions::from_vars(var)?;
        let budget = match var("BERTH_GC_BUDGET") {
            Some(v) => berth_core::gc::parse_duration(&v).map_err(|e| format!("BERTH_GC_BUDGET: {e}"))?,
            None => DEFAULT_GC_BUDGET_SECS,
        };
        // The deployment's policies, as for requests: retention rules decide what the run
        // deletes, quotas are recounted at its end (docs/gc.md).
        let registry = background_registry(env)?;
        let clock = || (js_sys::Date::now() / 1000.0) as u64;
        let deadline = clock().saturating_add(budget);
        let started = js_sys::Date::now();
        let report = registry
            .gc(&opts, &berth_core::Budget { clock: &clock, deadline: Some(deadline), max_steps: None })
            .await
            .map_err(|e| e.message);
        let point = crate::analytics::gc_point(report.as_ref().ok(), (js_sys::Date::now() - started) / 1000.0);
        let echo = crate::settings::Settings::from_env(env).is_ok_and(|s| s.analytics_echo);
        crate::analytics::record_run(env, echo, &point);
        let report = report?;
        worker::console_log!(
            "berth: garbage collection: {}",
            serde_json::to_string(&report).unwrap_or_default()
        );
        Ok(())
    }

    /// The registry of a run outside requests (the Cron Trigger, the queue consumer): R2, the
    /// deployment's policies, no auth (nothing is asked of it by a client).
    pub(crate) fn background_registry(env: &Env) -> Result<Registry<R2Blobs, R2Meta>, String> {
        let settings = Settings::from_env(env)?;
        let bucket = env
            .bucket(BUCKET_BINDING)
            .map_err(|_| format!("the Worker has no R2 bucket bound as {BUCKET_BINDING}"))?;
        let blobs = R2Blobs::configured(bucket.clone(), env.clone(), BodyHandoff::default(), &settings);
        let policies = crate::auth::policies(settings.auth_config.as_deref(), settings.policy_config.as_deref())?;
        Ok(Registry::new(blobs, R2Meta::new(bucket), settings.config.clone()).with_policies(policies))
    }

    /// How long one trigger collects (wall time, mostly R2 round trips): well inside a Cron
    /// Trigger's limits; `BERTH_GC_BUDGET` changes it.
    const DEFAULT_GC_BUDGET_SECS: u64 = 60;

    /// The time and randomness the core needs, from the runtime (`Date.now`,
    /// `crypto.getRandomValues`): the core never reads a clock or an RNG itself.
    fn request_context() -> Result<RequestContext, String> {
        let now = (js_sys::Date::now() / 1000.0) as u64;
        Ok(RequestContext { now, random: random16()? })
    }

    /// Bytes fetched from `crypto.getRandomValues` per call: 64 requests' worth.
    const RANDOM_POOL: usize = 16 * 64;

    thread_local! {
        /// Unused bytes from the runtime's CSPRNG, and how many of them are used. Each byte is
        /// handed out once; a refill is five calls through the JS boundary, which every request
        /// paid before (only uploads use the bytes, as nonces of signed upload ids).
        static RANDOM: std::cell::RefCell<(Vec<u8>, usize)> =
            const { std::cell::RefCell::new((Vec::new(), 0)) };
    }

    fn random16() -> Result<[u8; 16], String> {
        RANDOM.with(|pool| {
            let mut pool = pool.borrow_mut();
            let (bytes, used) = &mut *pool;
            if *used + 16 > bytes.len() {
                *bytes = fresh_random(RANDOM_POOL)?;
                *used = 0;
            }
            let mut out = [0u8; 16];
            out.copy_from_slice(&bytes[*used..*used + 16]);
            bytes[*used..*used + 16].fill(0);
            *used += 16;
            Ok(out)
        })
    }

    fn fresh_random(len: usize) -> Result<Vec<u8>, String> {
        let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into())
            .map_err(|_| "no crypto global")?;
        let get_random: js_sys::Function = js_sys::Reflect::get(&crypto, &"getRandomValues".into())
            .map_err(|_| "no crypto.getRandomValues")?
            .into();
        let buffer = js_sys::Uint8Array::new_with_length(len as u32);
        get_random
            .call1(&crypto, &buffer)
            .map_err(|_| "crypto.getRandomValues failed")?;
        Ok(buffer.to_vec())
    }

    /// A deployment mistake, not a client fault: 500 with an OCI error body that says what to fix.
    fn misconfigured(message: &str) -> worker::Result<Response> {
        console_error!("berth: {message}");
        translate::response(berth_core::misconfigured(message), &BodyHandoff::default())
    }
}
