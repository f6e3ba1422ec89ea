//! Read endpoints for the web interface (docs/ui.md) on what runs outside requests: webhook
//! deliveries and what retention would delete. Both go through the endpoint table and auth
//! gate like every endpoint, and both read a bounded amount whatever the store holds.
//!
//! - `GET /v2/_berth/webhooks` (the catalog right, like quotas): the configured endpoints
//!   (never their secrets, nor a URL's userinfo), a page of failed deliveries and a bounded
//!   count of pending ones.
//! - `GET /v2/<name>/_berth/retention` (pull): the tags and manifests the retention rule
//!   covering the repository would delete now, planned by GC's own code, read-only.

use http::StatusCode;
use serde::Serialize;
use serde_json::json;

use crate::error::{oci, ErrorCode, Result};
use crate::policy::retention::Deletion;
use crate::records::{manifest_prefix, tag_prefix};
use crate::reply::Reply;
use crate::storage::{BlobStore, MetaStore};
use crate::webhooks::outbox::{self, DUE};
use crate::webhooks::{Delivery, EndpointConfig};
use crate::{query_of, query_param, Registry};

/// Failed deliveries one answer holds, and pending ones it counts (past it: "at least").
pub const MAX_FAILED: usize = 100;
pub const MAX_PENDING_COUNTED: usize = 1000;
/// Tags (and, separately, manifests) a repository may hold for a retention preview: the plan
/// needs the whole inventory, so a larger one is refused rather than read without bound.
pub const MAX_PREVIEW_ITEMS: usize = 1000;

#[derive(Serialize)]
struct EndpointView<'a> {
    name: &'a str,
    url: String,
    events: Vec<&'static str>,
    repositories: &'a [String],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FailedView {
    id: String,
    endpoint: String,
    event: &'static str,
    repository: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
    attempts: u32,
    last_error: Option<String>,
    /// Unix seconds of the event.
    at: u64,
}

impl From<Delivery> for FailedView {
    fn from(d: Delivery) -> Self {
        FailedView {
            id: d.id(),
            endpoint: d.endpoint,
            event: d.event.kind.as_str(),
            repository: d.event.repository,
            tag: d.event.tag,
            digest: d.event.digest,
            attempts: d.attempts,
            last_error: d.last_error,
            at: d.event.at,
        }
    }
}

/// `url` without its userinfo (`https://user:pass@host/` → `https://host/`). The config check
/// refuses credentials in a URL already; this keeps them out of the answer should that change.
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

fn endpoint_view(e: &EndpointConfig) -> EndpointView<'_> {
    EndpointView {
        name: &e.name,
        url: without_userinfo(&e.url),
        events: e.events.iter().map(|k| k.as_str()).collect(),
        repositories: &e.repositories,
    }
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    pub(crate) async fn webhook_state(&self, req: &crate::Parts) -> Result<Reply> {
        let Some(hooks) = self.hooks.as_deref().filter(|h| !h.is_empty()) else {
            let body = json!({ "endpoints": [], "failed": [], "pending": 0 });
            return Ok(Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()));
        };
        let query = query_of(req.uri.query());
        let last = query_param(&query, "last").filter(|l| !l.is_empty());
        let mut failed = outbox::failed(&self.meta, last, MAX_FAILED + 1).await?;
        let more_failed = failed.len() > MAX_FAILED;
        failed.truncate(MAX_FAILED);
        let pending = self.meta.list(DUE, None, MAX_PENDING_COUNTED + 1).await?.len();
        let body = json!({
            "endpoints": hooks.config().endpoints.iter().map(endpoint_view).collect::<Vec<_>>(),
            "failed": failed.into_iter().map(FailedView::from).collect::<Vec<_>>(),
            "moreFailed": more_failed,
            "pending": pending.min(MAX_PENDING_COUNTED),
            "morePending": pending > MAX_PENDING_COUNTED,
        });
        Ok(Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()))
    }

    pub(crate) async fn retention_preview(&self, name: &str, now: u64) -> Result<Reply> {
        let name = self.known_repo(name).await?;
        for (what, prefix) in [("tags", tag_prefix(&name)), ("manifests", manifest_prefix(&name))] {
            let n = self.meta.list(&prefix, None, MAX_PREVIEW_ITEMS + 1).await?.len();
            if n > MAX_PREVIEW_ITEMS {
                return Err(oci(
                    ErrorCode::Unsupported,
                    format!("{name} holds more than {MAX_PREVIEW_ITEMS} {what}: too many to preview retention; run berth gc --dry-run"),
                )
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
                .with_detail(json!({ "name": name.as_str(), "limit": MAX_PREVIEW_ITEMS, "too_many": what })));
            }
        }
        let plan = crate::gc::retention_preview(self, &name, now).await?;
        let (mut tags, mut manifests) = (Vec::new(), Vec::new());
        for deletion in plan.iter().flat_map(|p| &p.deletions) {
            match deletion {
                Deletion::Tag { name, digest, reason } => {
                    tags.push(json!({ "name": name, "digest": digest, "reason": reason.to_string() }))
                }
                Deletion::Manifest { digest, reason } => {
                    manifests.push(json!({ "digest": digest, "reason": reason.to_string() }))
                }
            }
        }
        let body = json!({
            "name": name.as_str(),
            "rule": plan.as_ref().and_then(|p| p.rule),
            "at": now,
            "tags": tags,
            "manifests": manifests,
        });
        Ok(Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests;
