//! Webhooks on the Worker (docs/webhooks.md): `[webhooks]` compiled once per isolate (requests
//! write the outbox through the core), a wake-up message on the queue bound as
//! [`QUEUE_BINDING`] after a request that wrote outbox entries, and the core's delivery step
//! (from the queue consumer and the Cron Trigger) through the Workers `fetch`. Every rule of
//! delivery is berth-core's.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use berth_core::auth::AuthConfig;
use berth_core::webhooks::{HttpPost, Webhooks};

/// The Cloudflare Queue (wrangler.toml `[[queues.producers]]`) that wakes the consumer
/// (`#[event(queue)]`) to deliver. Optional: without it, deliveries wait for the Cron Trigger.
pub const QUEUE_BINDING: &str = "WEBHOOK_QUEUE";

/// After a request whose answer says it wrote outbox entries ([`berth_core::webhooks::Enqueued`]:
/// webhook events or replication copies, docs/replication.md; the consumer runs both),
/// sends one small message to the queue, after the response (`waitUntil`). The message is only
/// a wake-up, the outbox is the record: a message that is lost (or a queue that is not bound)
/// delays the delivery to the next Cron Trigger, it never loses the event.
pub fn wake(env: &worker::Env, ctx: &worker::Context, response: &berth_core::Response) {
    let Some(berth_core::webhooks::Enqueued(n)) = response.extensions().get().copied() else { return };
    let Ok(queue) = env.queue(QUEUE_BINDING) else { return };
    ctx.wait_until(async move {
        if let Err(e) = queue.send(serde_json::json!({ "webhooks": n })).await {
            worker::console_error!("berth: webhook wake-up not sent to {QUEUE_BINDING} (the Cron Trigger will deliver): {e}");
        }
    });
}

/// A receiver gets this long to answer before the attempt counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

type Key = (Option<String>, Option<String>, String);

thread_local! {
    /// The config texts and public URL, and the webhooks they compiled to (as auth.rs does).
    static HOOKS: RefCell<Option<(Key, Arc<Webhooks>)>> = const { RefCell::new(None) };
}

/// The webhooks: AUTH_CONFIG's `[webhooks]`, or POLICY_CONFIG's (never both); `public_url`
/// (var PUBLIC_URL) names the registry in payloads.
pub fn webhooks(auth_config: Option<&str>, policy_config: Option<&str>, public_url: &str) -> Result<Arc<Webhooks>, String> {
    let key = (auth_config.map(str::to_owned), policy_config.map(str::to_owned), public_url.to_owned());
    HOOKS.with(|slot| {
        if let Some((seen, hooks)) = slot.borrow().as_ref() {
            if *seen == key {
                return Ok(hooks.clone());
            }
        }
        let auth = auth_config.map(AuthConfig::parse).transpose().map_err(|e| format!("AUTH_CONFIG: {e}"))?;
        let hooks = Arc::new(
            Webhooks::from_settings(auth.as_ref(), policy_config, public_url)
                .map_err(|e| format!("POLICY_CONFIG or AUTH_CONFIG: {e}"))?,
        );
        *slot.borrow_mut() = Some((key, hooks.clone()));
        Ok(hooks)
    })
}

/// Deliveries through the Workers `fetch`: redirects are not followed (`manual`: a 3xx is a
/// failed attempt), an attempt is cut off after [`DELIVERY_TIMEOUT`], and the response body is
/// never read. A Worker's `fetch` goes out to the public internet, not to the account's
/// private networks, so names need no resolver check here; URLs were checked at load.
pub struct FetchPost;

#[async_trait::async_trait(?Send)]
impl HttpPost for FetchPost {
    async fn post(&self, url: &str, _allow_private: bool, headers: Vec<(String, String)>, body: Vec<u8>) -> Result<u16, String> {
        let h = worker::Headers::new();
        for (name, value) in &headers {
            h.set(name, value).map_err(|e| format!("header {name}: {e}"))?;
        }
        let mut init = worker::RequestInit::new();
        init.with_method(worker::Method::Post)
            .with_headers(h)
            .with_redirect(worker::RequestRedirect::Manual)
            .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
        let request = worker::Request::new_with_init(url, &init).map_err(|e| format!("{url}: {e}"))?;
        let send = Box::pin(async move { worker::Fetch::Request(request).send().await });
        let timeout = Box::pin(worker::Delay::from(DELIVERY_TIMEOUT));
        match futures_util::future::select(send, timeout).await {
            futures_util::future::Either::Left((Ok(response), _)) => Ok(response.status_code()),
            futures_util::future::Either::Left((Err(e), _)) => Err(format!("{url}: {e}")),
            futures_util::future::Either::Right(_) => Err(format!("{url}: no answer within {DELIVERY_TIMEOUT:?}")),
        }
    }
}
