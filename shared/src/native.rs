//! What the native adapters (`berth serve`, the Lambda function) share and the core itself must
//! not do: read the clock and the OS RNG for a request, and fetch OIDC issuers' keys over
//! HTTPS. Behind the `native` feature so the core stays I/O-free for wasm32 (the Worker takes
//! these from the JS runtime).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::HttpFetch;
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
