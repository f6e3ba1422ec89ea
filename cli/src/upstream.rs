//! Talking to a registry as a client: what `berth push` and `berth relay` share. A registry
//! handle that adds its bearer token to every request, failures as sentences that say what to
//! do next, the headers of the upload protocol, and the direct-upload extension's part URLs.

use serde::Deserialize;

use crate::token_client::TokenSource;

/// One repository on one registry, with the credentials to reach it. Tokens are scoped to a
/// repository, so a caller that talks to several (the relay) keeps one of these per repository.
pub struct Registry {
    pub http: reqwest::Client,
    pub base: String,
    pub repo: String,
    /// A token given on the command line, used as is.
    pub token: Option<String>,
    /// Else tokens from the registry's token endpoint, when it asks for them.
    pub tokens: Option<TokenSource>,
}

impl Registry {
    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{}", self.base, self.repo, path)
    }

    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{}", self.base, location)
        }
    }

    /// A request to the registry with its current token (a fresh one when the last is about to
    /// expire). Storage URLs are requested with `http` directly: they carry their own signature.
    pub async fn request(&self, method: reqwest::Method, url: &str) -> Result<reqwest::RequestBuilder, String> {
        let req = self.http.request(method, url);
        Ok(match (&self.token, &self.tokens) {
            (Some(t), _) => req.bearer_auth(t),
            (None, Some(source)) => req.bearer_auth(source.token().await?),
            (None, None) => req,
        })
    }

    /// A request without a body, sent; a failure to get any answer is explained (`what` names
    /// the step for the message).
    pub async fn send(&self, method: reqwest::Method, url: &str, what: &str) -> Result<reqwest::Response, String> {
        self.request(method, url).await?.send().await.map_err(|e| explain(what, &e))
    }
}

/// How `berth push` and `berth relay` authenticate to a registry: the same flags for both.
#[derive(clap::Args, Clone)]
pub struct Login {
    /// Bearer token for the registry, used as is (never sent to storage URLs). Without it,
    /// tokens come from the registry's token endpoint when it asks for them (anonymous, or with
    /// --username), one per repository.
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Log in to the token endpoint as this user (a robot, or `oidc` with a CI identity token).
    #[arg(long, env = "BERTH_USERNAME")]
    pub username: Option<String>,
    /// Read the password (or robot secret, or identity token) from the first line of stdin;
    /// without it, from BERTH_PASSWORD.
    #[arg(long)]
    pub password_stdin: bool,
}

impl Login {
    /// The user and password to log in with, if any (reads stdin or BERTH_PASSWORD).
    pub fn credentials(&self) -> Result<Option<(String, String)>, String> {
        credentials(self.username.as_deref(), self.password_stdin)
    }
}

/// `--username` with `--password-stdin` or BERTH_PASSWORD, as (user, password); None without
/// `--username`.
fn credentials(username: Option<&str>, password_stdin: bool) -> Result<Option<(String, String)>, String> {
    match (username, password_stdin) {
        (Some(user), true) => Ok(Some((user.to_owned(), read_password_line()?))),
        (Some(user), false) => match std::env::var("BERTH_PASSWORD") {
            Ok(password) => Ok(Some((user.to_owned(), password))),
            Err(_) => Err("--username needs --password-stdin (or BERTH_PASSWORD)".into()),
        },
        (None, true) => Err("--password-stdin needs --username".into()),
        (None, false) => Ok(None),
    }
}

pub fn read_password_line() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("reading the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err("no password on stdin".into());
    }
    Ok(password)
}

/// Whether `host[:port]/…` names this machine: docker talks plain HTTP to such registries
/// without being told, and so does `berth push`.
pub fn is_loopback(target: &str) -> bool {
    let authority = target.split('/').next().unwrap_or_default();
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A failed request as a sentence that says what to do next. reqwest's own text stops at
/// "error sending request for url (…)"; the cause (refused, TLS, DNS) is further down its chain.
pub fn explain(what: &str, err: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = e.source();
    }
    let cause = if causes.is_empty() { err.to_string() } else { causes.join(": ") };
    // Without the query: a presigned storage URL's query is its credential.
    let url = err.url().map(|u| format!("{}://{}{}", u.scheme(), u.authority(), u.path())).unwrap_or_default();
    let https = url.starts_with("https://");
    let lower = cause.to_ascii_lowercase();
    let hint = if https && (lower.contains("invalidcontenttype") || lower.contains("corrupt message") || lower.contains("wrong version number")) {
        // What rustls sees when an HTTP server answers its ClientHello in plain text.
        " — the registry seems to speak plain HTTP, not HTTPS: give it as http://HOST:PORT/REPO (or as HOST:PORT/REPO with --plain-http)"
    } else if lower.contains("connection refused") {
        " — nothing listens there: is the registry running, and are the host and port right?"
    } else if https && (lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")) {
        " — the TLS handshake failed: check the registry's certificate, or use --plain-http if it speaks plain HTTP"
    } else if err.is_timeout() {
        " — no answer in time: check the network, then run the same command again to resume"
    } else if lower.contains("dns") || lower.contains("failed to lookup") || lower.contains("name or service") {
        " — the registry's host name does not resolve: check the spelling"
    } else {
        ""
    };
    format!("{what} {url}: {cause}{hint}")
}

pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub async fn fail(what: &str, resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    format!("{what}: {status} {}", body.chars().take(500).collect::<String>())
}

pub fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Bytes received, from a `Range: 0-N` header (inclusive; `0-0` may also mean none).
pub fn offset_of(resp: &reqwest::Response) -> Option<u64> {
    let range = header(resp, "range")?;
    let end: u64 = range.split_once('-')?.1.trim().parse().ok()?;
    Some(if end == 0 { 0 } else { end + 1 })
}

/// The answer to `POST <location>/parts?first=N&count=M` (docs/protocol.md, direct uploads).
#[derive(Deserialize)]
pub struct PartUrls {
    pub parts: Vec<PartUrl>,
    /// Every part but the last must be at least this big (S3: 5 MiB).
    #[serde(default)]
    pub min_part_size: Option<u64>,
    #[serde(default)]
    pub max_part_size: Option<u64>,
    #[serde(default)]
    pub max_parts: Option<u32>,
    /// When the URLs stop working (unix seconds).
    #[serde(default)]
    pub expires: Option<u64>,
}

#[derive(Deserialize)]
pub struct PartUrl {
    pub number: u32,
    pub url: String,
}
