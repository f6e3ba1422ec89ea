//! The check every registry request passes first, before dispatch, storage or any cache: which
//! scope the request needs, whether its bearer token (or anonymous access) grants it, and the
//! 401 challenge or 403 when not.

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Method, StatusCode};

use super::audit::Pending;
use super::policy::Principal;
use super::scope::{AccessEntry, CATALOG, DELETE, PULL, PUSH, REGISTRY, REPOSITORY};
use super::token::{BerthClaims, USE_ACCESS};
use super::{Auth, TOKEN_PATH};
use crate::error::{oci, ErrorCode, RegistryError};
use crate::reply::Reply;
use crate::routes::Route;
use crate::storage::{BlobStore, MetaStore};
use crate::{header_str, query_of, query_param, Parts, Registry, Request, RequestContext};

pub(crate) enum Gate {
    /// Go on to dispatch; record the audit event (a push or delete) once answered. The flag
    /// says the content is not public: shared caches must not keep it (see [`mark_private`]).
    Pass(Request, Option<Pending>, bool),
    /// Answered here: a refusal, or the token endpoint.
    Answer(Reply),
}

/// What a request needs to be allowed.
enum Need {
    /// Unknown endpoint or method: dispatch answers 404/405 and touches nothing.
    Nothing,
    /// `/v2/`: any valid token, so that clients learn where to log in.
    Login,
    Resource { kind: &'static str, name: String, action: &'static str },
    /// A blob HEAD: what every client sends first when it pushes (does the layer exist?). Its
    /// challenge offers `pull,push` so that clients which reuse the first token for the whole
    /// push (oras-py) get push too when the policy allows it; the token endpoint still grants
    /// only what the policy allows.
    BlobProbe { name: String },
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    pub(crate) async fn gate(&self, req: Request, ctx: &RequestContext) -> Gate {
        let pending = Pending::for_request(&req);
        let Some(auth) = self.auth.as_deref() else {
            return Gate::Pass(req, pending.map(|p| p.by("-")), false);
        };
        if req.uri().path() == TOKEN_PATH {
            return Gate::Answer(auth.token_endpoint(req, ctx).await);
        }
        let (mut parts, body) = req.into_parts();
        match auth.authorize(&mut parts, ctx.now) {
            Ok((subject, private)) => {
                Gate::Pass(Request::from_parts(parts, body), pending.map(|p| p.by(&subject)), private)
            }
            Err((err, subject)) => {
                if let Some(p) = pending {
                    p.by(&subject).record(err.status, ctx.now);
                }
                Gate::Answer(Reply::error(err))
            }
        }
    }
}

impl Auth {
    /// The subject allowed to go on and whether the resource is private (not anonymously
    /// pullable), or the refusal (and who was refused, for the audit log).
    fn authorize(&self, parts: &mut Parts, now: u64) -> Result<(String, bool), (RegistryError, String)> {
        let need = need_of(parts);
        let claims = match bearer(parts) {
            Some(token) => Some(
                self.keys
                    .verify(token, now, &self.issuer, &self.service, USE_ACCESS)
                    .map_err(|reason| (self.challenge(parts, &need, Some("invalid_token"), reason), "-".to_owned()))?,
            ),
            None => None,
        };
        let subject = claims.as_ref().map_or(super::policy::ANONYMOUS.to_owned(), |c| c.sub.clone());
        let (kind, name, action) = match &need {
            Need::Nothing => return Ok((subject, true)),
            Need::Login if claims.is_some() => return Ok((subject, true)),
            Need::Login => {
                let err = self.challenge(parts, &need, None, "authentication required".into());
                return Err((err, subject));
            }
            Need::Resource { kind, name, action } => (*kind, name.as_str(), *action),
            Need::BlobProbe { name } => (REPOSITORY, name.as_str(), PULL),
        };
        let principal = claims.as_ref().map_or_else(Principal::anonymous, |c| self.principal(&c.sub));
        let granted = match &claims {
            Some(c) => c.access.iter().any(|e| e.allows(kind, name, action)),
            // No token at all: what anonymous callers may do needs none (public pull).
            None => self.policy_allows(&principal, kind, name, action),
        };
        if !granted {
            let err = if claims.is_some() && !principal.is_anonymous() && !self.policy_allows(&principal, kind, name, action) {
                // Logged in, and no token would allow it: asking again is pointless.
                oci(ErrorCode::Denied, format!("{} may not {action} {kind} {name}", principal.subject))
                    .with_detail(detail(kind, name, action))
            } else {
                let error = claims.is_some().then_some("insufficient_scope");
                self.challenge(parts, &need, error, format!("authentication required to {action} {kind} {name}"))
            };
            return Err((err, subject));
        }
        self.check_mount_source(parts, claims.as_ref(), &principal);
        let private = !self.policy_allows(&Principal::anonymous(), kind, name, PULL);
        Ok((subject, private))
    }

    fn policy_allows(&self, who: &Principal, kind: &str, name: &str, action: &str) -> bool {
        match kind {
            REPOSITORY => self.policy.repository_actions(who, name).contains(&action),
            _ => self.policy.may_list_catalog(who),
        }
    }

    /// A cross-repository mount reads the source repository: without pull there, drop the
    /// mount so the request becomes a plain upload start (the spec's fallback), leaking nothing.
    fn check_mount_source(&self, parts: &mut Parts, claims: Option<&BerthClaims>, who: &Principal) {
        let query = query_of(parts.uri.query());
        let (Some(_), Some(from)) = (query_param(&query, "mount"), query_param(&query, "from")) else {
            return;
        };
        let allowed = match claims {
            Some(c) => c.access.iter().any(|e| e.allows(REPOSITORY, from, PULL)),
            None => self.policy_allows(who, REPOSITORY, from, PULL),
        };
        if allowed {
            return;
        }
        let kept: Vec<(String, String)> =
            query.into_iter().filter(|(k, _)| k != "mount" && k != "from").collect();
        let mut path_and_query = parts.uri.path().to_owned();
        if !kept.is_empty() {
            path_and_query.push('?');
            path_and_query.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(kept).finish());
        }
        if let Ok(uri) = path_and_query.parse() {
            parts.uri = uri;
        }
    }

    /// 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` telling the client where
    /// to get a token for exactly what this request needs.
    fn challenge(&self, parts: &Parts, need: &Need, error: Option<&str>, message: String) -> RegistryError {
        let mut value = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm_for(parts), self.service);
        let mut err = oci(ErrorCode::Unauthorized, message);
        let resource = match need {
            Need::Resource { kind, name, action } => Some((*kind, name.as_str(), *action, *action == PUSH)),
            Need::BlobProbe { name } => Some((REPOSITORY, name.as_str(), PULL, true)),
            _ => None,
        };
        if let Some((kind, name, action, with_push)) = resource {
            let actions: &[&str] = if with_push { &[PULL, PUSH] } else { &[action] };
            // Names in a challenge are validated repository names; anything else is not echoed.
            if kind == REGISTRY || crate::names::RepoName::parse(name).is_ok() {
                value.push_str(&format!(",scope=\"{}\"", AccessEntry::new(kind, name, actions).to_scope()));
            }
            err = err.with_detail(detail(kind, name, action));
        }
        if let Some(error) = error {
            value.push_str(&format!(",error=\"{error}\""));
        }
        err.with_status(StatusCode::UNAUTHORIZED).with_header(WWW_AUTHENTICATE, value)
    }

    /// The token endpoint's URL: from the config, else from the request's Host (and
    /// X-Forwarded-Proto), so the same config works behind any runtime or proxy.
    pub(crate) fn realm_for(&self, parts: &Parts) -> String {
        if let Some(realm) = &self.realm {
            return realm.clone();
        }
        let scheme = match header_str(&parts.headers, "x-forwarded-proto").map(|p| p.split(',').next().unwrap_or("").trim()) {
            Some("http") => "http",
            Some("https") => "https",
            _ => parts.uri.scheme_str().filter(|s| *s == "http" || *s == "https").unwrap_or(self.default_scheme),
        };
        let host = header_str(&parts.headers, "host")
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
            .unwrap_or("localhost");
        format!("{scheme}://{host}{TOKEN_PATH}")
    }
}

/// Content of a private repository is digest-addressed and immutable like any other, but only
/// the client may cache it: `public` becomes `private`, so a CDN or proxy never serves it to
/// someone else.
pub(crate) fn mark_private(response: &mut crate::Response) {
    let Some(value) = response.headers().get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if let Some(rest) = value.strip_prefix("public") {
        if let Ok(v) = http::HeaderValue::from_str(&format!("private{rest}")) {
            response.headers_mut().insert(http::header::CACHE_CONTROL, v);
        }
    }
}

fn detail(kind: &str, name: &str, action: &str) -> serde_json::Value {
    serde_json::json!([{ "Type": kind, "Name": name, "Action": action }])
}

/// The bearer token of the Authorization header. Other schemes (Basic) are ignored: registry
/// requests authenticate with tokens; credentials go to the token endpoint.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn need_of(parts: &Parts) -> Need {
    let Some(route) = Route::parse(parts.uri.path()) else {
        return Need::Nothing;
    };
    let method = &parts.method;
    let read = method == Method::GET || method == Method::HEAD;
    let repo = |name: &str, action| Need::Resource { kind: REPOSITORY, name: name.to_owned(), action };
    match route {
        Route::Base if read => Need::Login,
        Route::Catalog if method == Method::GET => Need::Resource { kind: REGISTRY, name: CATALOG.to_owned(), action: "*" },
        Route::Tags { name } | Route::Referrers { name, .. } if method == Method::GET => repo(&name, PULL),
        Route::Blob { name, .. } if method == Method::HEAD => Need::BlobProbe { name },
        Route::Manifest { name, .. } | Route::Blob { name, .. } if read => repo(&name, PULL),
        Route::Manifest { name, .. } if method == Method::PUT => repo(&name, PUSH),
        Route::Manifest { name, .. } | Route::Blob { name, .. } if method == Method::DELETE => repo(&name, DELETE),
        Route::UploadStart { name } if method == Method::POST => repo(&name, PUSH),
        Route::Upload { name, .. } => repo(&name, PUSH),
        _ => Need::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{key_pair_from_seed, AuthConfig};

    fn auth(extra: &str) -> Auth {
        let (private, _) = key_pair_from_seed(&[3; 32]).unwrap();
        let config = AuthConfig::from_toml(&format!(
            "[token]\n{extra}\n[[token.keys]]\nkid = \"k\"\nprivate_key = \"{private}\"\n\
             [[access]]\nrepositories = [\"pub/**\"]\npublic = true\n"
        ))
        .unwrap();
        Auth::new(&config).unwrap()
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn realm_follows_config_proxy_and_host() {
        let a = auth("").with_default_scheme("http");
        assert_eq!(a.realm_for(&parts("GET", "/v2/", &[("host", "r.example:5000")])), "http://r.example:5000/token");
        let behind = parts("GET", "/v2/", &[("host", "r.example"), ("x-forwarded-proto", "https, http")]);
        assert_eq!(a.realm_for(&behind), "https://r.example/token");
        // A Host that could break out of the quoted challenge is not echoed.
        assert_eq!(a.realm_for(&parts("GET", "/v2/", &[("host", "evil\",x=\"")])), "http://localhost/token");
        let fixed = auth("realm = \"https://auth.example/token\"");
        assert_eq!(fixed.realm_for(&parts("GET", "/v2/", &[("host", "x")])), "https://auth.example/token");
    }

    #[test]
    fn every_endpoint_needs_its_action() {
        let action = |method: &str, uri: &str| match need_of(&parts(method, uri, &[])) {
            Need::Resource { kind, name, action } => format!("{kind}:{name}:{action}"),
            Need::BlobProbe { name } => format!("probe:{name}"),
            Need::Login => "login".into(),
            Need::Nothing => "nothing".into(),
        };
        assert_eq!(action("GET", "/v2/"), "login");
        assert_eq!(action("GET", "/v2/_catalog"), "registry:catalog:*");
        assert_eq!(action("GET", "/v2/a/b/tags/list"), "repository:a/b:pull");
        assert_eq!(action("HEAD", "/v2/a/manifests/v1"), "repository:a:pull");
        assert_eq!(action("PUT", "/v2/a/manifests/v1"), "repository:a:push");
        assert_eq!(action("DELETE", "/v2/a/manifests/v1"), "repository:a:delete");
        assert_eq!(action("GET", "/v2/a/blobs/sha256:x"), "repository:a:pull");
        assert_eq!(action("HEAD", "/v2/a/blobs/sha256:x"), "probe:a");
        assert_eq!(action("DELETE", "/v2/a/blobs/sha256:x"), "repository:a:delete");
        assert_eq!(action("POST", "/v2/a/blobs/uploads/"), "repository:a:push");
        assert_eq!(action("GET", "/v2/a/blobs/uploads/id"), "repository:a:push");
        assert_eq!(action("PATCH", "/v2/a/blobs/uploads/id"), "repository:a:push");
        assert_eq!(action("GET", "/v2/a/referrers/sha256:x"), "repository:a:pull");
        assert_eq!(action("GET", "/elsewhere"), "nothing");
    }

    #[test]
    fn anonymous_access_and_challenges() {
        let a = auth("");
        assert_eq!(a.authorize(&mut parts("GET", "/v2/pub/x/manifests/v1", &[]), 1000).unwrap(), ("anonymous".to_string(), false));
        let (err, who) = a.authorize(&mut parts("GET", "/v2/priv/manifests/v1", &[("host", "h")]), 1000).unwrap_err();
        assert_eq!((err.status, who.as_str()), (StatusCode::UNAUTHORIZED, "anonymous"));
        let challenge = &err.headers.iter().find(|(n, _)| n == WWW_AUTHENTICATE).unwrap().1;
        assert_eq!(challenge, "Bearer realm=\"https://h/token\",service=\"berth\",scope=\"repository:priv:pull\"");
        let (err, _) = a.authorize(&mut parts("GET", "/v2/pub/x/tags/list", &[("authorization", "Bearer nope")]), 1000).unwrap_err();
        assert!(err.headers.iter().any(|(_, v)| v.contains("error=\"invalid_token\"")));
    }
}
