//! Uploads through the function: each request's bytes are appended to an S3 multipart upload.
//! Requests are smaller than S3's minimum part size (Lambda's 6 MB cap against S3's 5 MiB for
//! every part but the last), so bytes that do not yet make a part are staged in a small "tail"
//! object and combined with the next request's bytes. Memory stays under one part plus one
//! request.

use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use berth_core::storage::StorageResult;
use berth_core::{StorageError, UploadWriter};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{storage_error, Bucket};

/// S3's minimum size of every part but the last.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// The upload's S3 state, saved by the core with the session after every request.
#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct UploadState {
    /// Multipart upload id of `uploads/<id>/data`, once the first part exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mpu: Option<String>,
    /// Part numbers and ETags, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<(i32, String)>,
    /// Bytes held by the parts.
    #[serde(default)]
    pub in_parts: u64,
    /// Bytes staged in the tail object after the parts.
    #[serde(default)]
    pub tail: u64,
    /// Set for a direct upload: the client sends parts to S3 itself (see `direct`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    /// The multipart upload was completed (direct uploads, before verification).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete: bool,
}

impl UploadState {
    pub fn parse(backend: &str) -> StorageResult<Self> {
        if backend.is_empty() {
            return Ok(UploadState::default());
        }
        serde_json::from_str(backend).map_err(|e| StorageError::new(format!("corrupt S3 upload state: {e}")))
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The tail's key names the offset it ends at, so a request that fails after writing a new
    /// tail never overwrites the one the saved session still refers to.
    pub fn tail_key(&self, id: &str) -> String {
        format!("{}tail-{}", upload_prefix(id), self.in_parts + self.tail)
    }
}

pub fn upload_prefix(id: &str) -> String {
    format!("uploads/{id}/")
}

/// Where an upload's bytes are assembled, and stay once published (the blob's key becomes a
/// pointer to it). Outside `uploads/`, so a lifecycle rule may expire staging (tails, abandoned
/// uploads) without touching published content; the same layout as the Worker's R2 bucket.
pub fn data_key(id: &str) -> String {
    format!("data/{id}")
}

pub struct S3UploadWriter {
    bucket: Bucket,
    id: String,
    state: UploadState,
    /// The staged tail followed by this request's bytes, not yet in a part.
    pending: BytesMut,
    wrote: bool,
}

impl S3UploadWriter {
    pub async fn open(bucket: Bucket, id: &str, state: UploadState) -> StorageResult<Self> {
        let mut pending = BytesMut::new();
        if state.tail > 0 {
            let got = bucket
                .client
                .get_object()
                .bucket(&bucket.name)
                .key(state.tail_key(id))
                .send()
                .await
                .map_err(|e| storage_error("GET upload tail", e))?;
            let bytes = got.body.collect().await.map_err(|e| StorageError::new(format!("S3 read tail: {e}")))?;
            pending.extend_from_slice(&bytes.into_bytes());
            if pending.len() as u64 != state.tail {
                return Err(StorageError::new(format!(
                    "upload {id}: tail holds {} bytes, session says {}",
                    pending.len(),
                    state.tail
                )));
            }
        }
        Ok(S3UploadWriter { bucket, id: id.to_owned(), state, pending, wrote: false })
    }

    async fn flush_part(&mut self) -> StorageResult<()> {
        let part = self.pending.split().freeze();
        let len = part.len() as u64;
        let upload_id = match &self.state.mpu {
            Some(mpu) => mpu.clone(),
            None => {
                let mpu = start_multipart(&self.bucket, &self.id).await?;
                self.state.mpu = Some(mpu.clone());
                mpu
            }
        };
        let number = self.state.parts.len() as i32 + 1;
        let out = self
            .bucket
            .client
            .upload_part()
            .bucket(&self.bucket.name)
            .key(data_key(&self.id))
            .upload_id(upload_id)
            .part_number(number)
            .body(S3Body::from(part))
            .send()
            .await
            .map_err(|e| storage_error("UploadPart", e))?;
        self.state.parts.push((number, out.e_tag.unwrap_or_default()));
        self.state.in_parts += len;
        self.state.tail = 0;
        Ok(())
    }
}

pub async fn start_multipart(bucket: &Bucket, id: &str) -> StorageResult<String> {
    let out = bucket
        .client
        .create_multipart_upload()
        .bucket(&bucket.name)
        .key(data_key(id))
        .content_type("application/octet-stream")
        .send()
        .await
        .map_err(|e| storage_error("CreateMultipartUpload", e))?;
    out.upload_id.ok_or_else(|| StorageError::new("S3 CreateMultipartUpload returned no upload id"))
}

#[async_trait::async_trait]
impl UploadWriter for S3UploadWriter {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.wrote = true;
        self.pending.extend_from_slice(&chunk);
        if self.pending.len() >= MIN_PART_BYTES {
            self.flush_part().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> StorageResult<String> {
        if !self.wrote {
            return Ok(self.state.encode());
        }
        self.state.tail = self.pending.len() as u64;
        if !self.pending.is_empty() {
            let key = self.state.tail_key(&self.id);
            let tail = self.pending.split().freeze();
            self.bucket
                .client
                .put_object()
                .bucket(&self.bucket.name)
                .key(key)
                .body(S3Body::from(tail))
                .send()
                .await
                .map_err(|e| storage_error("PUT upload tail", e))?;
        }
        Ok(self.state.encode())
    }
}

/// Appends the staged tail as the last part and completes the multipart object.
pub async fn complete_multipart(bucket: &Bucket, id: &str, state: &mut UploadState) -> StorageResult<()> {
    let upload_id = state.mpu.clone().ok_or_else(|| StorageError::new("no multipart upload to complete"))?;
    if state.tail > 0 {
        let number = state.parts.len() as i32 + 1;
        let out = bucket
            .client
            .upload_part_copy()
            .bucket(&bucket.name)
            .key(data_key(id))
            .upload_id(&upload_id)
            .part_number(number)
            .copy_source(format!("{}/{}", bucket.name, state.tail_key(id)))
            .send()
            .await
            .map_err(|e| storage_error("UploadPartCopy of the tail", e))?;
        let etag = out.copy_part_result.and_then(|r| r.e_tag).unwrap_or_default();
        state.parts.push((number, etag));
        state.in_parts += state.tail;
        state.tail = 0;
    }
    let parts =
        state.parts.iter().map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(etag).build()).collect();
    bucket
        .client
        .complete_multipart_upload()
        .bucket(&bucket.name)
        .key(data_key(id))
        .upload_id(upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|e| storage_error("CompleteMultipartUpload", e))?;
    Ok(())
}
