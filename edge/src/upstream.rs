//! The pull-through cache's HTTP client on the Worker (docs/mirror.md): berth-core's `Upstream`
//! over the runtime's `fetch`. Redirects are left to the core (`redirect: "manual"`: it decides
//! where credentials go). workerd has no socket read timeout, so each wait (for the response
//! head, then for each body chunk) races a timer, and a timeout aborts the fetch. One client per
//! isolate, kept like the auth config, so the upstreams' tokens and the in-flight blob fetches
//! are shared by the isolate's requests.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use berth_core::mirror::{Upstream, UpstreamClient, UpstreamRequest, UpstreamResponse};
use berth_core::{ByteStream, StorageError};
use bytes::Bytes;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, ResponseBody};

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
    async fn send(&self, req: UpstreamRequest) -> Result<UpstreamResponse, String> {
        // Only replication sends bodies (pushes to a destination), and it is not wired on the
        // Worker yet (docs/replication.md): refuse rather than send a push without its body.
        if req.body.is_some() {
            return Err(format!("{}: request bodies are not sent from the Worker", req.url));
        }
        let url = req.url;
        let mut init = RequestInit::new();
        init.with_method(Method::from(req.method.as_str().to_owned()))
            .with_headers(Headers::from(&req.headers))
            .with_redirect(RequestRedirect::Manual);
        let request = Request::new_with_init(&url, &init).map_err(|e| format!("{url}: {e}"))?;
        let controller = AbortController::default();
        let response = match within(self.read_timeout, Fetch::Request(request).send_with_signal(&controller.signal())).await {
            // The core's message names the request already.
            Some(response) => response.map_err(|e| e.to_string())?,
            None => {
                controller.abort();
                return Err(format!("operation timed out (no answer in {} s)", self.read_timeout.as_secs()));
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
