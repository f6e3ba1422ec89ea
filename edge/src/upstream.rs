//! The pull-through cache's and replication's HTTP client on the Worker (docs/mirror.md,
//! docs/replication.md): berth-core's `Upstream`
//! over the runtime's `fetch`. Redirects are left to the core (`redirect: "manual"`: it decides
//! where credentials go). workerd has no socket read timeout, so each wait (for the response
//! head, then for each body chunk) races a timer, and a timeout aborts the fetch. One client per
//! isolate, kept like the auth config, so the upstreams' tokens and the in-flight blob fetches
//! are shared by the isolate's requests.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use berth_core::mirror::{Upstream, UpstreamClient, UpstreamRequest, UpstreamResponse};
use berth_core::{ByteStream, StorageError};
use bytes::Bytes;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use js_sys::Date;
use wasm_bindgen::JsValue;
use worker::{AbortController, Delay, Fetch, FixedLengthStream, Headers, Method, Request, RequestInit, RequestRedirect, ResponseBody};

thread_local! {
    /// Settings are fixed for an isolate's life, so one client serves all its requests.
    static CLIENT: RefCell<Option<Arc<UpstreamClient>>> = const { RefCell::new(None) };
}

/// This isolate's client (made on its first mirrored request).
pub fn client(read_timeout_secs: u64) -> Arc<UpstreamClient> {
    CLIENT.with(|slot| {
        slot.borrow_mut()
            .get_or_insert_with(|| {
                let http = WorkerUpstream { read_timeout: Duration::from_secs(read_timeout_secs.max(1)) };
                Arc::new(UpstreamClient::new(Arc::new(http)))
            })
            .clone()
    })
}

struct WorkerUpstream {
    /// How long the upstream may stay silent: before its response head, between two chunks.
    read_timeout: Duration,
}

/// `future`'s output, or None when `limit` passes first.
async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    match select(std::pin::pin!(future), Delay::from(limit)).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

#[async_trait::async_trait(?Send)]
impl Upstream for WorkerUpstream {
    async fn sleep(&self, secs: u64) {
        Delay::from(Duration::from_secs(secs)).await
    }

    async fn send(&self, req: UpstreamRequest) -> Result<UpstreamResponse, String> {
        let url = req.url;
        let mut headers = req.headers;
        // Replication's pushes carry bodies; the time of their last chunk taken by `fetch`.
        let progress = Rc::new(Cell::new(Date::now()));
        let body = match req.body {
            None => None,
            Some(body) => Some(request_body(body, &mut headers, progress.clone()).await.map_err(|e| format!("{url}: {e}"))?),
        };
        let mut init = RequestInit::new();
        init.with_method(Method::from(req.method.as_str().to_owned()))
            .with_headers(Headers::from(&headers))
            .with_redirect(RequestRedirect::Manual)
            .with_body(body);
        let request = Request::new_with_init(&url, &init).map_err(|e| format!("{url}: {e}"))?;
        let controller = AbortController::default();
        let (fetch, signal) = (Fetch::Request(request), controller.signal());
        let mut send = std::pin::pin!(fetch.send_with_signal(&signal));
        // The response head comes after the whole body: silence is counted from the later of
        // the request's start and its last body chunk, so a large upload that keeps flowing is
        // never cut off.
        let response = loop {
            match within(self.read_timeout, send.as_mut()).await {
                // The core's message names the request already.
                Some(response) => break response.map_err(|e| e.to_string())?,
                None if Date::now() - progress.get() < self.read_timeout.as_millis() as f64 => continue,
                None => {
                    controller.abort();
                    return Err(format!("operation timed out (no answer in {} s)", self.read_timeout.as_secs()));
                }
            }
        };
        let status = http::StatusCode::from_u16(response.status_code())
            .map_err(|_| format!("the invalid status {}", response.status_code()))?;
        let headers = http::HeaderMap::from(response.headers());
        let body: ByteStream = match response.body() {
            ResponseBody::Stream(raw) => timed(crate::handoff::from_js(raw.clone()), controller, self.read_timeout),
            ResponseBody::Body(bytes) => {
                let chunk = Bytes::from(bytes.clone());
                Box::pin(futures_util::stream::once(async move { Ok(chunk) }))
            }
            ResponseBody::Empty => Box::pin(futures_util::stream::empty()),
        };
        Ok(UpstreamResponse { status, headers, body })
    }
}

/// The most of a body without a Content-Length that is held in memory to send it (the core
/// gives one with every body it streams: blobs; manifests are small and whole).
const MAX_UNSIZED_BODY: usize = 8 << 20;

/// A request body for `fetch`: with a Content-Length, the stream as it is pulled (through a
/// `FixedLengthStream`, so workerd sends that length rather than chunks, and the Worker holds a
/// chunk at a time whatever the blob's size); without one, read whole up to [`MAX_UNSIZED_BODY`].
/// workerd sets Content-Length from the body itself, so the header is taken out.
async fn request_body(body: ByteStream, headers: &mut http::HeaderMap, progress: Rc<Cell<f64>>) -> Result<JsValue, String> {
    let length = headers
        .remove(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()));
    match length {
        Some(length) => {
            let chunks = body.map(move |chunk| {
                progress.set(Date::now());
                chunk.map(|c| c.to_vec()).map_err(|e| worker::Error::RustError(e.message))
            });
            let fixed: worker::worker_sys::FixedLengthStream = FixedLengthStream::wrap(chunks, length).into();
            Ok(fixed.readable().into())
        }
        None => {
            let bytes = berth_core::body::read_limited(body, MAX_UNSIZED_BODY).await.map_err(|e| e.message)?;
            Ok(js_sys::Uint8Array::from(bytes.as_ref()).into())
        }
    }
}

/// `body` with each chunk awaited for at most `limit`; past it, an error item, and the fetch
/// (the upstream connection) is aborted. A large layer that keeps flowing is never cut off.
fn timed(body: ByteStream, controller: AbortController, limit: Duration) -> ByteStream {
    Box::pin(futures_util::stream::unfold(Some((body, controller)), move |state| async move {
        let (mut body, controller) = state?;
        match within(limit, body.next()).await {
            Some(Some(Ok(chunk))) => Some((Ok(chunk), Some((body, controller)))),
            Some(Some(Err(e))) => Some((Err(e), None)),
            Some(None) => None,
            None => {
                controller.abort();
                let message = format!("operation timed out (the upstream sent nothing for {} s)", limit.as_secs());
                Some((Err(StorageError::new(message)), None))
            }
        }
    }))
}
