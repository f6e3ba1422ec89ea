//! What the native adapters (`berth serve`, the Lambda function) share and the core itself must
//! not do: read the clock and the OS RNG for a request, fetch OIDC issuers' keys over HTTPS,
//! send webhook deliveries and fetch from upstream registries. Behind the `native` feature so
//! the core stays I/O-free for wasm32 (the Worker takes these from the JS runtime).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::HttpFetch;
use crate::mirror::{Upstream, UpstreamRequest, UpstreamResponse};
use crate::webhooks::{target::is_forbidden_ip, HttpPost};
use crate::RequestContext;

/// The time and randomness for one request.
pub fn request_context() -> RequestContext {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut random = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut random) {
        // Upload ids and token ids would repeat; nothing else can be done about it here.
        tracing::error!("no randomness available: {e}");
    }
    RequestContext { now, random }
}

/// OIDC discovery documents and key sets are small; anything bigger is refused.
const MAX_RESPONSE_BYTES: usize = crate::auth::MAX_JWKS_BYTES;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// [`HttpFetch`] over reqwest (rustls, the system's CA certificates via webpki roots).
pub struct ReqwestFetch {
    client: reqwest::Client,
}

impl ReqwestFetch {
    pub fn new() -> Result<Self, String> {
        // Plain http is only ever used for loopback issuers: the core refuses other http URLs.
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot set up the HTTPS client for OIDC keys: {e}"))?;
        Ok(ReqwestFetch { client })
    }
}

#[async_trait::async_trait]
impl HttpFetch for ReqwestFetch {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut response = self.client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading {url}: {e}"))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(format!("{url} sent more than {MAX_RESPONSE_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Seconds to open a connection to an upstream registry.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// [`Upstream`] over reqwest, for pull-through caches: redirects are left to the core (it
/// decides where credentials go), bodies stream chunk by chunk.
pub struct ReqwestUpstream {
    client: reqwest::Client,
}

impl ReqwestUpstream {
    /// `read_timeout`: how long an upstream may stay silent, before its response head and
    /// between two chunks of a body (a 1 GiB layer takes as long as it takes, so the whole
    /// request has no bound).
    pub fn with_read_timeout(read_timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(UPSTREAM_CONNECT_TIMEOUT)
            .read_timeout(read_timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION"), " (pull-through cache)"))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client for upstream registries: {e}"))?;
        Ok(ReqwestUpstream { client })
    }
}

#[async_trait::async_trait]
impl Upstream for ReqwestUpstream {
    async fn sleep(&self, secs: u64) {
        tokio::time::sleep(std::time::Duration::from_secs(secs)).await
    }

    async fn send(&self, req: UpstreamRequest) -> Result<UpstreamResponse, String> {
        let mut request = self.client.request(req.method, &req.url).headers(req.headers);
        if let Some(body) = req.body {
            // Streamed: a layer pushed by replication is never held whole.
            request = request.body(reqwest::Body::wrap_stream(body));
        }
        let response = request
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = futures_util::stream::unfold(Some(response), |response| async move {
            let mut response = response?;
            match response.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(response))),
                Ok(None) => None,
                Err(e) => Some((Err(crate::StorageError::new(describe(&e))), None)),
            }
        });
        Ok(UpstreamResponse { status, headers, body: Box::pin(body) })
    }
}

/// reqwest's message with its causes ("operation timed out", "connection refused"), which its
/// Display leaves out.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    if e.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// A receiver gets this long to answer (connect included) before the attempt counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The client deliveries go through: no redirects (one to an internal address would get round
/// the URL check), a timeout, no proxy from the environment, and, unless the endpoint allows
/// private addresses, a resolver that refuses names resolving to one.
pub struct WebhookPost {
    public: reqwest::Client,
    private: reqwest::Client,
}

impl WebhookPost {
    pub fn new() -> Result<Self, String> {
        Self::with_timeout(DELIVERY_TIMEOUT)
    }

    pub fn with_timeout(timeout: Duration) -> Result<Self, String> {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .connect_timeout(timeout)
                .no_proxy()
        };
        let public = builder().dns_resolver(Arc::new(PublicOnly)).build();
        let private = builder().build();
        match (public, private) {
            (Ok(public), Ok(private)) => Ok(WebhookPost { public, private }),
            (Err(e), _) | (_, Err(e)) => Err(format!("cannot set up the webhook client: {e}")),
        }
    }
}

#[async_trait::async_trait]
impl HttpPost for WebhookPost {
    async fn post(&self, url: &str, allow_private: bool, headers: Vec<(String, String)>, body: Vec<u8>) -> Result<u16, String> {
        let client = if allow_private { &self.private } else { &self.public };
        let mut request = client.post(url).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        // Only the status counts: the body is never read (a huge or malformed one costs nothing;
        // dropping the response closes the connection).
        let response = request.send().await.map_err(|e| describe(&e))?;
        Ok(response.status().as_u16())
    }
}

/// Resolves host names, and refuses any that resolve to an internal address (a public name
/// pointed at 127.0.0.1 or at a cloud metadata service must not reach it).
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| is_forbidden_ip(a.ip())) {
                let message = format!("{host} resolves to {}, an internal address; refused (allow_private)", bad.ip());
                return Err(message.into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
