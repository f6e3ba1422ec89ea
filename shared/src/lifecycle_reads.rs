//! Read endpoints for the web interface (docs/ui.md) on what runs outside requests: webhook
//! deliveries, replication and what retention would delete. All go through the endpoint table
//! and auth gate like every endpoint, and all read a bounded amount whatever the store holds.
//!
//! - `GET /v2/_berth/webhooks` (the catalog right, like quotas): the configured endpoints
//!   (never their secrets, nor a URL's userinfo), a page of failed deliveries and a bounded
//!   count of pending ones.
//! - `GET /v2/_berth/replication` (the catalog right): the replication rules (never their
//!   credentials), each rule's last result, and the outbox's failed and pending entries, as
//!   for webhooks (the two share the outbox's code, docs/replication.md); and the pull-mode
//!   (`sync`) rules with their last run.
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
use crate::replication::sync::SyncStatus;
use crate::replication::{self, ReplicationRule, RuleStatus, SyncRule, SyncState};
use crate::webhooks::outbox::{self, Queue, WEBHOOKS};
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuleView<'a> {
    name: &'a str,
    destination: String,
    repositories: &'a [String],
    tags: &'a [String],
    prefix: &'a str,
    deletes: bool,
    on_push: bool,
    /// The rule's last result; None before its first copy.
    last: Option<RuleStatus>,
}

fn rule_view<'a>(rule: &'a ReplicationRule, statuses: &mut Vec<RuleStatus>) -> RuleView<'a> {
    let last = statuses.iter().position(|s| s.rule == rule.name).map(|i| statuses.swap_remove(i));
    RuleView {
        name: &rule.name,
        destination: without_userinfo(&rule.destination),
        repositories: &rule.repositories,
        tags: &rule.tags,
        prefix: &rule.prefix,
        deletes: rule.deletes,
        on_push: rule.on_push,
        last,
    }
}

/// A pull-mode rule (docs/replication.md, "Pull mode"), never its credentials.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyncView<'a> {
    name: &'a str,
    source: String,
    repositories: &'a [String],
    tags: &'a [String],
    prefix: &'a str,
    every: &'a str,
    /// Unix seconds of the last start (0: never), and whether a run holds the rule now.
    started: u64,
    running: bool,
    /// The last run's result; None before the first.
    last: Option<SyncStatus>,
}

fn sync_view<'a>(rule: &'a SyncRule, states: &mut Vec<SyncState>) -> SyncView<'a> {
    let state = states.iter().position(|s| s.rule == rule.name).map(|i| states.swap_remove(i)).unwrap_or_default();
    SyncView {
        name: &rule.name,
        source: without_userinfo(&rule.source),
        repositories: &rule.repositories,
        tags: &rule.tags,
        prefix: &rule.prefix,
        every: &rule.every,
        started: state.started,
        running: state.lease_until != 0,
        last: state.last,
    }
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// A page of an outbox queue's failed entries (after the id `?last=`) and a bounded count
    /// of its pending ones, as the `failed`, `moreFailed`, `pending` and `morePending` fields.
    async fn queue_state(&self, q: Queue, req: &crate::Parts) -> Result<serde_json::Map<String, serde_json::Value>> {
        let query = query_of(req.uri.query());
        let last = query_param(&query, "last").filter(|l| !l.is_empty());
        let mut failed = outbox::failed_in(&*self.meta, q, last, MAX_FAILED + 1).await?;
        let more_failed = failed.len() > MAX_FAILED;
        failed.truncate(MAX_FAILED);
        let pending = self.meta.list(q.due, None, MAX_PENDING_COUNTED + 1).await?.len();
        let mut out = serde_json::Map::new();
        out.insert("failed".into(), json!(failed.into_iter().map(FailedView::from).collect::<Vec<_>>()));
        out.insert("moreFailed".into(), json!(more_failed));
        out.insert("pending".into(), json!(pending.min(MAX_PENDING_COUNTED)));
        out.insert("morePending".into(), json!(pending > MAX_PENDING_COUNTED));
        Ok(out)
    }

    pub(crate) async fn webhook_state(&self, req: &crate::Parts) -> Result<Reply> {
        let Some(hooks) = self.hooks.as_deref().filter(|h| !h.is_empty()) else {
            let body = json!({ "endpoints": [], "failed": [], "pending": 0 });
            return Ok(Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()));
        };
        let mut body = self.queue_state(WEBHOOKS, req).await?;
        body.insert("endpoints".into(), json!(hooks.config().endpoints.iter().map(endpoint_view).collect::<Vec<_>>()));
        Ok(Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()))
    }

    pub(crate) async fn replication_state(&self, req: &crate::Parts) -> Result<Reply> {
        let rules = self.replication_rules();
        let sync = self.sync_rules();
        if rules.is_empty() && sync.is_empty() {
            let body = json!({ "rules": [], "sync": [], "failed": [], "pending": 0 });
            return Ok(Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()));
        }
        let mut statuses = replication::statuses(&*self.meta).await?;
        let mut body = self.queue_state(replication::outbox::QUEUE, req).await?;
        body.insert("rules".into(), json!(rules.iter().map(|r| rule_view(r, &mut statuses)).collect::<Vec<_>>()));
        let mut states = replication::sync::states(&*self.meta).await?;
        body.insert("sync".into(), json!(sync.iter().map(|r| sync_view(r, &mut states)).collect::<Vec<_>>()));
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
