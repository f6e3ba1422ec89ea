//! Token auth on the Worker: the config from the `AUTH_CONFIG` secret, compiled once per
//! isolate (so a `Registry` built per request shares it, and its cache of OIDC issuers' keys),
//! and the runtime's `fetch` for those keys. Every rule of auth itself is berth-core's.

use std::cell::RefCell;
use std::sync::Arc;

use berth_core::auth::{Auth, AuthConfig, HttpFetch, MAX_JWKS_BYTES};
use berth_core::policy::Policies;

thread_local! {
    /// The config text and what it compiled to. Workers isolates are single-threaded; a new
    /// secret value starts new isolates, but comparing the text costs nothing and is sure.
    static COMPILED: RefCell<Option<(String, Arc<Auth>)>> = const { RefCell::new(None) };
}

/// The compiled auth config for this text: built on first use in this isolate, then shared.
pub fn compiled(text: &str) -> Result<Arc<Auth>, String> {
    COMPILED.with(|slot| {
        if let Some((seen, auth)) = slot.borrow().as_ref() {
            if seen == text {
                return Ok(auth.clone());
            }
        }
        let mut auth = Auth::parse(text).map_err(|e| format!("AUTH_CONFIG: {e}"))?;
        if auth.trusts_oidc_issuers() {
            auth = auth.with_fetcher(Box::new(WorkerFetch));
        }
        let auth = Arc::new(auth);
        *slot.borrow_mut() = Some((text.to_owned(), auth.clone()));
        Ok(auth)
    })
}

thread_local! {
    /// The two config texts and the policies they compiled to, as for `COMPILED`.
    static POLICIES: RefCell<Option<((Option<String>, Option<String>), Arc<Policies>)>> = const { RefCell::new(None) };
}

/// The tag policies: AUTH_CONFIG's `[policies]`, or POLICY_CONFIG's for a Worker without auth
/// (never both); compiled once per isolate.
pub fn policies(auth_config: Option<&str>, policy_config: Option<&str>) -> Result<Arc<Policies>, String> {
    let key = (auth_config.map(str::to_owned), policy_config.map(str::to_owned));
    POLICIES.with(|slot| {
        if let Some((seen, policies)) = slot.borrow().as_ref() {
            if *seen == key {
                return Ok(policies.clone());
            }
        }
        let auth = auth_config.map(AuthConfig::parse).transpose().map_err(|e| format!("AUTH_CONFIG: {e}"))?;
        let policies = Arc::new(
            Policies::from_settings(auth.as_ref(), policy_config).map_err(|e| format!("POLICY_CONFIG or AUTH_CONFIG: {e}"))?,
        );
        *slot.borrow_mut() = Some((key, policies.clone()));
        Ok(policies)
    })
}

/// OIDC discovery documents and key sets through the Workers `fetch`.
struct WorkerFetch;

#[async_trait::async_trait(?Send)]
impl HttpFetch for WorkerFetch {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let parsed = worker::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let mut response = worker::Fetch::Url(parsed).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status_code();
        if !(200..300).contains(&status) {
            return Err(format!("{url} answered {status}"));
        }
        let declared = response.headers().get("content-length").ok().flatten();
        if declared.and_then(|l| l.parse::<usize>().ok()).is_some_and(|l| l > MAX_JWKS_BYTES) {
            return Err(format!("{url} sent more than {MAX_JWKS_BYTES} bytes"));
        }
        // The core refuses a body over the limit however it came (no or a false Content-Length).
        response.bytes().await.map_err(|e| format!("reading {url}: {e}"))
    }
}
