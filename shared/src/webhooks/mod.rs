//! Webhooks (docs/webhooks.md): events of interest written to a durable outbox in the
//! [`MetaStore`] as part of the request that caused them, then delivered outside requests by
//! [`Webhooks::deliver`], which every runtime calls on its own schedule through its own
//! [`HttpPost`].
//!
//! The registry writes the outbox entries after the handler answered 2xx and before the
//! response leaves (see `Registry::answer`): no event for a write that failed. If the outbox
//! write fails, a write request is answered 500 instead of its success, so the client retries
//! (every write Berth emits events for is idempotent) and the retry records the event.

pub mod config;
pub mod outbox;
pub mod payload;
pub mod target;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::events::{Event, EventAction, Outcome, TargetKind};
use crate::storage::{MaybeSendSync, MetaStore, StorageResult};
use crate::RequestContext;

pub use config::{EndpointConfig, Format, HookKind, WebhookConfig};
pub use outbox::{failed, redeliver, redeliver_all, release_claims, DeliverReport, Delivery};
pub use payload::{HookEvent, RequestInfo};

/// Put in a response's extensions when its request wrote outbox entries (how many): a runtime
/// that delivers from a queue (Cloudflare Queues, SQS) sends its consumer a wake-up then, so
/// delivery starts within seconds instead of at the next schedule. Only a wake-up: the outbox
/// stays the record, and a lost message delays a delivery to the next schedule, never loses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued(pub usize);

/// Sends one delivery: the runtime's HTTP client. It must not follow redirects (a redirect to
/// an internal address would get round the URL check), must cut a slow receiver off after a
/// few seconds, need not read the response body, and (unless `allow_private`) must refuse to
/// connect to an address [`target::is_forbidden_ip`] names, wherever a host name resolves to.
/// Returns the response status, or why there was none.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait HttpPost: MaybeSendSync {
    async fn post(&self, url: &str, allow_private: bool, headers: Vec<(String, String)>, body: Vec<u8>) -> Result<u16, String>;
}

/// The checked webhook config and what deliveries need besides it.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    pub(crate) config: WebhookConfig,
    /// The registry's public URL (no trailing slash), for targets' `url` and events' `source`.
    pub(crate) registry_url: String,
    /// Pull events waiting to be written in one batch, when the runtime asked for it (see
    /// [`Webhooks::buffer_pulls`]); None: written by the request, like every other event.
    pulls: Option<std::sync::Arc<PullBuffer>>,
}

/// Pull events held in memory until the runtime's delivery task writes them
/// ([`Webhooks::flush_pulls`]). A manifest GET then writes nothing itself: one outbox write per
/// pull, made by the request, cut `berth serve`'s manifest GETs from ~37,000 to ~1,500 per
/// second (bench/metrics-overhead.sh). A pull is not a write, so "no write without its event"
/// does not bind it; what this gives up is the pulls of the last flush interval on a crash.
#[derive(Debug)]
struct PullBuffer {
    /// One per (event, endpoint), in order; batched when written ([`outbox::batched_ops`]).
    held: std::sync::Mutex<Vec<Delivery>>,
    /// Most deliveries held: past it, pull events are dropped (and counted) rather than
    /// memory growing with a receiver that cannot keep up.
    max: usize,
    dropped: std::sync::atomic::AtomicU64,
}

impl Webhooks {
    pub fn new(config: WebhookConfig, registry_url: &str) -> Result<Self, String> {
        config.validate()?;
        Ok(Webhooks { config, registry_url: registry_url.trim_end_matches('/').to_owned(), pulls: None })
    }

    /// Pull events are kept in memory (at most `max` outbox entries) and written by
    /// [`Webhooks::flush_pulls`], which the runtime then calls on its delivery schedule. For a
    /// long-lived process only (`berth serve`): a Worker isolate or Lambda instance may be
    /// frozen or dropped between requests, so they keep writing pulls with the request.
    pub fn buffer_pulls(mut self, max: usize) -> Self {
        self.pulls = Some(std::sync::Arc::new(PullBuffer { held: Default::default(), max, dropped: Default::default() }));
        self
    }

    /// Writes the buffered pull events in one storage batch, as outbox entries that each carry
    /// up to [`outbox::MAX_BATCH_EVENTS`] events for one endpoint, sent in one POST: one request
    /// per pull would have the receiver (and this registry) spend more on deliveries than on the
    /// pulls. Returns how many events it wrote. On a storage error they are put back (within
    /// the bound) for the next flush.
    pub async fn flush_pulls<M: MetaStore>(&self, meta: &M) -> StorageResult<usize> {
        let Some(buffer) = &self.pulls else { return Ok(0) };
        let held = std::mem::take(&mut *buffer.held.lock().unwrap_or_else(|p| p.into_inner()));
        if held.is_empty() {
            return Ok(0);
        }
        match self.write(meta, outbox::batched_ops(&held)).await {
            Ok(()) => Ok(held.len()),
            Err(e) => {
                buffer.hold(held);
                Err(e)
            }
        }
    }

    /// Pull events dropped because the buffer was full (see [`Webhooks::buffer_pulls`]).
    pub fn pulls_dropped(&self) -> u64 {
        self.pulls.as_ref().map_or(0, |b| b.dropped.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// From a runtime's two settings, like [`crate::policy::Policies::from_settings`]: the
    /// `[webhooks]` of its auth config or of its policies-only file, not both.
    pub fn from_settings(auth: Option<&crate::auth::AuthConfig>, policy_file: Option<&str>, registry_url: &str) -> Result<Self, String> {
        let in_auth = auth.map(|a| &a.webhooks).filter(|w| !w.is_empty());
        let in_file = match policy_file {
            Some(text) => {
                crate::auth::AuthConfig::parse(text).map_err(|e| format!("policy {e}"))?.webhooks
            }
            None => WebhookConfig::default(),
        };
        let config = match (in_auth, in_file.is_empty()) {
            (Some(_), false) => {
                return Err("webhooks are given twice: in the auth config and in the policy config; keep them in one place".into())
            }
            (Some(config), true) => config.clone(),
            (None, _) => in_file,
        };
        Webhooks::new(config, registry_url).map_err(|e| format!("webhooks: {e}"))
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    pub fn is_empty(&self) -> bool {
        self.config.is_empty()
    }

    /// Writes the outbox entries of a request's event (none when no endpoint wants it).
    /// `refusal` is the detail of the error the request was refused with, if any. Returns how
    /// many entries the request wrote (0 when none, or when pulls are buffered).
    pub(crate) async fn record<M: MetaStore>(
        &self,
        meta: &M,
        event: &Event,
        request: &RequestInfo,
        refusal: Option<&serde_json::Value>,
        ctx: &RequestContext,
    ) -> StorageResult<usize> {
        let events = hook_events(event, request, refusal, ctx);
        match &self.pulls {
            Some(buffer) if event.action == crate::events::EventAction::Pull => {
                buffer.hold(events.iter().flat_map(|e| outbox::deliveries(&self.config, e)).collect());
                Ok(0)
            }
            _ => {
                let ops: Vec<_> = events.iter().flat_map(|e| outbox::enqueue_ops(&self.config, e)).collect();
                let n = ops.len();
                self.write(meta, ops).await.map(|()| n)
            }
        }
    }

    /// Enqueues an event that no request caused (a GC run finished). `random`: fresh bytes.
    pub async fn enqueue<M: MetaStore>(&self, meta: &M, mut event: HookEvent, random: [u8; 16], n: u32) -> StorageResult<()> {
        event.id = event_id(event.at, &random, n);
        self.write(meta, outbox::enqueue_ops(&self.config, &event)).await
    }

    /// The outbox entries of an event recorded with an outcome (a replication's result, whose
    /// id is derived from its entry): the caller writes them in the same batch as the outcome.
    /// Unconditional puts: a repeated attempt writes the same event again, identical.
    pub(crate) fn outcome_ops(&self, event: &HookEvent) -> Vec<crate::storage::BatchOp> {
        outbox::enqueue_ops_with(&self.config, event, crate::storage::Precondition::None)
    }

    async fn write<M: MetaStore>(&self, meta: &M, ops: Vec<crate::storage::BatchOp>) -> StorageResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let applied = meta.apply(ops).await?;
        if applied.iter().all(|a| *a) {
            Ok(())
        } else {
            Err(crate::StorageError::new("an outbox entry with the same key exists (random ids repeated)"))
        }
    }
}

impl PullBuffer {
    fn hold(&self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() + deliveries.len() > self.max {
            self.dropped.fetch_add(deliveries.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        held.extend(deliveries);
    }
}

/// An event id: the time first (ids sort by time), then 16 hex digits from the request's
/// random bytes (hashed: the same bytes seed upload ids), then which of the request's events.
pub(crate) fn event_id(at: u64, random: &[u8; 16], n: u32) -> String {
    let digest = Sha256::new().chain_update(b"berth event id\0").chain_update(random).finalize();
    format!("{at:010}-{}-{n}", hex::encode(&digest[..8]))
}

/// What the webhooks see of a request (Distribution's `request` object).
pub(crate) fn request_info(req: &crate::Request, ctx: &RequestContext) -> RequestInfo {
    let header = |name: &str| crate::header_str(req.headers(), name).unwrap_or("").chars().take(256).collect();
    RequestInfo {
        id: crate::observe::request_id(req.headers(), ctx),
        addr: crate::auth::client_of(req),
        host: header("host"),
        method: req.method().as_str().to_owned(),
        useragent: header("user-agent"),
    }
}

/// The webhook events of one request's event: none for most requests.
fn hook_events(event: &Event, request: &RequestInfo, refusal: Option<&serde_json::Value>, ctx: &RequestContext) -> Vec<HookEvent> {
    let t = &event.target;
    let base = |kind: HookKind, n: u32| HookEvent {
        id: event_id(event.at, &ctx.random, n),
        kind,
        at: event.at,
        repository: event.repository.clone(),
        digest: t.digest.clone(),
        media_type: t.media_type.clone(),
        size: t.size,
        tag: t.tag().map(str::to_owned),
        previous_digest: None,
        actor: event.subject.clone(),
        request: Some(request.clone()),
        detail: None,
    };
    let mut out = Vec::new();
    match (event.action, t.kind, event.outcome) {
        (EventAction::Push, TargetKind::Manifest, Outcome::Ok) => {
            out.push(HookEvent { tag: None, ..base(HookKind::Push, 0) });
            for (i, tag) in t.tags.iter().enumerate() {
                out.push(HookEvent { tag: Some(tag.clone()), ..base(HookKind::Tag, 1 + i as u32) });
            }
            for (i, m) in t.moved.iter().enumerate() {
                out.push(HookEvent {
                    tag: Some(m.tag.clone()),
                    previous_digest: Some(m.from.clone()),
                    ..base(HookKind::TagMoved, 1000 + i as u32)
                });
            }
        }
        // A 304 (the client has it) and a HEAD (a probe) are not pulls, as in the metrics.
        (EventAction::Pull, TargetKind::Manifest, Outcome::Ok) if request.method == "GET" && event.status == 200 => {
            out.push(base(HookKind::Pull, 0));
        }
        (EventAction::Delete, TargetKind::Manifest, Outcome::Ok) => out.push(base(HookKind::Delete, 0)),
        (EventAction::Push, _, Outcome::Refused) => {
            if let Some(quota) = refusal.filter(|d| d.get("quota").is_some()) {
                let digest = t.digest.clone().or_else(|| t.reference.clone().filter(|r| r.contains(':')));
                out.push(HookEvent { digest, detail: Some(json!({ "quota": quota })), ..base(HookKind::QuotaExceeded, 0) });
            }
        }
        _ => {}
    }
    out
}

/// The event of a finished GC run, for [`Webhooks::enqueue`].
pub fn gc_finished(at: u64, report: &crate::GcReport) -> HookEvent {
    HookEvent {
        id: String::new(),
        kind: HookKind::GcFinished,
        at,
        repository: None,
        digest: None,
        media_type: None,
        size: None,
        tag: None,
        previous_digest: None,
        actor: "berth-gc".to_owned(),
        request: None,
        detail: serde_json::to_value(report).ok(),
    }
}

#[cfg(test)]
mod tests;
