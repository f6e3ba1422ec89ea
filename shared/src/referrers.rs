//! The referrers API (OCI 1.1): which manifests in a repository name a given subject.

use http::header::CONTENT_TYPE;
use http::StatusCode;
use serde_json::{json, Value};

use crate::error::Result;
use crate::manifests::{Parsed, OCI_INDEX};
use crate::names::{parse_digest, Digest, RepoName};
use crate::records::{referrer_key, referrer_prefix};
use crate::reply::names::OCI_FILTERS_APPLIED;
use crate::reply::Reply;
use crate::storage::{BlobStore, MetaStore, Precondition};
use crate::{query_of, query_param, Body, Registry};

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// Records the descriptor the referrers API lists for `digest`, under its subject.
    pub(crate) async fn add_referrer(
        &self,
        name: &RepoName,
        subject: &str,
        digest: &Digest,
        media_type: &str,
        size: u64,
        parsed: &Parsed,
    ) -> Result<()> {
        let mut descriptor = json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size });
        if let Some(t) = parsed.artifact_type() {
            descriptor["artifactType"] = Value::from(t);
        }
        if let Some(a) = parsed.annotations().filter(|a| !a.is_empty()) {
            descriptor["annotations"] = json!(a);
        }
        let key = referrer_key(name, subject, digest);
        self.put_record(&key, &descriptor, Precondition::None).await?;
        Ok(())
    }

    pub(crate) async fn referrers(&self, name: &str, subject: &str, req: &crate::Parts) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let subject = parse_digest(subject)?;
        let query = query_of(req.uri.query());
        let filter = query_param(&query, "artifactType").filter(|t| !t.is_empty());
        let mut manifests = Vec::new();
        for key in self.list_all(&referrer_prefix(&name, &subject.to_string())).await? {
            let Some(descriptor) = self.get_record::<Value>(&key).await? else { continue };
            if filter.is_none_or(|f| descriptor.get("artifactType").and_then(Value::as_str) == Some(f)) {
                manifests.push(descriptor);
            }
        }
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
        let body = serde_json::to_vec(&index).unwrap_or_default();
        let len = body.len() as u64;
        let mut reply = Reply::new(StatusCode::OK)
            .header(CONTENT_TYPE, OCI_INDEX)
            .body(Body::Full(body.into()), len);
        if filter.is_some() {
            reply = reply.header(OCI_FILTERS_APPLIED, "artifactType");
        }
        Ok(reply)
    }
}
