//! Auth for `berth serve`: reads the auth config file, resolves key files, and gives the core
//! an HTTP client for OIDC issuers' keys. Every rule of auth itself lives in berth-core.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::auth::{Auth, AuthConfig, HttpFetch};
use http_body_util::BodyExt as _;

/// Loads and checks the auth config; a bad file stops start-up with the reason.
pub fn load(path: &Path) -> Result<Auth, String> {
    let config = read_config(path)?;
    let auth = Auth::new(&config)?.with_default_scheme("http");
    // Only OIDC trust needs outbound HTTPS (and the system's CA certificates).
    if config.oidc.is_empty() {
        return Ok(auth);
    }
    Ok(auth.with_fetcher(Box::new(Fetcher::new()?)))
}

/// The config with `private_key_file` entries read (paths relative to the config file).
pub fn read_config(path: &Path) -> Result<AuthConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut config = AuthConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for key in &mut config.token.keys {
        if let (None, Some(file)) = (&key.private_key, &key.private_key_file) {
            let file = relative_to(path, file);
            let secret = std::fs::read_to_string(&file)
                .map_err(|e| format!("key {:?}: cannot read {}: {e}", key.kid, file.display()))?;
            key.private_key = Some(secret.trim().to_owned());
        }
    }
    Ok(config)
}

pub fn relative_to(config: &Path, file: &str) -> PathBuf {
    let file = Path::new(file);
    if file.is_absolute() {
        return file.to_path_buf();
    }
    config.parent().unwrap_or(Path::new(".")).join(file)
}

/// OIDC discovery and JWKS responses are small; anything bigger is refused.
const MAX_RESPONSE_BYTES: usize = 512 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

struct Fetcher {
    client: HttpsClient,
}

impl Fetcher {
    fn new() -> Result<Self, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?
            // Plain http is only ever used for loopback issuers; the core refuses other http URLs.
            .https_or_http()
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Fetcher { client })
    }
}

#[async_trait::async_trait]
impl HttpFetch for Fetcher {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let request = async {
            let response = self.client.get(uri).await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES);
            let bytes = body.collect().await.map_err(|e| format!("reading {url}: {e}"))?.to_bytes();
            Ok(bytes.to_vec())
        };
        tokio::time::timeout(FETCH_TIMEOUT, request)
            .await
            .map_err(|_| format!("{url} did not answer within {} s", FETCH_TIMEOUT.as_secs()))?
    }
}
