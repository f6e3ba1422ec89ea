//! Talking to an upstream registry as a client: the HTTP seam a runtime implements
//! ([`Upstream`], like the storage traits), and on top of it what every registry client does,
//! once, in the core: the token dance (401 challenge -> realm/service/scope -> token, reused
//! until it expires), Basic auth, and redirects (followed here, bounded, with credentials sent
//! only to the upstream's own origin: a blob redirect to S3 or a CDN must not carry them).

use std::collections::HashMap;
use std::sync::Mutex;

use http::header::{AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::config::MirrorRule;
use crate::error::{oci, ErrorCode, RegistryError};
use crate::storage::{ByteStream, MaybeSendSync};

/// One request to an upstream.
pub struct UpstreamRequest {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
    /// What to send (replication's pushes: a blob streamed from the local store, a manifest);
    /// None: no body. Its length, when known, is in `headers` (`content-length`).
    pub body: Option<ByteStream>,
}

/// Its answer; the body streams (a layer is never held whole).
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ByteStream,
}

/// The runtime's HTTP client. It must NOT follow redirects (the core does, see the module
/// doc), and must bound the time to the response head and between body chunks: a hung
/// upstream is an `Err` here, or an error item in the body stream.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Upstream: MaybeSendSync {
    async fn send(&self, req: UpstreamRequest) -> Result<UpstreamResponse, String>;

    /// Resolves after `secs` seconds: the runtime's timer (the core has none). A pull waiting
    /// for another request's fetch of the same blob uses it to notice that fetch stalling (its
    /// client reading slowly paces it) and fetch for itself. Without a timer it never resolves,
    /// and a waiter waits for the fetch to end.
    async fn sleep(&self, secs: u64) {
        let _ = secs;
        std::future::pending::<()>().await
    }
}

/// Redirects followed per request; more is a loop or a broken upstream.
pub const MAX_REDIRECTS: usize = 5;
/// A token answer bigger than this is not a token answer.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Docker's token spec: a token without `expires_in` lasts 60 seconds.
const DEFAULT_TOKEN_SECS: u64 = 60;
/// A token is not used in its last seconds: it could expire on the way.
const TOKEN_MARGIN_SECS: u64 = 10;

/// An error that says the upstream, not the client, is at fault: 502 with the upstream named.
pub(crate) fn bad_gateway(message: impl std::fmt::Display) -> RegistryError {
    oci(ErrorCode::Unknown, format!("upstream registry: {message}")).with_status(StatusCode::BAD_GATEWAY)
}

/// What authorizes requests to one upstream for one scope.
#[derive(Clone)]
enum Credential {
    Bearer { token: String, expires: u64 },
    Basic,
}

/// The client over a runtime's [`Upstream`], with the tokens it got (per process, or per
/// isolate on the Worker: a cold start asks again, which the token services expect).
pub struct UpstreamClient {
    http: std::sync::Arc<dyn Upstream>,
    /// (upstream base, scope) -> credential.
    credentials: Mutex<HashMap<(String, String), Credential>>,
    /// Blob fetches under way, so concurrent first pulls of one blob fetch it once.
    pub(crate) inflight: std::sync::Arc<super::inflight::InFlight>,
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// Resolves a `Location` against the URL it came from.
pub(crate) fn resolve_location(from: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{}{location}", origin(from))
    } else {
        let dir = from.split('?').next().unwrap_or(from);
        let dir = &dir[..dir.rfind('/').map(|i| i + 1).unwrap_or(dir.len())];
        format!("{dir}{location}")
    }
}

/// The parameters of a `WWW-Authenticate` challenge: its scheme (lower case) and `key="value"`
/// pairs (quoted values may hold commas, as scopes do).
pub(crate) fn parse_challenge(value: &str) -> Option<(String, HashMap<String, String>)> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            val = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_owned();
        }
        params.insert(key.trim().to_ascii_lowercase(), val);
    }
    Some((scheme.to_ascii_lowercase(), params))
}

fn basic_value(rule: &MirrorRule) -> Option<String> {
    use base64::Engine;
    let (user, password) = (rule.username.as_ref()?, rule.password.as_ref()?);
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.0));
    Some(format!("Basic {encoded}"))
}

impl UpstreamClient {
    pub fn new(http: std::sync::Arc<dyn Upstream>) -> Self {
        UpstreamClient { http, credentials: Mutex::new(HashMap::new()), inflight: Default::default() }
    }

    fn cached(&self, base: &str, scope: &str, now: u64) -> Option<Credential> {
        let map = self.credentials.lock().ok()?;
        match map.get(&(base.to_owned(), scope.to_owned()))? {
            Credential::Bearer { expires, .. } if *expires <= now => None,
            c => Some(c.clone()),
        }
    }

    fn remember(&self, base: &str, scope: &str, credential: Credential) {
        if let Ok(mut map) = self.credentials.lock() {
            // Bounded: expired tokens go when the map grows (one entry per repository pulled).
            if map.len() > 4096 {
                map.clear();
            }
            map.insert((base.to_owned(), scope.to_owned()), credential);
        }
    }

    fn authorization(rule: &MirrorRule, credential: &Credential) -> Option<HeaderValue> {
        let value = match credential {
            Credential::Bearer { token, .. } => format!("Bearer {token}"),
            Credential::Basic => basic_value(rule)?,
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// Sends `method url` to the rule's upstream for `repo` (the upstream's name), answering
    /// its auth challenge once and following redirects. Returns the final response, whatever
    /// its status (the caller decides what a 404 or 429 means); Err: no answer, or auth failed.
    /// The runtime's timer ([`Upstream::sleep`]).
    pub(crate) async fn sleep(&self, secs: u64) {
        self.http.sleep(secs).await
    }

    pub(crate) async fn send(
        &self,
        rule: &MirrorRule,
        repo: &str,
        method: Method,
        path: &str,
        accept: &[&str],
        now: u64,
    ) -> Result<UpstreamResponse, RegistryError> {
        let mut headers = HeaderMap::new();
        for a in accept {
            if let Ok(v) = HeaderValue::from_str(a) {
                headers.append(http::header::ACCEPT, v);
            }
        }
        let url = format!("{}/v2/{repo}/{path}", rule.base());
        self.send_to(rule, repo, "pull", method, url, headers, None, now).await
    }

    /// [`UpstreamClient::send`] for any URL of the upstream (an upload's `Location`), with the
    /// token scope's `actions` (`pull`, `pull,push`) and a body. A body is sent once: a request
    /// with one is not repeated after a 401 or a redirect (Err instead), so callers send a
    /// bodiless request of the same scope first (replication starts an upload before its PUT),
    /// which gets the credential.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_to(
        &self,
        rule: &MirrorRule,
        repo: &str,
        actions: &str,
        method: Method,
        mut url: String,
        headers: HeaderMap,
        mut body: Option<ByteStream>,
        now: u64,
    ) -> Result<UpstreamResponse, RegistryError> {
        let base = rule.base();
        let scope = format!("repository:{repo}:{actions}");
        let had_body = body.is_some();
        let mut credential = self.cached(base, &scope, now);
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            let mut req_headers = headers.clone();
            // Credentials only to the upstream's own origin (a redirect to storage carries its
            // own signature).
            if origin(&url) == origin(base) {
                if let Some(v) = credential.as_ref().and_then(|c| Self::authorization(rule, c)) {
                    req_headers.insert(AUTHORIZATION, v);
                }
            }
            let sent_body = body.take();
            let resent = had_body && sent_body.is_none();
            if resent {
                return Err(bad_gateway(format!("{method} {url}: the upstream asked again (auth or redirect) after the body was sent")));
            }
            let response = self
                .http
                .send(UpstreamRequest { method: method.clone(), url: url.clone(), headers: req_headers, body: sent_body })
                .await
                .map_err(|e| bad_gateway(format!("{method} {url}: {e}")))?;
            if response.status == StatusCode::UNAUTHORIZED && !challenged && origin(&url) == origin(base) {
                challenged = true;
                let challenge = crate::header_str(&response.headers, WWW_AUTHENTICATE.as_str()).unwrap_or("").to_owned();
                credential = Some(self.answer_challenge(rule, &challenge, &scope, now).await?);
                if let Some(c) = &credential {
                    self.remember(base, &scope, c.clone());
                }
                continue;
            }
            if response.status == StatusCode::UNAUTHORIZED || response.status == StatusCode::FORBIDDEN {
                return Err(bad_gateway(format!(
                    "{base} refused {} for {repo}; check the username and password",
                    if credential.is_some() { "the credentials" } else { "anonymous access" }
                )));
            }
            if response.status.is_redirection() && response.status != StatusCode::NOT_MODIFIED {
                let Some(location) = crate::header_str(&response.headers, LOCATION.as_str()) else {
                    return Err(bad_gateway(format!("{url} answered {} without a Location", response.status)));
                };
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(bad_gateway(format!(
                        "{base} redirected {url} more than {MAX_REDIRECTS} times (a redirect loop?)"
                    )));
                }
                url = resolve_location(&url, location);
                continue;
            }
            return Ok(response);
        }
    }

    /// Gets what a 401 challenge asks for: a token from its realm, or Basic credentials.
    async fn answer_challenge(&self, rule: &MirrorRule, challenge: &str, scope: &str, now: u64) -> Result<Credential, RegistryError> {
        let base = rule.base();
        match parse_challenge(challenge) {
            Some((scheme, params)) if scheme == "bearer" => {
                let realm = params.get("realm").filter(|r| r.starts_with("https://") || r.starts_with("http://"));
                let Some(realm) = realm else {
                    return Err(bad_gateway(format!("{base} asked for a token without a usable realm")));
                };
                // Built in a block: the serializer is not Send and must not live across an await.
                let query = {
                    let mut query = form_urlencoded::Serializer::new(String::new());
                    if let Some(service) = params.get("service") {
                        query.append_pair("service", service);
                    }
                    // The challenge names what the request that got it needs (a HEAD: pull), but
                    // the token is kept for the caller's scope (replication's pull,push) and
                    // reused by its PUTs, which cannot be sent twice: for the same repository,
                    // the caller's scope is asked for.
                    let repository = |s: &str| s.rsplit_once(':').map(|(r, _)| r.to_owned());
                    let asked = match params.get("scope") {
                        Some(theirs) if repository(theirs) != repository(scope) => theirs.as_str(),
                        _ => scope,
                    };
                    query.append_pair("scope", asked);
                    query.finish()
                };
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{sep}{query}");
                let mut headers = HeaderMap::new();
                if let Some(mut v) = basic_value(rule).and_then(|b| HeaderValue::from_str(&b).ok()) {
                    v.set_sensitive(true);
                    headers.insert(AUTHORIZATION, v);
                }
                let response = self
                    .http
                    .send(UpstreamRequest { method: Method::GET, url: url.clone(), headers, body: None })
                    .await
                    .map_err(|e| bad_gateway(format!("token service {realm}: {e}")))?;
                if !response.status.is_success() {
                    return Err(bad_gateway(format!(
                        "token service {realm} answered {}; check the username and password",
                        response.status
                    )));
                }
                let body = crate::body::read_limited(response.body, MAX_TOKEN_BYTES)
                    .await
                    .map_err(|e| bad_gateway(format!("token service {realm}: {}", e.message)))?;
                #[derive(serde::Deserialize)]
                struct TokenAnswer {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let answer: TokenAnswer = serde_json::from_slice(&body)
                    .map_err(|e| bad_gateway(format!("token service {realm} sent no token: {e}")))?;
                let Some(token) = answer.token.or(answer.access_token).filter(|t| !t.is_empty()) else {
                    return Err(bad_gateway(format!("token service {realm} sent no token")));
                };
                let lifetime = answer.expires_in.unwrap_or(DEFAULT_TOKEN_SECS);
                Ok(Credential::Bearer { token, expires: now + lifetime.saturating_sub(TOKEN_MARGIN_SECS).max(1) })
            }
            Some((scheme, _)) if scheme == "basic" && basic_value(rule).is_some() => Ok(Credential::Basic),
            Some((scheme, _)) if scheme == "basic" => Err(bad_gateway(format!(
                "{base} asks for a username and password; give them in the mirror rule"
            ))),
            _ => Err(bad_gateway(format!("{base} answered 401 with a challenge Berth does not know: {challenge:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_commas_in_quotes() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(scheme, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (scheme, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!((scheme.as_str(), p["realm"].as_str()), ("basic", "Registry Realm"));
    }

    #[test]
    fn locations_resolve_and_origins_compare() {
        assert_eq!(resolve_location("http://a:5/v2/x/blobs/d", "/y"), "http://a:5/y");
        assert_eq!(resolve_location("http://a/v2/x/blobs/d", "https://s3/o?s=1"), "https://s3/o?s=1");
        assert_eq!(resolve_location("http://a/v2/x/blobs/d?q", "e"), "http://a/v2/x/blobs/e");
        assert_eq!(origin("http://a:5/v2/x"), "http://a:5");
        assert_eq!(origin("http://a:5"), "http://a:5");
    }
}
