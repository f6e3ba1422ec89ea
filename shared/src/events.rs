//! What happened, once per request: the core's event seam. Audit, webhooks, replication and
//! metrics all consume the same [`Event`] through an [`EventSink`] instead of each working out
//! again from the request what it was.
//!
//! An event is drafted from the [`Endpoint`] before the auth gate (so a refused request is an
//! event too), completed with what the handler found (the manifest's digest, media type and
//! size, a blob's size: see [`Found`]) and the status, and emitted to every sink once the
//! response is known. Every event is emitted, successful pulls included; each sink picks what it
//! wants (the audit log skips successful reads, see `auth::audit`).

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::routes::Endpoint;
use crate::storage::MaybeSendSync;
use crate::{query_of, query_param, Request};

/// What a request did. Serialized as the audit log names it (`push`, `upload-chunk`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventAction {
    /// A manifest PUT, a monolithic blob POST, or an upload's completing PUT.
    Push,
    /// Any read: manifest, blob (GET or HEAD), tag list, referrers.
    Pull,
    /// A cross-repository blob mount (`POST ?mount=&from=`).
    Mount,
    Delete,
    Catalog,
    /// A POST that opens an upload session.
    UploadStart,
    UploadChunk,
    UploadStatus,
    /// An upload session cancelled (DELETE).
    Cancel,
    /// Berth's direct-upload extension: presigned part URLs handed out.
    UploadParts,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Push => "push",
            EventAction::Pull => "pull",
            EventAction::Mount => "mount",
            EventAction::Delete => "delete",
            EventAction::Catalog => "catalog",
            EventAction::UploadStart => "upload-start",
            EventAction::UploadChunk => "upload-chunk",
            EventAction::UploadStatus => "upload-status",
            EventAction::Cancel => "cancel",
            EventAction::UploadParts => "upload-parts",
        }
    }
}

/// What kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Manifest,
    Blob,
    /// An upload session (start, chunk, status, cancel, parts).
    Upload,
    Tags,
    Referrers,
    Catalog,
}

/// The object an event is about. Fields the request named are always set; the rest (digest of
/// a manifest pushed or pulled by tag, media type, size) only once a handler found them, i.e.
/// on success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: TargetKind,
    /// What the request named: a tag or digest (manifests), a digest (blobs, mounts, the
    /// subject of a referrers query), or an upload session id (upload requests without a digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The manifest's or blob's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A manifest's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifest's or blob's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Tags involved: the tag in the path, then (push by digest) each `?tag=` applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The upload session, for requests on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// Tags a push pointed away from another manifest (webhooks' `tag_moved`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<TagMove>,
}

/// A tag that pointed at `from` before this push moved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagMove {
    pub tag: String,
    pub from: String,
}

impl Target {
    fn new(kind: TargetKind) -> Self {
        Target { kind, reference: None, digest: None, media_type: None, size: None, tags: Vec::new(), upload: None, moved: Vec::new() }
    }

    /// The tag in the request's path, when there is one.
    pub fn tag(&self) -> Option<&str> {
        self.tags.first().map(String::as_str)
    }
}

/// How the request ended, as the audit log has always said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// A mount that did not happen (unknown blob, or the source is not readable): the spec's
    /// fallback, a plain upload session instead.
    NotMounted,
    /// A client fault or an auth refusal (4xx).
    Refused,
    /// A server fault (5xx).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotMounted => "not-mounted",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }

    fn of(action: EventAction, status: StatusCode) -> Outcome {
        match status {
            StatusCode::ACCEPTED if action == EventAction::Mount => Outcome::NotMounted,
            s if s.is_success() || s.is_redirection() => Outcome::Ok,
            s if s.is_server_error() => Outcome::Error,
            _ => Outcome::Refused,
        }
    }
}

/// One request's event. Values from the request (names, references, the client address, the
/// subject's name as sent) are untrusted: a consumer that prints them must escape them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub action: EventAction,
    /// [`Endpoint::label`] of the request (`manifest_get`, `blob_head`, ...), for metrics.
    pub endpoint: String,
    /// None for the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub target: Target,
    /// The source repository of a mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Who: the token's subject, `anonymous`, or `-` when auth is off or the token was invalid.
    pub subject: String,
    /// The client's address (see [`crate::auth::ClientAddr`]), `-` when the runtime gave none.
    pub client: String,
    /// Unix time, seconds (the request's `RequestContext::now`).
    pub at: u64,
    pub status: u16,
    pub outcome: Outcome,
}

/// Receives every event. Called on the request path after the response is built and before it
/// is returned, so it must be quick and must not fail: a sink that delivers somewhere slow
/// (webhooks, a queue) hands the event to its runtime's background machinery.
pub trait EventSink: MaybeSendSync {
    fn emit(&self, event: &Event);
}

/// What a handler found out that the request did not say: reported with its [`crate::reply::Reply`]
/// (see `Reply::found`), merged into the event's target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Found {
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    /// Tags applied beyond the one in the path (`?tag=` of a push by digest).
    pub tags: Vec<String>,
    /// Tags the push moved away from another manifest.
    pub moved: Vec<TagMove>,
}

impl Found {
    pub fn blob(digest: impl ToString, size: u64) -> Self {
        Found { digest: Some(digest.to_string()), size: Some(size), ..Found::default() }
    }

    pub fn manifest(digest: impl ToString, media_type: &str, size: u64) -> Self {
        Found { digest: Some(digest.to_string()), media_type: Some(media_type.to_owned()), size: Some(size), tags: Vec::new(), moved: Vec::new() }
    }
}

/// An event before its outcome is known.
pub(crate) struct Draft {
    action: EventAction,
    endpoint: &'static str,
    repository: Option<String>,
    target: Target,
    from: Option<String>,
    client: String,
}

impl Draft {
    /// What `endpoint` is as an event; None for `/v2/` itself (every client calls it first,
    /// without a token: its 401 is the login flow, not an event). No catch-all: a new endpoint
    /// must say whether and how it is an event.
    pub fn of(endpoint: &Endpoint, req: &Request) -> Option<Draft> {
        use EventAction as A;
        use TargetKind as K;
        let query = || query_of(req.uri().query());
        let param = |q: &[(String, String)], k: &str| query_param(q, k).map(str::to_owned);
        let named = |kind, reference: &str| Target { reference: Some(reference.to_owned()), ..Target::new(kind) };
        let manifest = |reference: &str| {
            let mut t = named(K::Manifest, reference);
            if crate::names::is_valid_tag(reference) {
                // Digests never pass (`:`); anything else the handler refuses names no tag.
                t.tags.push(reference.to_owned());
            }
            t
        };
        let upload = |id: &str| Target { upload: Some(id.to_owned()), ..named(K::Upload, id) };
        let mut from = None;
        let (action, name, target) = match endpoint {
            Endpoint::Base | Endpoint::Quotas | Endpoint::Repositories | Endpoint::TagDetails { .. }
            | Endpoint::PolicyState { .. }
            | Endpoint::Webhooks
            | Endpoint::Replication
            | Endpoint::RetentionPreview { .. } => return None,
            Endpoint::Catalog => (A::Catalog, None, Target::new(K::Catalog)),
            Endpoint::TagsList { name } => (A::Pull, Some(name), Target::new(K::Tags)),
            Endpoint::ManifestGet { name, reference } => (A::Pull, Some(name), manifest(reference)),
            Endpoint::ManifestPut { name, reference } => (A::Push, Some(name), manifest(reference)),
            Endpoint::ManifestDelete { name, reference } => (A::Delete, Some(name), manifest(reference)),
            Endpoint::BlobGet { name, digest } | Endpoint::BlobHead { name, digest } => {
                (A::Pull, Some(name), named(K::Blob, digest))
            }
            Endpoint::BlobDelete { name, digest } => (A::Delete, Some(name), named(K::Blob, digest)),
            Endpoint::UploadStart { name } => {
                let q = query();
                match (param(&q, "mount"), param(&q, "digest")) {
                    (Some(digest), _) => {
                        from = Some(param(&q, "from").unwrap_or_else(|| "-".to_owned()));
                        (A::Mount, Some(name), named(K::Blob, &digest))
                    }
                    (None, Some(digest)) => (A::Push, Some(name), named(K::Blob, &digest)),
                    (None, None) => (A::UploadStart, Some(name), Target::new(K::Upload)),
                }
            }
            Endpoint::UploadPut { name, id } => {
                let target = Target {
                    reference: param(&query(), "digest"),
                    upload: Some(id.clone()),
                    ..Target::new(K::Blob)
                };
                (A::Push, Some(name), target)
            }
            Endpoint::UploadPatch { name, id } => (A::UploadChunk, Some(name), upload(id)),
            Endpoint::UploadStatus { name, id } => (A::UploadStatus, Some(name), upload(id)),
            Endpoint::UploadCancel { name, id } => (A::Cancel, Some(name), upload(id)),
            Endpoint::UploadParts { name, id } => (A::UploadParts, Some(name), upload(id)),
            Endpoint::Referrers { name, digest } => (A::Pull, Some(name), named(K::Referrers, digest)),
        };
        Some(Draft {
            action,
            endpoint: endpoint.label(),
            repository: name.cloned(),
            target,
            from,
            client: crate::auth::client_of(req),
        })
    }

    /// The event, once the answer is known. `found` is what the handler reported (success only).
    pub fn finish(self, subject: &str, status: StatusCode, now: u64, found: Option<Found>) -> Event {
        let mut target = self.target;
        if let Some(found) = found {
            target.digest = found.digest.or(target.digest);
            target.media_type = found.media_type.or(target.media_type);
            target.size = found.size.or(target.size);
            target.moved = found.moved;
            for tag in found.tags {
                if !target.tags.contains(&tag) {
                    target.tags.push(tag);
                }
            }
        }
        Event {
            action: self.action,
            endpoint: self.endpoint.to_owned(),
            repository: self.repository,
            target,
            from: self.from,
            subject: subject.to_owned(),
            client: self.client,
            at: now,
            status: status.as_u16(),
            outcome: Outcome::of(self.action, status),
        }
    }
}

#[cfg(test)]
mod tests;
