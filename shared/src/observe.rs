//! What every response gets whatever it answers, and the answers that are not the registry's
//! API: a request id (`X-Request-Id`) on every response, and the health endpoints load
//! balancers probe (`/healthz`: the process answers; `/readyz`: its storage answers too).
//! Both health endpoints need no auth and say nothing beyond "ok" or "not ready": no version,
//! no store name, no error text (that goes to the log).

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::storage::{BlobStore, MetaStore};
use crate::{Body, Registry, Request, RequestContext, Response};

/// The header a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";

/// The longest request id taken from a caller (a W3C trace id is 32 hex digits, a UUID 36).
const MAX_REQUEST_ID: usize = 128;

/// The request's id: the caller's `X-Request-Id` when it is sane (1 to 128 characters of
/// ASCII letters, digits and `-_.:`; anything else could forge or break a log line), else one
/// derived from the request's random bytes. Deterministic, so an adapter that computes it first
/// (to put it on its own log lines) gets the very id the core puts on the response.
/// Derived through a hash rather than copied: the same random bytes also seed upload ids.
pub fn request_id(headers: &HeaderMap, ctx: &RequestContext) -> String {
    let given = headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).filter(|id| is_sane(id));
    if let Some(id) = given {
        return id.to_owned();
    }
    let digest = Sha256::new().chain_update(b"berth request id\0").chain_update(ctx.random).finalize();
    hex::encode(&digest[..16])
}

/// Puts the request id on a response, for the answers an adapter makes without
/// [`Registry::handle`] (a body over Lambda's cap, a request task that panicked). The id is sane
/// by construction (checked or hex), so this never fails; if it did, there would be no header.
pub fn stamp_request_id(response: &mut Response, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
}

fn is_sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A health endpoint, by path; None for every other path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Alive,
    Ready,
}

impl Health {
    pub fn of(path: &str) -> Option<Health> {
        match path {
            HEALTHZ_PATH => Some(Health::Alive),
            READYZ_PATH => Some(Health::Ready),
            _ => None,
        }
    }

    /// Its route label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Health::Alive => "healthz",
            Health::Ready => "readyz",
        }
    }
}

/// A metadata key no record has: reading it costs one lookup and proves the store answers.
const READINESS_PROBE_KEY: &str = "health/readyz-probe";

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// Answers one request. Never panics on input; every client fault is an OCI error.
    pub async fn handle(&self, req: Request, ctx: RequestContext) -> Response {
        let id = request_id(req.headers(), &ctx);
        let mut response = match Health::of(req.uri().path()) {
            Some(health) => self.health(health, req.method()).await,
            None => self.answer(req, ctx).await,
        };
        stamp_request_id(&mut response, &id);
        response
    }

    async fn health(&self, health: Health, method: &Method) -> Response {
        if method != Method::GET && method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n", method == Method::HEAD);
        }
        let head = method == Method::HEAD;
        match health {
            Health::Alive => plain(StatusCode::OK, "ok\n", head),
            Health::Ready => match self.meta.get(READINESS_PROBE_KEY).await {
                Ok(_) => plain(StatusCode::OK, "ready\n", head),
                Err(e) => {
                    tracing::warn!("readiness probe: the metadata store did not answer: {e:?}");
                    plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", head)
                }
            },
        }
    }
}

fn plain(status: StatusCode, text: &'static str, head: bool) -> Response {
    let body = if head { Body::Empty } else { Body::Full(Bytes::from_static(text.as_bytes())) };
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    // A probe's answer is about this instant: no cache may keep it.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests;
