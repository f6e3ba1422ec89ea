//! The check every registry request passes first, before dispatch, storage or any cache: which
//! scope the request needs, whether its bearer token (or anonymous access) grants it, and the
//! 401 challenge or 403 when not.

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::StatusCode;

use super::policy::Principal;
use super::scope::{AccessEntry, CATALOG, PULL, PUSH, REGISTRY, REPOSITORY};
use super::token::USE_ACCESS;
use super::{Auth, TOKEN_PATH};
use crate::error::{oci, ErrorCode, RegistryError};
use crate::reply::Reply;
use crate::routes::{Access, Action, Endpoint};
use crate::storage::{BlobStore, MetaStore};
use crate::{header_str, query_of, query_param, Parts, Registry, Request, RequestContext};

pub(crate) enum Gate {
    /// Go on to dispatch, as the subject named (for the request's event).
    Pass(Request, String, Grant),
    /// Answered here: a refusal, and who was refused (for the request's event).
    Answer(Reply, String),
}

/// What the gate decided beyond "go on", handed to dispatch as a value (never by editing the
/// request): dispatch acts on exactly what was authorized.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The content is not public: shared caches must not keep it (see [`mark_private`]).
    pub private: bool,
    /// A cross-repository mount may read its `from` repository. When false the mount is not
    /// attempted and the request is a plain upload start (the spec's fallback), leaking nothing.
    pub mount_source_readable: bool,
    /// Who an [`Access::Anyone`] answer is for (dispatch filters by their rights); `None` when
    /// auth is off (everything is open) or the endpoint needs no filtering.
    pub caller: Option<Principal>,
}

impl Grant {
    /// No auth configured: everything is open.
    const OPEN: Grant = Grant { private: false, mount_source_readable: true, caller: None };
}

/// The `?mount=<digest>&from=<repo>` of an upload start, as dispatch reads it: the gate
/// authorizes the very string that dispatch will mount from.
pub(crate) fn mount_source(query: &[(String, String)]) -> Option<&str> {
    query_param(query, "mount")?;
    query_param(query, "from")
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    pub(crate) async fn gate(&self, req: Request, endpoint: &Endpoint, ctx: &RequestContext) -> Gate {
        let Some(auth) = self.auth.as_deref() else {
            return Gate::Pass(req, "-".to_owned(), Grant::OPEN);
        };
        let (parts, body) = req.into_parts();
        match auth.authorize(&parts, endpoint, ctx.now) {
            Ok((subject, grant)) => Gate::Pass(Request::from_parts(parts, body), subject, grant),
            Err((err, subject)) => Gate::Answer(Reply::error(err), subject),
        }
    }
}

impl Auth {
    /// The subject allowed to go on and what it was granted, or the refusal (and who was
    /// refused, for the audit log).
    fn authorize(&self, parts: &Parts, endpoint: &Endpoint, now: u64) -> Result<(String, Grant), (RegistryError, String)> {
        let access = endpoint.access();
        let query = query_of(parts.uri.query());
        let mount_from = match endpoint {
            Endpoint::UploadStart { .. } => mount_source(&query),
            _ => None,
        };
        let claims = match bearer(parts) {
            Some(token) => Some(
                self.keys
                    .verify(token, now, &self.issuer, &self.service, USE_ACCESS)
                    .map_err(|reason| (self.challenge(parts, access, mount_from, Some("invalid_token"), reason), "-".to_owned()))?,
            ),
            None => None,
        };
        let subject = claims.as_ref().map_or(super::policy::ANONYMOUS.to_owned(), |c| c.sub.clone());
        let (kind, name, action) = match access {
            Access::Login if claims.is_some() => {
                return Ok((subject, Grant { private: true, mount_source_readable: false, caller: None }));
            }
            Access::Anyone => {
                // Decided by the policy, not the token's scopes: the answer lists what this
                // caller may pull (a token only proves who they are).
                let caller = Some(claims.as_ref().map_or_else(Principal::anonymous, |c| self.principal(&c.sub)));
                return Ok((subject, Grant { private: true, mount_source_readable: false, caller }));
            }
            Access::Login => {
                let err = self.challenge(parts, access, None, None, "authentication required".into());
                return Err((err, subject));
            }
            Access::Catalog => (REGISTRY, CATALOG, "*"),
            Access::Repository { name, action } => (REPOSITORY, name, action.as_str()),
            Access::BlobProbe { name } => (REPOSITORY, name, PULL),
        };
        let principal = claims.as_ref().map_or_else(Principal::anonymous, |c| self.principal(&c.sub));
        let allows = |kind: &str, name: &str, action: &str| match &claims {
            Some(c) => c.access.iter().any(|e| e.allows(kind, name, action)),
            // No token at all: what anonymous callers may do needs none (public pull).
            None => self.policy_allows(&principal, kind, name, action),
        };
        if !allows(kind, name, action) {
            let err = if claims.is_some() && !principal.is_anonymous() && !self.policy_allows(&principal, kind, name, action) {
                // Logged in, and no token would allow it: asking again is pointless.
                oci(ErrorCode::Denied, format!("{} may not {action} {kind} {name}", principal.subject))
                    .with_detail(detail(kind, name, action))
            } else {
                let error = claims.is_some().then_some("insufficient_scope");
                let message = format!("authentication required to {action} {kind} {name}");
                self.challenge(parts, access, mount_from, error, message)
            };
            return Err((err, subject));
        }
        // Fail closed: a mount reads its source, so it needs pull there, decided here once.
        let mount_source_readable = mount_from.is_some_and(|from| allows(REPOSITORY, from, PULL));
        let private = !self.policy_allows(&Principal::anonymous(), kind, name, PULL);
        Ok((subject, Grant { private, mount_source_readable, caller: None }))
    }

    /// May `who` pull from repository `name`, by the policy (for [`Access::Anyone`] answers).
    pub(crate) fn may_pull(&self, who: &Principal, name: &str) -> bool {
        self.policy_allows(who, REPOSITORY, name, PULL)
    }

    fn policy_allows(&self, who: &Principal, kind: &str, name: &str, action: &str) -> bool {
        match kind {
            REPOSITORY => self.policy.repository_actions(who, name).contains(&action),
            _ => self.policy.may_list_catalog(who),
        }
    }

    /// 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` telling the client where
    /// to get a token for exactly what this request needs; for a mount, pull on its source too
    /// (as Distribution does), so a client that asks for what the challenge lists can mount.
    fn challenge(
        &self,
        parts: &Parts,
        access: Access<'_>,
        mount_from: Option<&str>,
        error: Option<&str>,
        message: String,
    ) -> RegistryError {
        let mut value = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm_for(parts), self.service);
        let mut err = oci(ErrorCode::Unauthorized, message);
        let resource = match access {
            Access::Catalog => Some((REGISTRY, CATALOG, "*", false)),
            Access::Repository { name, action } => Some((REPOSITORY, name, action.as_str(), action == Action::Push)),
            Access::BlobProbe { name } => Some((REPOSITORY, name, PULL, true)),
            Access::Login | Access::Anyone => None,
        };
        if let Some((kind, name, action, with_push)) = resource {
            let actions: &[&str] = if with_push { &[PULL, PUSH] } else { &[action] };
            // Names in a challenge are validated repository names; anything else is not echoed.
            let valid = |name: &str| crate::names::RepoName::parse(name).is_ok();
            if kind == REGISTRY || valid(name) {
                let mut scopes = AccessEntry::new(kind, name, actions).to_scope();
                if let Some(from) = mount_from.filter(|from| valid(from) && *from != name) {
                    scopes.push(' ');
                    scopes.push_str(&AccessEntry::new(REPOSITORY, from, &[PULL]).to_scope());
                }
                value.push_str(&format!(",scope=\"{scopes}\""));
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

    fn access_of(method: &str, uri: &str) -> String {
        match Endpoint::of(&method.parse().unwrap(), uri) {
            Ok(endpoint) => match endpoint.access() {
                Access::Repository { name, action } => format!("repository:{name}:{}", action.as_str()),
                Access::BlobProbe { name } => format!("probe:{name}"),
                Access::Catalog => "catalog".into(),
                Access::Login => "login".into(),
                Access::Anyone => "anyone".into(),
            },
            Err(unrouted) => format!("{unrouted:?}"),
        }
    }

    #[test]
    fn every_endpoint_needs_its_action() {
        let action = access_of;
        assert_eq!(action("GET", "/v2/"), "login");
        assert_eq!(action("GET", "/v2/_catalog"), "catalog");
        assert_eq!(action("GET", "/v2/_berth/repositories"), "anyone");
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
        assert_eq!(action("PUT", "/v2/a/blobs/uploads/id"), "repository:a:push");
        assert_eq!(action("DELETE", "/v2/a/blobs/uploads/id"), "repository:a:push");
        // The direct-upload parts endpoint hands out write URLs into storage: push, like any upload.
        assert_eq!(action("POST", "/v2/a/b/blobs/uploads/id/parts"), "repository:a/b:push");
        assert_eq!(action("GET", "/v2/a/referrers/sha256:x"), "repository:a:pull");
        assert_eq!(action("GET", "/elsewhere"), "NoSuchPath");
        assert_eq!(action("POST", "/v2/a/manifests/v1"), "MethodNotAllowed");
        assert_eq!(action("GET", "/v2/a/blobs/uploads/id/parts"), "MethodNotAllowed");
    }

    /// Whatever the method and path, a request either names no endpoint (answered 404/405 with
    /// nothing touched) or needs a login or a right: nothing passes by default.
    #[test]
    fn no_endpoint_is_open_by_default() {
        let methods = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"];
        let paths = [
            "/v2/", "/v2/_catalog", "/v2/a/tags/list", "/v2/a/manifests/x", "/v2/a/blobs/sha256:x",
            "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/i", "/v2/a/blobs/uploads/i/parts",
            "/v2/a/referrers/sha256:x", "/v2/a/blobs/uploads/i/parts/x", "/v2/_berth/repositories",
        ];
        for method in methods {
            for path in paths {
                let a = access_of(method, path);
                assert!(a != "login" || path == "/v2/", "{method} {path}: {a}");
                // Open to anyone only where the answer is filtered by the caller's rights.
                assert!(a != "anyone" || (method == "GET" && path == "/v2/_berth/repositories"), "{method} {path}: {a}");
            }
        }
    }

    #[test]
    fn a_mount_challenge_names_its_source() {
        let a = auth("");
        let uri = "/v2/team/app/blobs/uploads/?mount=sha256:00&from=other/repo";
        let endpoint = Endpoint::of(&http::Method::POST, uri.split('?').next().unwrap()).unwrap();
        let (err, _) = a.authorize(&parts("POST", uri, &[("host", "h")]), &endpoint, 1000).unwrap_err();
        let challenge = &err.headers.iter().find(|(n, _)| n == WWW_AUTHENTICATE).unwrap().1;
        assert_eq!(
            challenge,
            "Bearer realm=\"https://h/token\",service=\"berth\",scope=\"repository:team/app:pull,push repository:other/repo:pull\""
        );
    }

    #[test]
    fn anonymous_access_and_challenges() {
        let a = auth("");
        let authorize = |p: &Parts| a.authorize(p, &Endpoint::of(&p.method, p.uri.path()).unwrap(), 1000);
        let (who, grant) = authorize(&parts("GET", "/v2/pub/x/manifests/v1", &[])).unwrap();
        assert_eq!((who.as_str(), grant.private), ("anonymous", false));
        let (err, who) = authorize(&parts("GET", "/v2/priv/manifests/v1", &[("host", "h")])).unwrap_err();
        assert_eq!((err.status, who.as_str()), (StatusCode::UNAUTHORIZED, "anonymous"));
        let challenge = &err.headers.iter().find(|(n, _)| n == WWW_AUTHENTICATE).unwrap().1;
        assert_eq!(challenge, "Bearer realm=\"https://h/token\",service=\"berth\",scope=\"repository:priv:pull\"");
        let (err, _) = authorize(&parts("GET", "/v2/pub/x/tags/list", &[("authorization", "Bearer nope")])).unwrap_err();
        assert!(err.headers.iter().any(|(_, v)| v.contains("error=\"invalid_token\"")));
    }
}
