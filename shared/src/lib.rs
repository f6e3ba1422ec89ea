//! Berth's core: the OCI Distribution API (spec v1.1, Docker Registry HTTP API v2), once.
//!
//! One entry point, [`Registry::handle`], takes an `http::Request` whose body is a byte stream and
//! returns an `http::Response`. Storage sits behind two small traits ([`BlobStore`],
//! [`MetaStore`]); time and randomness come in through [`RequestContext`]. Nothing here touches a
//! clock, a thread, a socket or a file, so the same crate runs in a Worker (wasm32), on Lambda and
//! in `berth serve`.

pub mod auth;
pub mod blobs;
pub mod body;
pub mod config_text;
#[cfg(feature = "contract")]
pub mod contract;
pub mod error;
pub mod events;
pub mod gc;
pub mod hash;
mod inspect;
pub(crate) mod lifecycle_reads;
pub mod manifests;
pub mod memory;
pub mod metrics;
pub mod mirror;
pub mod names;
pub mod observe;
pub mod parted;
pub mod policy;
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub mod native;
mod records;
pub mod referrers;
pub mod replication;
mod reply;
pub mod routes;
pub mod storage;
pub mod tags;
pub mod ui;
pub mod uploads;
pub mod webhooks;

use http::{Method, StatusCode};

pub use body::Body;
pub use error::{ErrorCode, RegistryError, StorageError};
pub use events::{Event, EventAction, EventSink};
pub use gc::{Budget, GcOptions, GcReport};
pub use routes::{Access, Action, Endpoint, Route, Unrouted};
pub use storage::{
    BlobStore, ByteRange, ByteStream, DirectLimits, MetaStore, NativeAppend, Precondition, PutOutcome, StoredBlob,
    UploadWriter, Versioned,
};
pub use memory::{MemoryBlobStore, MemoryMetaStore};

use reply::Reply;

pub type Request = http::Request<ByteStream>;
/// The request head, which handlers borrow while they stream the body.
pub(crate) type Parts = http::request::Parts;
pub type Response = http::Response<Body>;

/// The spec's suggested limit, and what Distribution enforces.
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// A lapsed claim is harmless while no second writer shows up (the writer still saves its
/// session), so this only bounds how long a session stays locked after a runtime died mid-request.
pub const DEFAULT_UPLOAD_LEASE_SECS: u64 = 900;

/// Registry settings that differ between deployments.
#[derive(Clone)]
pub struct Config {
    /// Key that signs upload ids, so a stateless instance can trust the id it is handed.
    pub upload_secret: Vec<u8>,
    pub max_manifest_bytes: usize,
    /// Advertised as `OCI-Chunk-Min-Length` (the edge needs chunks of at least R2's part size).
    pub chunk_min_length: Option<u64>,
    /// The largest request body the runtime accepts (Workers plan limit, Lambda's 6 MB); a body
    /// over it gets 413 with a message saying how to push instead. None: unlimited.
    pub max_request_body: Option<u64>,
    /// How long a request may hold an upload session while it writes; after that the claim
    /// lapses (a runtime that died mid-request must not lock the session for ever).
    pub upload_lease_secs: u64,
}

impl Config {
    pub fn new(upload_secret: Vec<u8>) -> Self {
        Config {
            upload_secret,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            chunk_min_length: None,
            max_request_body: None,
            upload_lease_secs: DEFAULT_UPLOAD_LEASE_SECS,
        }
    }
}

/// What the runtime supplies with every request: the core never reads a clock or an RNG itself
/// (`SystemTime::now` panics on wasm32).
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// Unix time, seconds.
    pub now: u64,
    /// Fresh random bytes, used for upload ids.
    pub random: [u8; 16],
}

/// The registry: protocol and policy over a blob store and a metadata store.
///
/// Cheap to clone (every part is shared): a response body that outlives the request's borrow
/// of the registry (the pull-through cache's tee, src/mirror/tee.rs) holds a clone.
pub struct Registry<B, M> {
    pub(crate) blobs: std::sync::Arc<B>,
    pub(crate) meta: std::sync::Arc<M>,
    pub(crate) config: std::sync::Arc<Config>,
    /// None: no auth (the default); see [`Registry::with_auth`].
    /// Shared: the Worker builds a `Registry` per request but keeps one `Auth` (and its cache of
    /// OIDC keys) per isolate.
    pub(crate) auth: Option<std::sync::Arc<auth::Auth>>,
    /// Who hears of every request's [`Event`]: the audit log first, then the runtime's sinks.
    pub(crate) sinks: Vec<std::sync::Arc<dyn EventSink>>,
    /// Immutable and refused tags (none by default); see [`Registry::with_policies`].
    pub(crate) policies: std::sync::Arc<policy::Policies>,
    /// The HTTP client of pull-through caches (the `mirrors` policies); see [`Registry::with_upstream`].
    pub(crate) upstream: Option<std::sync::Arc<mirror::UpstreamClient>>,
    /// None: no webhooks; see [`Registry::with_webhooks`].
    pub(crate) hooks: Option<std::sync::Arc<webhooks::Webhooks>>,
}

impl<B, M> Clone for Registry<B, M> {
    fn clone(&self) -> Self {
        Registry {
            blobs: self.blobs.clone(),
            meta: self.meta.clone(),
            config: self.config.clone(),
            auth: self.auth.clone(),
            sinks: self.sinks.clone(),
            policies: self.policies.clone(),
            upstream: self.upstream.clone(),
            hooks: self.hooks.clone(),
        }
    }
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    pub fn new(blobs: B, meta: M, config: Config) -> Self {
        Registry {
            blobs: std::sync::Arc::new(blobs),
            meta: std::sync::Arc::new(meta),
            config: std::sync::Arc::new(config),
            auth: None,
            sinks: vec![std::sync::Arc::new(auth::AuditLog)],
            policies: Default::default(),
            upstream: None,
            hooks: None,
        }
    }

    /// Lets mirrored namespaces (docs/mirror.md) reach their upstreams. Shared, like
    /// [`Registry::with_auth`]: the client keeps the upstreams' tokens.
    pub fn with_upstream(mut self, client: impl Into<std::sync::Arc<mirror::UpstreamClient>>) -> Self {
        self.upstream = Some(client.into());
        self
    }

    /// The upstream HTTP client given by [`Registry::with_upstream`] (replication's too).
    pub fn upstream(&self) -> Option<&std::sync::Arc<mirror::UpstreamClient>> {
        self.upstream.as_ref()
    }

    /// Applies tag policies (immutable and refused tags) to every push and delete, with or
    /// without auth. Shared, like [`Registry::with_auth`].
    pub fn with_policies(mut self, policies: impl Into<std::sync::Arc<policy::Policies>>) -> Self {
        self.policies = policies.into();
        self
    }

    pub fn policies(&self) -> &policy::Policies {
        &self.policies
    }

    /// Turns on token auth: every request is checked before dispatch, and the token endpoint
    /// is served at [`auth::TOKEN_PATH`].
    pub fn with_auth(mut self, auth: impl Into<std::sync::Arc<auth::Auth>>) -> Self {
        self.auth = Some(auth.into());
        self
    }

    /// Adds a consumer of every request's [`Event`] (webhooks, replication, metrics), after the
    /// audit log. Shared, like [`Registry::with_auth`]: a runtime that builds a `Registry` per
    /// request keeps one sink.
    pub fn with_event_sink(mut self, sink: std::sync::Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Writes the events webhooks want to the outbox before each response (src/webhooks/);
    /// a runtime delivers them with [`webhooks::Webhooks::deliver`]. Shared, like the auth.
    pub fn with_webhooks(mut self, hooks: impl Into<std::sync::Arc<webhooks::Webhooks>>) -> Self {
        self.hooks = Some(hooks.into()).filter(|h| !h.is_empty());
        self
    }

    pub fn webhooks(&self) -> Option<&webhooks::Webhooks> {
        self.hooks.as_deref()
    }

    pub fn blob_store(&self) -> &B {
        &self.blobs
    }

    pub fn meta_store(&self) -> &M {
        &self.meta
    }

    /// Answers a request of the registry's API (and the token endpoint); [`Registry::handle`]
    /// (src/observe.rs) wraps it with what every response gets.
    async fn answer(&self, req: Request, ctx: RequestContext) -> Response {
        let head = req.method() == Method::HEAD;
        if let Some(auth) = self.auth.as_deref().filter(|_| req.uri().path() == auth::TOKEN_PATH) {
            return auth.token_endpoint(req, &ctx).await.into_response(head);
        }
        // The path and method are parsed once; the gate and dispatch match on the same value.
        let endpoint = match Endpoint::of(req.method(), req.uri().path()) {
            Ok(endpoint) => endpoint,
            Err(unrouted) => return Reply::error(unrouted_error(unrouted, req.method())).into_response(head),
        };
        // Drafted before the gate: a refused request is an event too.
        let draft = events::Draft::of(&endpoint, &req);
        let hook_request = self.hooks.as_ref().map(|_| webhooks::request_info(&req, &ctx));
        // Auth first: nothing is dispatched, stored or read from a cache before it passes.
        let (req, subject, grant) = match self.gate(req, &endpoint, &ctx).await {
            auth::Gate::Pass(req, subject, grant) => (req, subject, grant),
            auth::Gate::Answer(reply, subject) => {
                let response = reply.into_response(head);
                self.emit(draft, &subject, response.status(), &ctx, None);
                return response;
            }
        };
        let mut refusal = None;
        let mut reply = match self.dispatch(endpoint, req, &grant, &ctx).await {
            Ok(reply) => reply,
            Err(err) => {
                refusal = err.detail.clone().filter(|_| hook_request.is_some());
                Reply::error(err)
            }
        };
        let found = reply.take_found();
        let mut response = reply.into_response(head);
        if grant.private {
            auth::mark_private(&mut response);
        }
        let Some(mut event) = draft.map(|d| d.finish(&subject, response.status(), ctx.now, found)) else {
            return response;
        };
        // The outbox entries of webhooks and of replication (src/replication/outbox.rs).
        let recorded = match (&self.hooks, hook_request) {
            (Some(hooks), Some(request)) => hooks.record(&*self.meta, &event, &request, refusal.as_ref(), &ctx).await,
            _ => Ok(0),
        };
        let recorded = match recorded {
            Ok(n) => self.record_replication(&event, &ctx).await.map(|r| n + r),
            e => e,
        };
        match recorded {
            Ok(0) => {}
            Ok(n) => {
                response.extensions_mut().insert(webhooks::Enqueued(n));
            }
            Err(e) => {
                tracing::error!(error = %e.message, "webhook or replication events could not be written to the outbox");
                // A write without its event must not look successful: the client retries.
                if !matches!(event.action, EventAction::Pull) && event.outcome == events::Outcome::Ok {
                    let message = "the write succeeded but its event could not be recorded; retry";
                    response = Reply::error(error::oci(ErrorCode::Unknown, message)).into_response(head);
                    event.status = response.status().as_u16();
                    event.outcome = events::Outcome::Error;
                }
            }
        }
        self.tell_sinks(&event);
        response
    }

    fn emit(
        &self,
        draft: Option<events::Draft>,
        subject: &str,
        status: StatusCode,
        ctx: &RequestContext,
        found: Option<events::Found>,
    ) {
        if let Some(draft) = draft {
            self.tell_sinks(&draft.finish(subject, status, ctx.now, found));
        }
    }

    fn tell_sinks(&self, event: &Event) {
        for sink in &self.sinks {
            sink.emit(event);
        }
    }

    async fn dispatch(
        &self,
        endpoint: Endpoint,
        req: Request,
        grant: &auth::Grant,
        ctx: &RequestContext,
    ) -> error::Result<Reply> {
        // The body stream is Send but not Sync: handlers borrow the head and own the body.
        let (req, body) = req.into_parts();
        let head = req.method == Method::HEAD;
        self.refuse_mirrored_write(&endpoint)?;
        match &endpoint {
            Endpoint::Base => Ok(Reply::json(StatusCode::OK, b"{}".to_vec())),
            Endpoint::Catalog => self.catalog(&req).await,
            Endpoint::Quotas => {
                let body = serde_json::json!({ "quotas": self.quota_usage().await? });
                Ok(Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()))
            }
            Endpoint::Repositories => {
                // Fail closed: with auth on, a grant that names nobody lists nothing.
                let may_pull = |name: &str| match (self.auth.as_deref(), &grant.caller) {
                    (None, _) => true,
                    (Some(auth), Some(caller)) => auth.may_pull(caller, name),
                    (Some(_), None) => false,
                };
                self.pullable_catalog(&req, may_pull).await
            }
            Endpoint::TagsList { name } => self.tags_list(name, &req).await,
            Endpoint::TagDetails { name } => self.tag_details(name, &req).await,
            Endpoint::PolicyState { name } => self.policy_state(name).await,
            Endpoint::Webhooks => self.webhook_state(&req).await,
            Endpoint::Replication => self.replication_state(&req).await,
            Endpoint::RetentionPreview { name } => self.retention_preview(name, ctx.now).await,
            Endpoint::ManifestGet { name, reference } => self.get_manifest(name, reference, &req, head, ctx.now).await,
            Endpoint::ManifestPut { name, reference } => self.put_manifest(name, reference, &req, body, ctx).await,
            Endpoint::ManifestDelete { name, reference } => self.delete_manifest(name, reference).await,
            Endpoint::BlobGet { name, digest } => self.get_blob(name, digest, &req, false, ctx).await,
            Endpoint::BlobHead { name, digest } => self.get_blob(name, digest, &req, true, ctx).await,
            Endpoint::BlobDelete { name, digest } => self.delete_blob(name, digest).await,
            Endpoint::UploadStart { name } => self.start_upload(name, &req, body, grant, ctx).await,
            Endpoint::UploadPatch { name, id } => self.patch_upload(name, id, &req, body, ctx).await,
            Endpoint::UploadPut { name, id } => self.put_upload(name, id, &req, body, ctx).await,
            Endpoint::UploadStatus { name, id } => self.upload_status(name, id).await,
            Endpoint::UploadCancel { name, id } => self.cancel_upload(name, id, ctx).await,
            Endpoint::UploadParts { name, id } => self.direct_parts(name, id, &req, ctx).await,
            Endpoint::Referrers { name, digest } => self.referrers(name, digest, &req).await,
        }
    }
}

fn unrouted_error(unrouted: Unrouted, method: &Method) -> RegistryError {
    match unrouted {
        Unrouted::NoSuchPath => {
            error::oci(ErrorCode::Unsupported, "no such endpoint").with_status(StatusCode::NOT_FOUND)
        }
        Unrouted::MethodNotAllowed => error::oci(
            ErrorCode::Unsupported,
            format!("method {method} is not allowed on this endpoint"),
        )
        .with_status(StatusCode::METHOD_NOT_ALLOWED),
    }
}

// Answers an adapter may need without dispatching: every OCI error body and status comes from
// the core, none is written by hand in a runtime.

/// The 413 OCI error for a body over `limit` bytes, for runtimes that must refuse a request
/// before the core reads it (Lambda's 6 MB event cap).
pub fn body_too_large(limit: u64) -> Response {
    Reply::error(uploads::too_large(limit)).into_response(false)
}

/// A deployment mistake (a missing binding, a bad secret): 500 UNKNOWN saying what to fix.
pub fn misconfigured(message: impl Into<String>) -> Response {
    Reply::error(error::oci(ErrorCode::Unknown, message)).into_response(false)
}

/// A request the runtime could not translate (a URL or header the `http` types refuse): 400.
pub fn untranslatable_request(message: impl std::fmt::Display) -> Response {
    Reply::error(error::oci(ErrorCode::Unsupported, format!("the request could not be read: {message}")))
        .into_response(false)
}

/// Our own failure outside the protocol (a request task that panicked): 500 UNKNOWN.
pub fn internal_error() -> Response {
    Reply::error(error::oci(ErrorCode::Unknown, "internal error; see the registry's log")).into_response(false)
}

/// The query string's pairs, percent-decoded.
pub(crate) fn query_of(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect()
}

pub(crate) fn query_param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub(crate) fn header_str<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
