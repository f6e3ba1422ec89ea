//! Read endpoints for people (the web interface, docs/ui.md) that the OCI API lacks, under the
//! OCI extension form `/v2/<name>/_berth/...`. They go through the endpoint table and the auth
//! gate like every endpoint: pull on the repository.
//!
//! - `GET /v2/<name>/_berth/tags?n=&last=`: a page of tags in name order (the tag list's
//!   `n`/`last` and Link), each with the digest, media type and size of its manifest and its push
//!   time. One metadata read per tag, so a page holds at most [`MAX_PAGE`] tags.
//! - `GET /v2/<name>/_berth/policy`: the tag policies and retention rule that apply.

use futures_util::future::try_join_all;
use http::header::LINK;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Result;
use crate::names::{parse_digest, RepoName};
use crate::records::{manifest_key, tag_key, tag_prefix, ManifestRecord};
use crate::reply::Reply;
use crate::storage::{BlobStore, MetaStore};
use crate::tags::{link, page_size_within};
use crate::{query_of, query_param, Registry};

/// Tags a page holds when the client gives no `n`, and at most.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 100;
/// Tag records read at once (a page's reads overlap; the Worker's and Lambda's stores answer
/// each in milliseconds, not microseconds).
const CONCURRENT_READS: usize = 16;

/// A tag record's fields this endpoint shows (its inline manifest bytes are skipped unparsed).
#[derive(Deserialize)]
struct TagMeta {
    digest: String,
    #[serde(default)]
    tagged_at: u64,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    size: Option<u64>,
}

/// One tag as the endpoint answers it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TagDetail {
    name: String,
    digest: String,
    media_type: Option<String>,
    /// The manifest's size in bytes (not its layers').
    size: Option<u64>,
    /// Unix seconds of the last push or move of the tag; None: before push times were kept.
    pushed_at: Option<u64>,
    /// The immutable_tags rule that covers the tag (docs/policies.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    immutable: Option<usize>,
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    pub(crate) async fn tag_details(&self, name: &str, req: &crate::Parts) -> Result<Reply> {
        let name = self.known_repo(name).await?;
        let query = query_of(req.uri.query());
        let n = page_size_within(&query, DEFAULT_PAGE, MAX_PAGE)?;
        let (tags, more) = self.page(&tag_prefix(&name), query_param(&query, "last"), n).await?;
        let mut details = Vec::with_capacity(tags.len());
        for chunk in tags.chunks(CONCURRENT_READS) {
            let name = &name;
            let reads = chunk.iter().map(|tag| async move { self.tag_detail(name, tag).await });
            // A tag deleted between the listing and its read is left out.
            details.extend(try_join_all(reads).await?.into_iter().flatten());
        }
        let body = json!({ "name": name.as_str(), "tags": details });
        let mut reply = Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default());
        if let (true, Some(last)) = (more, tags.last()) {
            reply = reply.header(LINK, link(&format!("/v2/{name}/_berth/tags"), n, last));
        }
        Ok(reply)
    }

    async fn tag_detail(&self, name: &RepoName, tag: &str) -> Result<Option<TagDetail>> {
        let Some(meta) = self.get_record::<TagMeta>(&tag_key(name, tag)).await? else { return Ok(None) };
        let (mut media_type, mut size) = (meta.media_type, meta.size);
        if media_type.is_none() || size.is_none() {
            // A record from before tags carried these: the manifest record has them.
            if let Ok(digest) = parse_digest(&meta.digest) {
                if let Some(record) = self.get_record::<ManifestRecord>(&manifest_key(name, &digest)).await? {
                    media_type = media_type.or(Some(record.media_type));
                    size = size.or(Some(record.size));
                }
            }
        }
        Ok(Some(TagDetail {
            name: tag.to_owned(),
            digest: meta.digest,
            media_type,
            size,
            pushed_at: (meta.tagged_at > 0).then_some(meta.tagged_at),
            immutable: self.policies.immutable_rule(name.as_str(), tag),
        }))
    }

    pub(crate) async fn policy_state(&self, name: &str) -> Result<Reply> {
        let name = self.known_repo(name).await?;
        let mut body = serde_json::to_value(self.policies.state_of(name.as_str())).unwrap_or_default();
        body["name"] = json!(name.as_str());
        Ok(Reply::json(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::Value;

    use crate::memory::{MemoryBlobStore, MemoryMetaStore};
    use crate::names::{parse_digest, RepoName};
    use crate::records::{manifest_key, repo_key, tag_key};
    use crate::storage::{MetaStore, Precondition};
    use crate::{policy::Policies, Body, Config, Registry, RequestContext};

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    async fn registry() -> Registry<MemoryBlobStore, MemoryMetaStore> {
        let policies = Policies::from_policy_file("[[policies.immutable_tags]]\nrepositories = [\"a/**\"]\ntags = [\"v*\"]").unwrap();
        let reg = Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(b"s".to_vec())).with_policies(policies);
        let name = RepoName::parse("a/b").unwrap();
        let put = |key: String, value: &str| {
            let value = Bytes::from(value.to_owned());
            let meta = reg.meta_store();
            async move { meta.put(&key, value, Precondition::None).await.unwrap() }
        };
        put(repo_key(&name), "{}").await;
        let full = format!(r#"{{"digest":"{D}","tagged_at":1700000000,"media_type":"application/x","size":12,"manifest":"{{}}"}}"#);
        for tag in ["v1", "main", "dev"] {
            put(tag_key(&name, tag), &full).await;
        }
        // A record from before tags carried the media type and size: read from the manifest's.
        put(tag_key(&name, "old"), &format!(r#"{{"digest":"{D}"}}"#)).await;
        let record = r#"{"media_type":"application/y","size":34,"pushed_at":1}"#;
        put(manifest_key(&name, &parse_digest(D).unwrap()), record).await;
        reg
    }

    async fn get(reg: &Registry<MemoryBlobStore, MemoryMetaStore>, uri: &str) -> (u16, Value, Option<String>) {
        let req = http::Request::builder().uri(uri).body(crate::body::empty_stream()).unwrap();
        let res = reg.handle(req, RequestContext { now: 1_700_000_100, random: [1; 16] }).await;
        let link = res.headers().get("link").map(|l| l.to_str().unwrap().to_owned());
        let status = res.status().as_u16();
        let body = match res.into_body() {
            Body::Full(b) => serde_json::from_slice(&b).unwrap_or_default(),
            _ => Value::Null,
        };
        (status, body, link)
    }

    #[tokio::test]
    async fn tag_details_in_pages_with_times_and_policies() {
        let reg = registry().await;
        let (status, body, link) = get(&reg, "/v2/a/b/_berth/tags?n=2").await;
        assert_eq!((status, link.as_deref()), (200, Some("</v2/a/b/_berth/tags?n=2&last=main>; rel=\"next\"")));
        let dev = &body["tags"][0];
        assert_eq!((dev["name"].as_str(), dev["digest"].as_str()), (Some("dev"), Some(D)));
        assert_eq!((dev["mediaType"].as_str(), dev["size"].as_u64(), dev["pushedAt"].as_u64()), (Some("application/x"), Some(12), Some(1_700_000_000)));
        assert!(dev.get("immutable").is_none() && dev.get("manifest").is_none(), "{dev}");
        let (_, body, link) = get(&reg, "/v2/a/b/_berth/tags?n=2&last=main").await;
        assert_eq!(link, None);
        let old = &body["tags"][0];
        assert_eq!((old["name"].as_str(), old["mediaType"].as_str(), old["size"].as_u64()), (Some("old"), Some("application/y"), Some(34)));
        assert!(old["pushedAt"].is_null(), "unknown push time: {old}");
        assert_eq!(body["tags"][1]["immutable"], 1, "v1 is under immutable_tags rule 1");
        // n is capped; a bad n and an unknown repository are OCI errors.
        let (_, body, _) = get(&reg, "/v2/a/b/_berth/tags?n=100000").await;
        assert_eq!(body["tags"].as_array().map(Vec::len), Some(4));
        assert_eq!(get(&reg, "/v2/a/b/_berth/tags?n=x").await.0, 400);
        let (status, body, _) = get(&reg, "/v2/a/none/_berth/tags").await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (404, Some("NAME_UNKNOWN")));
    }

    #[tokio::test]
    async fn the_policy_state_of_a_repository() {
        let reg = registry().await;
        let (status, body, _) = get(&reg, "/v2/a/b/_berth/policy").await;
        assert_eq!(status, 200);
        assert_eq!(body["name"], "a/b");
        assert_eq!(body["immutable_tags"], serde_json::json!([{ "rule": 1, "tags": ["v*"] }]));
        assert_eq!((body["refused_tags"].clone(), body["retention"].clone()), (serde_json::json!([]), Value::Null));
        assert_eq!(get(&reg, "/v2/a/none/_berth/policy").await.0, 404);
    }
}
