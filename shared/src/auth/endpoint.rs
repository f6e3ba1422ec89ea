//! The token endpoint, as docker, containerd, podman, skopeo and oras call it:
//! `GET /token?service=…&scope=…` with Basic credentials (or none, for anonymous pull), and the
//! OAuth2 form `POST /token` with `grant_type=password` or `refresh_token`. CI presents an
//! OIDC identity token as the password of user `oidc`, or with the RFC 8693 token-exchange grant.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{AUTHORIZATION, CACHE_CONTROL, RETRY_AFTER};
use http::{Method, StatusCode};
use serde_json::json;

use super::audit::{client_of, refused_login, Safe, TokenEvent};
use super::oidc::OidcError;
use super::policy::Principal;
use super::principals::OIDC_USERNAME;
use super::scope::{parse_scopes, AccessEntry};
use super::token::{BerthClaims, MAX_TOKEN_BYTES, USE_ACCESS, USE_REFRESH};
use super::Auth;
use crate::error::{oci, ErrorCode, RegistryError, Result};
use crate::reply::Reply;
use crate::{query_of, query_param, Request, RequestContext};

/// Form bodies are small: an identity token plus a few fields.
const MAX_FORM_BYTES: usize = 64 * 1024;
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

enum Grant {
    Anonymous,
    Password { username: String, password: String },
    Refresh(String),
}

impl Grant {
    fn name(&self) -> &'static str {
        match self {
            Grant::Anonymous => "anonymous",
            Grant::Password { username, .. } if username == OIDC_USERNAME => "oidc",
            Grant::Password { .. } => "password",
            Grant::Refresh(_) => "refresh_token",
        }
    }
}

/// Who the caller turned out to be.
struct Authenticated {
    principal: Principal,
    ttl_secs: u64,
    /// Users and robots may hold a refresh token (docker login stores it); CI identities may not.
    refreshable: bool,
    identity: Option<String>,
}

impl Auth {
    pub(crate) async fn token_endpoint(&self, req: Request, ctx: &RequestContext) -> Reply {
        match self.issue(req, ctx).await {
            Ok(reply) => reply,
            Err(err) => Reply::error(err),
        }
    }

    async fn issue(&self, req: Request, ctx: &RequestContext) -> Result<Reply> {
        let client = client_of(&req);
        let post = req.method() == Method::POST;
        if !post && req.method() != Method::GET {
            return Err(oci(ErrorCode::Unsupported, "the token endpoint takes GET or POST")
                .with_status(StatusCode::METHOD_NOT_ALLOWED));
        }
        let (parts, body) = req.into_parts();
        let params: Vec<(String, String)> = if post {
            let form = crate::body::read_limited(body, MAX_FORM_BYTES).await.map_err(|e| {
                let message = format!("the token request form is unreadable or over {MAX_FORM_BYTES} bytes");
                oci(ErrorCode::Unsupported, message).with_status(if e.status.is_client_error() { e.status } else { StatusCode::BAD_REQUEST })
            })?;
            form_urlencoded::parse(&form).into_owned().collect()
        } else {
            query_of(parts.uri.query())
        };
        let param = |k: &str| query_param(&params, k);
        if let Some(service) = param("service") {
            if service != self.service {
                return Err(bad_request(format!("unknown service {service:?}: this registry is {:?}", self.service)));
            }
        }
        let grant = if post {
            match param("grant_type") {
                Some("password") => Grant::Password {
                    username: param("username").ok_or_else(|| bad_request("username is missing".into()))?.to_owned(),
                    password: param("password").ok_or_else(|| bad_request("password is missing".into()))?.to_owned(),
                },
                Some("refresh_token") => Grant::Refresh(
                    param("refresh_token").ok_or_else(|| bad_request("refresh_token is missing".into()))?.to_owned(),
                ),
                Some(TOKEN_EXCHANGE) => Grant::Password {
                    username: OIDC_USERNAME.to_owned(),
                    password: param("subject_token").ok_or_else(|| bad_request("subject_token is missing".into()))?.to_owned(),
                },
                Some(other) => return Err(bad_request(format!("unsupported grant_type {other:?}"))),
                None => return Err(bad_request("grant_type is missing".into())),
            }
        } else {
            basic_credentials(&parts.headers)?
        };
        let grant_name = grant.name();
        // Cheap refusals first: nothing below costs Argon2 for a request that asks too much.
        let requested = parse_scopes(params.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()))
            .map_err(bad_request)?;
        // Password logins (users, robots) are limited per client and per account, before any
        // password work; OIDC tokens and refresh tokens are signed, not guessable.
        let account = match &grant {
            Grant::Password { username, .. } if username != OIDC_USERNAME => Some(username.clone()),
            _ => None,
        };
        if let Some(account) = &account {
            if let Err(wait) = self.limits.attempt(&client, account, ctx.now) {
                refused_login(account, grant_name, &client, "too many failed logins", ctx.now);
                return Err(oci(
                    ErrorCode::TooManyRequests,
                    format!("too many failed logins from this address or for this account; retry in {wait} s"),
                )
                .with_header(RETRY_AFTER, wait.to_string()));
            }
        }
        let who = match self.authenticate(grant, ctx.now).await {
            Ok(who) => who,
            Err((err, subject)) => {
                refused_login(&subject, grant_name, &client, &err.message, ctx.now);
                return Err(err);
            }
        };
        if let Some(account) = &account {
            self.limits.succeeded(&client, account);
        }

        let granted = self.policy.grant(&who.principal, &requested);
        let jti = hex::encode(ctx.random);
        let claims = |token_use: &str, jti: String, access: Vec<AccessEntry>, cred: Option<String>| BerthClaims {
            iss: self.issuer.clone(),
            sub: who.principal.subject.clone(),
            aud: self.service.clone(),
            jti,
            token_use: token_use.to_owned(),
            access,
            cred,
        };
        let token = self
            .keys
            .sign(claims(USE_ACCESS, jti.clone(), granted.clone(), None), ctx.now, who.ttl_secs)
            .map_err(|e| oci(ErrorCode::Unknown, e))?;
        // The gate refuses larger tokens unread: issuing one would only fail later, obscurely.
        if token.len() > MAX_TOKEN_BYTES {
            let message = format!(
                "the access granted for these {} scopes makes a {}-byte token, over the {MAX_TOKEN_BYTES} bytes \
                 this registry accepts; ask for fewer repositories per token",
                granted.len(),
                token.len()
            );
            refused_login(&who.principal.subject, grant_name, &client, &message, ctx.now);
            return Err(bad_request(message));
        }
        let offline = (post && param("access_type") == Some("offline")) || (!post && param("offline_token") == Some("true"));
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": who.ttl_secs,
            "issued_at": super::token::timestamp(ctx.now).to_rfc3339(),
        });
        if offline && who.refreshable {
            let cred = self.directory.credential_fingerprint(&who.principal.subject);
            let refresh = self
                .keys
                .sign(claims(USE_REFRESH, format!("{jti}-r"), Vec::new(), cred), ctx.now, self.refresh_ttl_secs)
                .map_err(|e| oci(ErrorCode::Unknown, e))?;
            body["refresh_token"] = json!(refresh);
        }
        TokenEvent {
            subject: &who.principal.subject,
            identity: who.identity.as_deref(),
            grant: grant_name,
            requested: scopes_text(&requested),
            granted: scopes_text(&granted),
            client: &client,
            jti: &jti,
            expires_in: who.ttl_secs,
        }
        .record(ctx.now);
        Ok(Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default())
            .header(CACHE_CONTROL, "no-store"))
    }

    async fn authenticate(&self, grant: Grant, now: u64) -> std::result::Result<Authenticated, (RegistryError, String)> {
        let user = |principal: Principal| Authenticated { principal, ttl_secs: self.ttl_secs, refreshable: true, identity: None };
        match grant {
            Grant::Anonymous => Ok(Authenticated { refreshable: false, ..user(Principal::anonymous()) }),
            Grant::Password { username, password } if username == OIDC_USERNAME => {
                match self.oidc.exchange(&password, now).await {
                    Ok(x) => Ok(Authenticated {
                        principal: x.principal,
                        ttl_secs: x.ttl_secs,
                        refreshable: false,
                        identity: Some(x.identity),
                    }),
                    Err(e) => Err((oidc_refusal(e), OIDC_USERNAME.to_owned())),
                }
            }
            Grant::Password { username, password } => {
                match self.directory.check(&username, &password).finish(self.cpu.as_deref()).await {
                    Some(principal) => Ok(user(principal)),
                    None => Err((unauthorized("invalid username or password"), username)),
                }
            }
            Grant::Refresh(token) => {
                let claims = self
                    .keys
                    .verify(&token, now, &self.issuer, &self.service, USE_REFRESH)
                    .map_err(|e| (unauthorized(&format!("refresh token refused: {e}")), "-".to_owned()))?;
                // A reset password, a new robot secret or a removed (or re-created) account
                // revokes the refresh tokens issued before.
                match self.directory.credential_fingerprint(&claims.sub) {
                    None => return Err((unauthorized("refresh token refused: the account no longer exists"), claims.sub)),
                    Some(current) if claims.cred.as_deref() != Some(current.as_str()) => {
                        let message = "refresh token refused: the account's password or secret changed since; log in again";
                        return Err((unauthorized(message), claims.sub));
                    }
                    Some(_) => {}
                }
                Ok(user(self.principal(&claims.sub)))
            }
        }
    }
}

fn basic_credentials(headers: &http::HeaderMap) -> Result<Grant> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(Grant::Anonymous);
    };
    let malformed = || unauthorized("malformed Basic credentials");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(unauthorized("the token endpoint takes Basic credentials"));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (username, password) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Grant::Password { username: username.to_owned(), password: password.to_owned() })
}

fn oidc_refusal(e: OidcError) -> RegistryError {
    match e {
        OidcError::Invalid(m) => unauthorized(&m),
        OidcError::Denied(m) => oci(ErrorCode::Denied, m),
        OidcError::Unavailable(m) => {
            // The message quotes what the issuer sent: escaped like every untrusted log value.
            tracing::warn!(reason = %Safe(&m), "OIDC issuer keys unavailable");
            oci(ErrorCode::Unknown, m).with_status(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

fn unauthorized(message: &str) -> RegistryError {
    oci(ErrorCode::Unauthorized, message)
}

fn bad_request(message: String) -> RegistryError {
    oci(ErrorCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
}

fn scopes_text(entries: &[AccessEntry]) -> String {
    entries.iter().map(AccessEntry::to_scope).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::auth::{hash_password, key_pair_from_seed, AuthConfig, ClientAddr, CpuJob, CpuPool};
    use crate::body::Body;

    const PW: &str = "alice-password";
    const NOW: u64 = 1_700_000_000;

    /// Counts the Argon2 checks that reach the adapter's pool.
    struct Counting(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl CpuPool for Counting {
        async fn run(&self, job: CpuJob) -> bool {
            self.0.fetch_add(1, Ordering::SeqCst);
            job()
        }
    }

    /// Alice may do anything; `salt` stands for her password hash (a reset re-hashes it).
    fn auth(salt: u8, extra: &str) -> Auth {
        let (private, _) = key_pair_from_seed(&[3; 32]).unwrap();
        let hash = hash_password(PW, &[salt; 16]).unwrap();
        let config = AuthConfig::from_toml(&format!(
            "{extra}\n[[token.keys]]\nkid = \"k\"\nprivate_key = \"{private}\"\n\
             [[users]]\nname = \"alice\"\npassword_hash = '{hash}'\n\
             [[access]]\nrepositories = [\"**\"]\nprincipals = [\"user:alice\"]\nactions = [\"*\"]\n"
        ))
        .unwrap();
        Auth::new(&config).unwrap()
    }

    fn get(uri: &str, credentials: Option<(&str, &str)>, client: &str) -> Request {
        let mut b = http::Request::builder().uri(uri).extension(ClientAddr(client.to_owned()));
        if let Some((u, p)) = credentials {
            b = b.header(AUTHORIZATION, format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))));
        }
        b.body(crate::body::empty_stream()).unwrap()
    }

    fn post(form: String) -> Request {
        let body: crate::storage::ByteStream =
            Box::pin(futures_util::stream::once(async move { Ok(bytes::Bytes::from(form)) }));
        http::Request::builder().method("POST").uri("/token").body(body).unwrap()
    }

    async fn call(auth: &Auth, req: Request, now: u64) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let ctx = RequestContext { now, random: [7; 16] };
        let response = auth.token_endpoint(req, &ctx).await.into_response(false);
        let (parts, body) = response.into_parts();
        let Body::Full(bytes) = body else { panic!("token endpoint answered without a body") };
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    /// Refresh tokens (30 days) used to survive a password reset or a re-created account.
    #[tokio::test]
    async fn a_password_reset_revokes_refresh_tokens() {
        let before = auth(1, "");
        let (status, _, body) = call(&before, get("/token?offline_token=true", Some(("alice", PW)), "c"), NOW).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();
        let form = || post(format!("grant_type=refresh_token&refresh_token={refresh}"));
        // The same credential (a restart, another instance): still good.
        assert_eq!(call(&before, form(), NOW + 60).await.0, StatusCode::OK);
        assert_eq!(call(&auth(1, ""), form(), NOW + 60).await.0, StatusCode::OK);
        // Reset: the new hash has a new salt.
        let (status, _, body) = call(&auth(2, ""), form(), NOW + 60).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.to_string().contains("changed"), "{body}");
    }

    /// Guessing ran at ~50/s with no limit. Now 429 with Retry-After, decided before Argon2.
    #[tokio::test]
    async fn failed_logins_are_limited_before_any_argon2() {
        let checks = Arc::new(AtomicUsize::new(0));
        let limits = "[login]\nmax_failures_per_client = 3\nmax_failures_per_account = 5\nwindow_secs = 60";
        let a = auth(1, limits).with_cpu_pool(Box::new(Counting(checks.clone())));
        let login = |user: &'static str, pw: &'static str, client: &'static str, now: u64| {
            let a = &a;
            async move { call(a, get("/token", Some((user, pw)), client), now).await }
        };
        for _ in 0..3 {
            assert_eq!(login("alice", "guess", "10.0.0.1", NOW).await.0, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(checks.load(Ordering::SeqCst), 3, "password checks run on the adapter's pool");
        // The client is over its limit: refused even with the right password, without Argon2.
        let (status, headers, body) = login("alice", PW, "10.0.0.1", NOW + 20).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
        assert_eq!(headers.get(RETRY_AFTER).unwrap(), "40");
        assert_eq!(login("mallory", "x", "10.0.0.1", NOW + 20).await.0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(checks.load(Ordering::SeqCst), 3);
        // Another client: a right password works (and does not count); two more failures put
        // alice's account at its limit of 5 for every client.
        assert_eq!(login("alice", PW, "10.0.0.2", NOW + 20).await.0, StatusCode::OK);
        for _ in 0..2 {
            assert_eq!(login("alice", "guess", "10.0.0.2", NOW + 20).await.0, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(login("alice", PW, "10.0.0.3", NOW + 30).await.0, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(login("bob", "x", "10.0.0.3", NOW + 30).await.0, StatusCode::UNAUTHORIZED);
        // The window closes.
        assert_eq!(login("alice", PW, "10.0.0.1", NOW + 60).await.0, StatusCode::OK);
    }

    /// Thousands of scopes cost CPU and log; tokens over the gate's size limit were issued.
    #[tokio::test]
    async fn scope_count_and_token_size_are_bounded() {
        let a = auth(1, "[login]\nmax_failures_per_client = 0\nmax_failures_per_account = 0");
        let scopes = |n: usize, len: usize| -> String {
            (0..n).map(|i| format!("&scope=repository:{}{i}:pull", "r".repeat(len))).collect()
        };
        let (status, _, body) = call(&a, get(&format!("/token?{}", scopes(65, 1)), None, "c"), NOW).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.to_string().contains("at most 64 scopes"), "{body}");
        let (status, _, _) = call(&a, get(&format!("/token?{}", scopes(64, 1)), None, "c"), NOW).await;
        assert_eq!(status, StatusCode::OK);
        // 60 long names granted: the token would be far over MAX_TOKEN_BYTES.
        let (status, _, body) = call(&a, get(&format!("/token?{}", scopes(60, 200)), Some(("alice", PW)), "c"), NOW).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains("fewer repositories"), "{body}");
        let (status, _, body) = call(&a, get(&format!("/token?{}", scopes(20, 100)), Some(("alice", PW)), "c"), NOW).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["token"].as_str().unwrap().len() <= MAX_TOKEN_BYTES);
    }
}
