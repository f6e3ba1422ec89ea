//! Uploads through the function on S3: the core's engine (`berth_core::parted`) over the S3
//! calls below. Requests are smaller than S3's minimum part size (Lambda's 6 MB cap against S3's
//! 5 MiB for every part but the last), so the engine stages the bytes that do not yet make a
//! part in a tail object and cuts parts of `MIN_PART_BYTES` as they flow. What is S3's alone:
//! server-side copies of the tail (UploadPartCopy, CopyObject) and the direct mode (`direct`).

use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use berth_core::names::Digest;
use berth_core::parted::{PartStore, PartedUpload};
use berth_core::storage::StorageResult;
use berth_core::StorageError;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::blobs::{blob_key, META_DATA_KEY, META_SIZE};
use super::{status_of, storage_error, Bucket};

/// S3's minimum size of every part but the last; the engine's part size on S3.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// The upload's S3 state, saved by the core with the session after every request: the engine's,
/// plus the direct mode's flags. (Sessions saved before the engine, in another format, are not
/// readable: an upgrade abandons S3 uploads in flight.)
#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct UploadState {
    #[serde(flatten)]
    pub upload: PartedUpload,
    /// Set for a direct upload: the client sends parts to S3 itself (see `direct`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    /// The multipart upload was completed (direct uploads, before verification).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete: bool,
}

impl UploadState {
    pub fn parse(backend: &str) -> StorageResult<Self> {
        berth_core::parted::decode(backend)
    }

    pub fn encode(&self) -> String {
        berth_core::parted::encode(self)
    }
}

fn missing_ok<T, E: std::error::Error + 'static>(
    what: &str,
    result: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> StorageResult<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(storage_error(what, e)),
    }
}

#[async_trait::async_trait]
impl PartStore for Bucket {
    async fn create_multipart(&self, key: &str) -> StorageResult<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .content_type("application/octet-stream")
            .send()
            .await
            .map_err(|e| storage_error("CreateMultipartUpload", e))?;
        out.upload_id.ok_or_else(|| StorageError::new("S3 CreateMultipartUpload returned no upload id"))
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, part: Bytes) -> StorageResult<String> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .part_number(i32::from(number))
            .body(S3Body::from(part))
            .send()
            .await
            .map_err(|e| storage_error("UploadPart", e))?;
        Ok(out.e_tag.unwrap_or_default())
    }

    /// The tail becomes the last part S3-side: its bytes never pass through the function.
    async fn upload_part_from(&self, key: &str, upload_id: &str, number: u16, source: &str) -> StorageResult<String> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .part_number(i32::from(number))
            .copy_source(format!("{}/{source}", self.name))
            .send()
            .await
            .map_err(|e| storage_error("UploadPartCopy of the tail", e))?;
        Ok(out.copy_part_result.and_then(|r| r.e_tag).unwrap_or_default())
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, etags: &[String]) -> StorageResult<()> {
        let parts = etags
            .iter()
            .enumerate()
            .map(|(i, etag)| CompletedPart::builder().part_number(i as i32 + 1).e_tag(etag).build())
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| storage_error("CompleteMultipartUpload", e))?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StorageResult<()> {
        let aborted =
            self.client.abort_multipart_upload().bucket(&self.name).key(key).upload_id(upload_id).send().await;
        missing_ok("AbortMultipartUpload", aborted)
    }

    async fn put_small(&self, key: &str, bytes: Bytes) -> StorageResult<()> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(S3Body::from(bytes))
            .send()
            .await
            .map_err(|e| storage_error("PUT", e))?;
        Ok(())
    }

    async fn get_small(&self, key: &str) -> StorageResult<Bytes> {
        let got = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| storage_error("GET", e))?;
        let bytes = got.body.collect().await.map_err(|e| StorageError::new(format!("S3 read {key}: {e}")))?;
        Ok(bytes.into_bytes())
    }

    /// S3-side (at most a part's worth).
    async fn copy_small(&self, from: &str, to: &str) -> StorageResult<()> {
        self.client
            .copy_object()
            .bucket(&self.name)
            .key(to)
            .copy_source(format!("{}/{from}", self.name))
            .send()
            .await
            .map_err(|e| storage_error("COPY", e))?;
        Ok(())
    }

    async fn size_of(&self, key: &str) -> StorageResult<Option<u64>> {
        match self.client.head_object().bucket(&self.name).key(key).send().await {
            Ok(out) => Ok(Some(out.content_length.unwrap_or(0).max(0) as u64)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(storage_error("HEAD", e)),
        }
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        missing_ok("DELETE", self.client.delete_object().bucket(&self.name).key(key).send().await)
    }

    async fn delete_prefix(&self, prefix: &str) -> StorageResult<()> {
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| storage_error("LIST", e))?;
            for key in out.contents().iter().filter_map(|o| o.key()) {
                self.delete(key).await?;
            }
            token = out.next_continuation_token().map(str::to_owned).filter(|_| out.is_truncated().unwrap_or(false));
            if token.is_none() {
                return Ok(());
            }
        }
    }

    /// An empty pointer object whose metadata names the data object, written with
    /// `If-None-Match: *` (412: content for the digest is stored already).
    async fn link(&self, digest: &Digest, object: &str, size: u64) -> StorageResult<bool> {
        let written = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(blob_key(digest))
            .metadata(META_DATA_KEY, object)
            .metadata(META_SIZE, size.to_string())
            .if_none_match("*")
            .body(S3Body::from(Bytes::new()))
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(412) => Ok(false),
            Err(e) => Err(storage_error("PUT blob pointer", e)),
        }
    }
}
