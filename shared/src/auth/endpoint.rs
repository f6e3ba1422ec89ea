//! The token endpoint, as docker, containerd, podman, skopeo and oras call it:
//! `GET /token?service=…&scope=…` with Basic credentials (or none, for anonymous pull), and the
//! OAuth2 form `POST /token` with `grant_type=password` or `refresh_token`. CI presents an
//! OIDC identity token as the password of user `oidc`, or with the RFC 8693 token-exchange grant.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{AUTHORIZATION, CACHE_CONTROL};
use http::{Method, StatusCode};
use serde_json::json;

use super::audit::{client_of, refused_login, TokenEvent};
use super::oidc::OidcError;
use super::policy::Principal;
use super::principals::OIDC_USERNAME;
use super::scope::{parse_scopes, AccessEntry};
use super::token::{BerthClaims, USE_ACCESS, USE_REFRESH};
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
        let who = match self.authenticate(grant, ctx.now).await {
            Ok(who) => who,
            Err((err, subject)) => {
                refused_login(&subject, grant_name, &client, &err.message, ctx.now);
                return Err(err);
            }
        };

        let requested = parse_scopes(params.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()));
        let granted = self.policy.grant(&who.principal, &requested);
        let jti = hex::encode(ctx.random);
        let claims = |token_use: &str, jti: String, access: Vec<AccessEntry>| BerthClaims {
            iss: self.issuer.clone(),
            sub: who.principal.subject.clone(),
            aud: self.service.clone(),
            jti,
            token_use: token_use.to_owned(),
            access,
        };
        let token = self
            .keys
            .sign(claims(USE_ACCESS, jti.clone(), granted.clone()), ctx.now, who.ttl_secs)
            .map_err(|e| oci(ErrorCode::Unknown, e))?;
        let offline = (post && param("access_type") == Some("offline")) || (!post && param("offline_token") == Some("true"));
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": who.ttl_secs,
            "issued_at": super::token::timestamp(ctx.now).to_rfc3339(),
        });
        if offline && who.refreshable {
            let refresh = self
                .keys
                .sign(claims(USE_REFRESH, format!("{jti}-r"), Vec::new()), ctx.now, self.refresh_ttl_secs)
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
            Grant::Password { username, password } => match self.directory.authenticate(&username, &password) {
                Some(principal) => Ok(user(principal)),
                None => Err((unauthorized("invalid username or password"), username)),
            },
            Grant::Refresh(token) => {
                let claims = self
                    .keys
                    .verify(&token, now, &self.issuer, &self.service, USE_REFRESH)
                    .map_err(|e| (unauthorized(&format!("refresh token refused: {e}")), "-".to_owned()))?;
                if !self.directory.exists(&claims.sub) {
                    return Err((unauthorized("refresh token refused: the account no longer exists"), claims.sub));
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
            tracing::warn!("{m}");
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
