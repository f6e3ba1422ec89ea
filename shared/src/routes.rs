//! Maps a `/v2/...` path to the endpoint it names. Repository names contain slashes, so the
//! endpoint keyword is found from the right-hand end of the path. [`Endpoint`] adds the method:
//! it is the one list of operations that dispatch and the auth gate both match on.

use http::Method;

/// An endpoint of the distribution API, with the raw (not yet validated) path parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    UploadStart { name: String },
    Upload { name: String, id: String },
    /// Berth's direct-upload extension: presigned part URLs for an upload session.
    UploadParts { name: String, id: String },
    Referrers { name: String, digest: String },
    /// Berth's quota usage (docs/quotas.md). `_` cannot start a repository name.
    Quotas,
    /// Berth's catalog of what the caller may pull (docs/auth.md).
    Repositories,
    /// Berth's tags of a repository with digest, media type, size and push time (docs/ui.md).
    /// Under `/v2/<name>/_berth/`, the OCI extension form: `_` cannot start a name component.
    TagDetails { name: String },
    /// Berth's tag policies that apply to a repository (docs/policies.md).
    PolicyState { name: String },
    /// Berth's webhook endpoints and failed deliveries (docs/webhooks.md, docs/ui.md).
    Webhooks,
    /// Berth's replication rules, their last results and failed copies (docs/replication.md).
    Replication,
    /// What retention would delete in a repository now (docs/gc.md, docs/ui.md).
    RetentionPreview { name: String },
}

/// Where Berth's webhook state is served.
pub const WEBHOOKS_PATH: &str = "/v2/_berth/webhooks";

/// Where Berth's replication state is served.
pub const REPLICATION_PATH: &str = "/v2/_berth/replication";

/// Where Berth's quota usage is served.
pub const QUOTAS_PATH: &str = "/v2/_berth/quotas";

/// Where the catalog filtered by the caller's pull rights is served.
pub const REPOSITORIES_PATH: &str = "/v2/_berth/repositories";

impl Route {
    /// None for a path that is no endpoint.
    pub fn parse(path: &str) -> Option<Route> {
        let rest = match path.strip_prefix("/v2") {
            Some("") | Some("/") => return Some(Route::Base),
            Some(rest) => rest.strip_prefix('/')?,
            None => return None,
        };
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        if rest == "_berth/quotas" {
            return Some(Route::Quotas);
        }
        if rest == "_berth/repositories" {
            return Some(Route::Repositories);
        }
        if rest == "_berth/webhooks" {
            return Some(Route::Webhooks);
        }
        if rest == "_berth/replication" {
            return Some(Route::Replication);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name = |k: usize| segs[..n - k].join("/");
        let tail = |k: usize| segs.get(n.wrapping_sub(k)).copied();
        if n >= 3 && tail(2) == Some("_berth") {
            match tail(1) {
                Some("tags") => return Some(Route::TagDetails { name: name(2) }),
                Some("policy") => return Some(Route::PolicyState { name: name(2) }),
                Some("retention") => return Some(Route::RetentionPreview { name: name(2) }),
                _ => {}
            }
        }
        if n >= 3 && tail(2) == Some("tags") && tail(1) == Some("list") {
            return Some(Route::Tags { name: name(2) });
        }
        if n >= 3 && tail(2) == Some("manifests") {
            return Some(Route::Manifest { name: name(2), reference: segs[n - 1].to_owned() });
        }
        if n >= 5 && tail(4) == Some("blobs") && tail(3) == Some("uploads") && tail(1) == Some("parts") {
            return Some(Route::UploadParts { name: name(4), id: segs[n - 2].to_owned() });
        }
        if n >= 4 && tail(3) == Some("blobs") && tail(2) == Some("uploads") {
            if segs[n - 1].is_empty() {
                return Some(Route::UploadStart { name: name(3) });
            }
            return Some(Route::Upload { name: name(3), id: segs[n - 1].to_owned() });
        }
        if n >= 3 && tail(2) == Some("blobs") && tail(1) == Some("uploads") {
            return Some(Route::UploadStart { name: name(2) });
        }
        if n >= 3 && tail(2) == Some("blobs") {
            return Some(Route::Blob { name: name(2), digest: segs[n - 1].to_owned() });
        }
        if n >= 3 && tail(2) == Some("referrers") {
            return Some(Route::Referrers { name: name(2), digest: segs[n - 1].to_owned() });
        }
        None
    }
}

/// What a caller must hold to use an endpoint. Derived from [`Endpoint::access`] only, so the
/// auth gate cannot drift from dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// `/v2/`: any valid token (anonymous callers are told where to log in).
    Login,
    /// `/v2/_catalog`: the registry-wide catalog right.
    Catalog,
    /// Any caller, anonymous included: what the answer holds depends on who asks (dispatch
    /// filters by the caller's rights, so asking needs none).
    Anyone,
    Repository { name: &'a str, action: Action },
    /// A blob HEAD: pull, but what every client sends first when it pushes, so its challenge
    /// offers push too (see the auth gate).
    BlobProbe { name: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    /// The action's name in token scopes (`repository:<name>:pull`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// Every operation the registry serves, with its (not yet validated) path parts. Dispatch, the
/// access an operation needs, the audit action and metric labels all come from matching on this
/// enum without a catch-all: a new endpoint does not compile until each says what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Base,
    Catalog,
    TagsList { name: String },
    /// GET and HEAD.
    ManifestGet { name: String, reference: String },
    ManifestPut { name: String, reference: String },
    ManifestDelete { name: String, reference: String },
    BlobGet { name: String, digest: String },
    BlobHead { name: String, digest: String },
    BlobDelete { name: String, digest: String },
    UploadStart { name: String },
    UploadPatch { name: String, id: String },
    UploadPut { name: String, id: String },
    /// GET and HEAD of an upload session.
    UploadStatus { name: String, id: String },
    UploadCancel { name: String, id: String },
    /// Berth's direct-upload extension: presigned part URLs for an upload session.
    UploadParts { name: String, id: String },
    Referrers { name: String, digest: String },
    /// GET: every quota with its usage (an admin's view, like the catalog).
    Quotas,
    /// GET: the catalog, only the repositories the caller may pull.
    Repositories,
    /// GET: a page of a repository's tags with what each points at and when it was pushed.
    TagDetails { name: String },
    /// GET: the immutable, refused and retention rules that apply to a repository.
    PolicyState { name: String },
    /// GET: the webhook endpoints (no secrets), failed deliveries and a count of pending ones.
    Webhooks,
    /// GET: the replication rules (no credentials), their last results, failed and pending copies.
    Replication,
    /// GET: the tags and manifests retention would delete in a repository now (read-only).
    RetentionPreview { name: String },
}

/// Why a request names no endpoint: answered 404 or 405 before anything is read or stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    NoSuchPath,
    MethodNotAllowed,
}

impl Endpoint {
    pub fn of(method: &Method, path: &str) -> Result<Endpoint, Unrouted> {
        let route = Route::parse(path).ok_or(Unrouted::NoSuchPath)?;
        let m = method.clone();
        let read = m == Method::GET || m == Method::HEAD;
        let endpoint = match route {
            Route::Base if read => Endpoint::Base,
            Route::Catalog if m == Method::GET => Endpoint::Catalog,
            Route::Quotas if m == Method::GET => Endpoint::Quotas,
            Route::Repositories if m == Method::GET => Endpoint::Repositories,
            Route::Tags { name } if m == Method::GET => Endpoint::TagsList { name },
            Route::TagDetails { name } if m == Method::GET => Endpoint::TagDetails { name },
            Route::PolicyState { name } if m == Method::GET => Endpoint::PolicyState { name },
            Route::Webhooks if m == Method::GET => Endpoint::Webhooks,
            Route::Replication if m == Method::GET => Endpoint::Replication,
            Route::RetentionPreview { name } if m == Method::GET => Endpoint::RetentionPreview { name },
            Route::Manifest { name, reference } if read => Endpoint::ManifestGet { name, reference },
            Route::Manifest { name, reference } if m == Method::PUT => Endpoint::ManifestPut { name, reference },
            Route::Manifest { name, reference } if m == Method::DELETE => {
                Endpoint::ManifestDelete { name, reference }
            }
            Route::Blob { name, digest } if m == Method::GET => Endpoint::BlobGet { name, digest },
            Route::Blob { name, digest } if m == Method::HEAD => Endpoint::BlobHead { name, digest },
            Route::Blob { name, digest } if m == Method::DELETE => Endpoint::BlobDelete { name, digest },
            Route::UploadStart { name } if m == Method::POST => Endpoint::UploadStart { name },
            Route::Upload { name, id } if m == Method::PATCH => Endpoint::UploadPatch { name, id },
            Route::Upload { name, id } if m == Method::PUT => Endpoint::UploadPut { name, id },
            Route::Upload { name, id } if read => Endpoint::UploadStatus { name, id },
            Route::Upload { name, id } if m == Method::DELETE => Endpoint::UploadCancel { name, id },
            Route::UploadParts { name, id } if m == Method::POST => Endpoint::UploadParts { name, id },
            Route::Referrers { name, digest } if m == Method::GET => Endpoint::Referrers { name, digest },
            _ => return Err(Unrouted::MethodNotAllowed),
        };
        Ok(endpoint)
    }

    /// What the caller must hold. No catch-all: every endpoint states its access.
    pub fn access(&self) -> Access<'_> {
        match self {
            Endpoint::Base => Access::Login,
            // Names every namespace and its size, or every repository's events: for whoever
            // may list every repository.
            Endpoint::Catalog | Endpoint::Quotas | Endpoint::Webhooks | Endpoint::Replication => Access::Catalog,
            Endpoint::Repositories => Access::Anyone,
            // Who may pull a repository may read its tags and the rules its pushes meet.
            Endpoint::TagsList { name }
            | Endpoint::TagDetails { name }
            | Endpoint::PolicyState { name }
            | Endpoint::RetentionPreview { name }
            | Endpoint::ManifestGet { name, .. }
            | Endpoint::BlobGet { name, .. }
            | Endpoint::Referrers { name, .. } => Access::Repository { name, action: Action::Pull },
            Endpoint::BlobHead { name, .. } => Access::BlobProbe { name },
            Endpoint::ManifestPut { name, .. }
            | Endpoint::UploadStart { name }
            | Endpoint::UploadPatch { name, .. }
            | Endpoint::UploadPut { name, .. }
            | Endpoint::UploadStatus { name, .. }
            | Endpoint::UploadCancel { name, .. }
            | Endpoint::UploadParts { name, .. } => Access::Repository { name, action: Action::Push },
            Endpoint::ManifestDelete { name, .. } | Endpoint::BlobDelete { name, .. } => Access::Repository { name, action: Action::Delete },
        }
    }

    /// A stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Quotas => "quotas",
            Endpoint::Repositories => "repositories",
            Endpoint::TagsList { .. } => "tags_list",
            Endpoint::TagDetails { .. } => "tag_details",
            Endpoint::PolicyState { .. } => "policy_state",
            Endpoint::Webhooks => "webhooks",
            Endpoint::Replication => "replication",
            Endpoint::RetentionPreview { .. } => "retention_preview",
            Endpoint::ManifestGet { .. } => "manifest_get",
            Endpoint::ManifestPut { .. } => "manifest_put",
            Endpoint::ManifestDelete { .. } => "manifest_delete",
            Endpoint::BlobGet { .. } => "blob_get",
            Endpoint::BlobHead { .. } => "blob_head",
            Endpoint::BlobDelete { .. } => "blob_delete",
            Endpoint::UploadStart { .. } => "upload_start",
            Endpoint::UploadPatch { .. } => "upload_patch",
            Endpoint::UploadPut { .. } => "upload_put",
            Endpoint::UploadStatus { .. } => "upload_status",
            Endpoint::UploadCancel { .. } => "upload_cancel",
            Endpoint::UploadParts { .. } => "upload_parts",
            Endpoint::Referrers { .. } => "referrers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_names_and_keywords() {
        assert_eq!(Route::parse("/v2/"), Some(Route::Base));
        assert_eq!(Route::parse("/v2"), Some(Route::Base));
        assert_eq!(Route::parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(Route::parse("/v2/_berth/quotas"), Some(Route::Quotas));
        // Quota usage names every namespace: only for whoever may list the catalog.
        let quotas = Endpoint::of(&Method::GET, QUOTAS_PATH).unwrap();
        assert_eq!(quotas.access(), Access::Catalog);
        assert_eq!(Endpoint::of(&Method::PUT, QUOTAS_PATH), Err(Unrouted::MethodNotAllowed));
        assert_eq!(Route::parse(REPOSITORIES_PATH), Some(Route::Repositories));
        assert_eq!(Endpoint::of(&Method::GET, REPOSITORIES_PATH).unwrap().access(), Access::Anyone);
        assert_eq!(Endpoint::of(&Method::DELETE, REPOSITORIES_PATH), Err(Unrouted::MethodNotAllowed));
        assert_eq!(
            Route::parse("/v2/org/team/app/manifests/v1"),
            Some(Route::Manifest { name: "org/team/app".into(), reference: "v1".into() })
        );
        assert_eq!(
            Route::parse("/v2/a/b/blobs/uploads/"),
            Some(Route::UploadStart { name: "a/b".into() })
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads/xyz"),
            Some(Route::Upload { name: "a".into(), id: "xyz".into() })
        );
        assert_eq!(
            Route::parse("/v2/a/tags/list"),
            Some(Route::Tags { name: "a".into() })
        );
        assert_eq!(
            Route::parse("/v2/a/b/blobs/uploads/xyz/parts"),
            Some(Route::UploadParts { name: "a/b".into(), id: "xyz".into() })
        );
        assert_eq!(Route::parse("/v2/org/app/_berth/tags"), Some(Route::TagDetails { name: "org/app".into() }));
        assert_eq!(Route::parse("/v2/org/app/_berth/policy"), Some(Route::PolicyState { name: "org/app".into() }));
        let details = Endpoint::of(&Method::GET, "/v2/a/_berth/tags").unwrap();
        assert_eq!(details.access(), Access::Repository { name: "a", action: Action::Pull });
        assert_eq!(Endpoint::of(&Method::DELETE, "/v2/a/_berth/policy"), Err(Unrouted::MethodNotAllowed));
        assert_eq!(Route::parse(WEBHOOKS_PATH), Some(Route::Webhooks));
        assert_eq!(Endpoint::of(&Method::GET, WEBHOOKS_PATH).unwrap().access(), Access::Catalog);
        assert_eq!(Endpoint::of(&Method::DELETE, WEBHOOKS_PATH), Err(Unrouted::MethodNotAllowed));
        assert_eq!(Route::parse(REPLICATION_PATH), Some(Route::Replication));
        assert_eq!(Endpoint::of(&Method::GET, REPLICATION_PATH).unwrap().access(), Access::Catalog);
        assert_eq!(Endpoint::of(&Method::POST, REPLICATION_PATH), Err(Unrouted::MethodNotAllowed));
        assert_eq!(Route::parse("/v2/org/app/_berth/retention"), Some(Route::RetentionPreview { name: "org/app".into() }));
        let preview = Endpoint::of(&Method::GET, "/v2/a/_berth/retention").unwrap();
        assert_eq!(preview.access(), Access::Repository { name: "a", action: Action::Pull });
        assert_eq!(Endpoint::of(&Method::POST, "/v2/a/_berth/retention"), Err(Unrouted::MethodNotAllowed));
        assert_eq!(Route::parse("/v2/a/_berth/other"), None);
        assert_eq!(Route::parse("/v2/blobs/x"), None);
        assert_eq!(Route::parse("/v3/a/tags/list"), None);
        assert_eq!(Route::parse("/v2/a/nothing/here"), None);
    }
}
