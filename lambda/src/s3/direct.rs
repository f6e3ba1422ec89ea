//! Direct uploads on S3 (Berth's extension, see berth-core's `uploads::direct`): the client PUTs
//! parts of `data/<id>` to presigned UploadPart URLs; completion lists the parts S3
//! holds, so the client never has to send ETags back.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use berth_core::parted::{data_key, PartStore};
use berth_core::storage::StorageResult;
use berth_core::{DirectLimits, ErrorCode, StorageError};

use super::blobs::{presigning, S3BlobStore};
use super::upload::{UploadState, MIN_PART_BYTES};
use super::{status_of, storage_error};

/// S3's limits for multipart uploads.
pub const LIMITS: DirectLimits = DirectLimits {
    min_part_size: MIN_PART_BYTES as u64,
    max_part_size: 5 * 1024 * 1024 * 1024,
    max_parts: 10_000,
};

impl S3BlobStore {
    pub(super) async fn start_direct(&self, id: &str, backend: &str) -> StorageResult<String> {
        let mut state = UploadState::parse(backend)?;
        if !state.upload.is_empty() {
            return Err(StorageError::new("a direct upload must start empty"));
        }
        if state.upload.multipart.is_none() {
            state.upload.multipart = Some(self.bucket.create_multipart(&data_key(id)).await?);
        }
        state.direct = true;
        Ok(state.encode())
    }

    pub(super) async fn presign_parts(
        &self,
        id: &str,
        backend: &str,
        first: u32,
        count: u32,
        now: u64,
    ) -> StorageResult<(Vec<String>, u64)> {
        let state = UploadState::parse(backend)?;
        let Some(mpu) = state.upload.multipart.filter(|_| state.direct) else {
            return Err(StorageError::new("not a direct upload"));
        };
        let mut urls = Vec::with_capacity(count as usize);
        for number in first..first + count {
            let presigning = presigning(now, self.part_url_expiry)?;
            let presigned = self
                .bucket
                .client
                .upload_part()
                .bucket(&self.bucket.name)
                .key(data_key(id))
                .upload_id(&mpu)
                .part_number(number as i32)
                .presigned(presigning)
                .await
                .map_err(|e| storage_error("presign UploadPart", e))?;
            urls.push(presigned.uri().to_owned());
        }
        Ok((urls, now + self.part_url_expiry.as_secs()))
    }

    /// Completes the multipart object from the parts S3 holds. A repeat after a completion that
    /// went through (the request failed later) finds the object in place.
    pub(super) async fn finish_direct(&self, id: &str, backend: &str) -> StorageResult<(String, u64)> {
        let state = UploadState::parse(backend)?;
        let Some(mpu) = state.upload.multipart.clone().filter(|_| state.direct) else {
            return Err(StorageError::new("not a direct upload"));
        };
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut marker: Option<String> = None;
        loop {
            let listed = self
                .bucket
                .client
                .list_parts()
                .bucket(&self.bucket.name)
                .key(data_key(id))
                .upload_id(&mpu)
                .set_part_number_marker(marker.clone())
                .send()
                .await;
            let out = match listed {
                Ok(out) => out,
                Err(e) if status_of(&e) == Some(404) => return self.already_complete(state, id).await,
                Err(e) => return Err(storage_error("ListParts", e)),
            };
            for part in out.parts() {
                size += part.size().unwrap_or(0).max(0) as u64;
                parts.push(
                    CompletedPart::builder()
                        .part_number(part.part_number().unwrap_or(0))
                        .set_e_tag(part.e_tag().map(str::to_owned))
                        .build(),
                );
            }
            if !out.is_truncated().unwrap_or(false) {
                break;
            }
            marker = out.next_part_number_marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        // Completion wants ascending part numbers; not every S3 lists them in order.
        parts.sort_by_key(|p| p.part_number());
        if parts.is_empty() {
            return Err(StorageError::client(
                ErrorCode::BlobUploadInvalid,
                format!("direct upload {id}: no part reached storage; upload the parts to their URLs first"),
            ));
        }
        self.bucket
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket.name)
            .key(data_key(id))
            .upload_id(mpu)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| match e.as_service_error().and_then(|se| se.code()) {
                // What the client uploaded does not make a valid object: its fault, and it can
                // upload the offending parts again and complete once more.
                Some(code @ ("EntityTooSmall" | "InvalidPart" | "InvalidPartOrder")) => StorageError::client(
                    ErrorCode::BlobUploadInvalid,
                    format!(
                        "S3 refused the uploaded parts ({code}): every part but the last must be at \
                         least 5 MiB; upload those parts again, then complete"
                    ),
                ),
                _ => storage_error("CompleteMultipartUpload", e),
            })?;
        let mut state = state;
        state.complete = true;
        Ok((state.encode(), size))
    }

    async fn already_complete(&self, mut state: UploadState, id: &str) -> StorageResult<(String, u64)> {
        let head = self.bucket.client.head_object().bucket(&self.bucket.name).key(data_key(id)).send().await;
        match head {
            Ok(out) => {
                let size = out.content_length.unwrap_or(0).max(0) as u64;
                state.complete = true;
                Ok((state.encode(), size))
            }
            Err(e) => Err(storage_error("direct upload is neither open nor complete", e)),
        }
    }
}
