//! `MetaStore` on S3: one small object per key, conditional writes with `If-None-Match: *`
//! and `If-Match: <etag>` (strongly consistent, atomic per object in the bucket's region).

use aws_sdk_s3::primitives::ByteStream as S3Body;
use berth_core::storage::StorageResult;
use berth_core::{MetaStore, Precondition, PutOutcome, Versioned};
use bytes::Bytes;

use super::{status_of, storage_error};
use crate::config::Settings;

const PREFIX: &str = "meta/";
/// S3 lists at most this many keys per call.
const LIST_PAGE: usize = 1000;

pub struct S3Meta {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Meta {
    pub fn new(sdk: &aws_config::SdkConfig, settings: &Settings) -> Self {
        S3Meta { client: settings.meta_client(sdk), bucket: settings.meta_bucket.clone() }
    }
}

#[async_trait::async_trait]
impl MetaStore for S3Meta {
    async fn get(&self, key: &str) -> StorageResult<Option<Versioned>> {
        let got = self.client.get_object().bucket(&self.bucket).key(format!("{PREFIX}{key}")).send().await;
        let out = match got {
            Ok(out) => out,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(storage_error("GET metadata", e)),
        };
        let version = out.e_tag.clone().unwrap_or_default();
        let value = out
            .body
            .collect()
            .await
            .map_err(|e| berth_core::StorageError::new(format!("S3 read metadata: {e}")))?
            .into_bytes();
        Ok(Some(Versioned { value, version }))
    }

    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> StorageResult<PutOutcome> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{PREFIX}{key}"))
            .content_type("application/json")
            .body(S3Body::from(value));
        put = match cond {
            Precondition::None => put,
            Precondition::Absent => put.if_none_match("*"),
            Precondition::Version(etag) => put.if_match(etag),
        };
        match put.send().await {
            Ok(out) => Ok(PutOutcome::Written { version: out.e_tag.unwrap_or_default() }),
            // 412: the condition failed. 409: a concurrent conditional write to the same key
            // won (S3 answers ConditionalRequestConflict); either way nothing was written.
            // 404: If-Match on a key deleted meanwhile.
            Err(e) if matches!(status_of(&e), Some(412 | 409 | 404)) => Ok(PutOutcome::Conflict),
            Err(e) => Err(storage_error("PUT metadata", e)),
        }
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        match self.client.delete_object().bucket(&self.bucket).key(format!("{PREFIX}{key}")).send().await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(storage_error("DELETE metadata", e)),
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        // S3 speaks XML, which cannot carry control characters. Stored keys never contain
        // them, so every key after `x<control>…` is a key after `x`, other than `x` itself.
        let (after, skip) = match after.and_then(|a| a.find(|c: char| c.is_control()).map(|i| &a[..i])) {
            Some(cut) => (Some(cut), Some(cut)),
            None => (after, None),
        };
        let mut keys = Vec::new();
        let mut start_after = after.map(|a| format!("{PREFIX}{a}"));
        while keys.len() < limit {
            let want = (limit - keys.len()).min(LIST_PAGE);
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{PREFIX}{prefix}"))
                .set_start_after(start_after.clone())
                .max_keys(want as i32)
                .send()
                .await
                .map_err(|e| storage_error("LIST metadata", e))?;
            let page: Vec<String> = out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
            let Some(last) = page.last().cloned() else { break };
            keys.extend(
                page.iter()
                    .filter_map(|k| k.strip_prefix(PREFIX))
                    .filter(|k| Some(*k) != skip)
                    .map(str::to_owned),
            );
            if !out.is_truncated().unwrap_or(false) {
                break;
            }
            start_after = Some(last);
        }
        keys.truncate(limit);
        Ok(keys)
    }
}
