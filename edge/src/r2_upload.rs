//! Uploads into R2 multipart uploads: the core's engine (`berth_core::parted`) over the R2 calls
//! below. R2 wants every part but the last to have the same size (at least 5 MiB): the engine
//! cuts parts of the configured `part_size`, stages the rest in a tail object between requests,
//! and at completion links the digest to `data/<id>` with a create-only pointer. What is R2's
//! alone: uploading parts from wasm memory without a copy in the JS heap.

use std::collections::HashMap;

use berth_core::names::Digest;
use berth_core::parted::PartStore;
use berth_core::storage::StorageResult;
use berth_core::StorageError;
use bytes::Bytes;
use wasm_bindgen::JsValue;
use worker::{Bucket, Conditional, UploadedPart};

use crate::r2_meta::r2_error;

/// R2's smallest part (every part but the last).
pub const R2_MIN_PART: u64 = 5 * 1024 * 1024;

/// Custom metadata of a pointer object: the object holding the content, and its size.
pub const POINTER_OBJECT: &str = "object";
pub const POINTER_SIZE: &str = "size";

pub fn blob_key(digest: &Digest) -> String {
    format!("blobs/{digest}")
}

/// The bucket as the engine's part store.
#[derive(Clone)]
pub struct R2Parts(pub Bucket);

#[async_trait::async_trait(?Send)]
impl PartStore for R2Parts {
    async fn create_multipart(&self, key: &str) -> StorageResult<String> {
        crate::calls::note("r2.create_multipart");
        let created = self
            .0
            .create_multipart_upload(key)
            .execute()
            .await
            .map_err(|e| r2_error("create multipart", key, e))?;
        Ok(created.upload_id().await)
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, part: Bytes) -> StorageResult<String> {
        crate::calls::note("r2.upload_part");
        upload_part_from_wasm(&self.0, key, upload_id, number, &part)
            .await
            .map_err(|e| r2_error("upload part", key, e))
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, etags: &[String]) -> StorageResult<()> {
        crate::calls::note("r2.complete_multipart");
        let multipart = self
            .0
            .resume_multipart_upload(key, upload_id)
            .map_err(|e| r2_error("resume multipart", key, e))?;
        let parts: Vec<UploadedPart> =
            etags.iter().enumerate().map(|(i, etag)| UploadedPart::new(i as u16 + 1, etag.clone())).collect();
        multipart
            .complete(parts)
            .await
            .map_err(|e| r2_error("complete multipart", key, e))?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StorageResult<()> {
        // Gone already (completed or aborted) is fine; R2 also expires forgotten ones.
        crate::calls::note("r2.abort_multipart");
        if let Ok(multipart) = self.0.resume_multipart_upload(key, upload_id) {
            let _ = multipart.abort().await;
        }
        Ok(())
    }

    async fn put_small(&self, key: &str, bytes: Bytes) -> StorageResult<()> {
        crate::calls::note("r2.put");
        // Without a copy when the engine's buffer is not shared (it is not, for a tail).
        self.0
            .put(key, Vec::from(bytes))
            .execute()
            .await
            .map_err(|e| r2_error("put", key, e))?;
        Ok(())
    }

    async fn get_small(&self, key: &str) -> StorageResult<Bytes> {
        read_small(&self.0, key).await.map(Bytes::from)
    }

    async fn size_of(&self, key: &str) -> StorageResult<Option<u64>> {
        crate::calls::note("r2.head");
        let head = self.0.head(key).await.map_err(|e| r2_error("head", key, e))?;
        Ok(head.map(|o| o.size()))
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        crate::calls::note("r2.delete");
        self.0.delete(key).await.map_err(|e| r2_error("delete", key, e))
    }

    async fn delete_keys(&self, keys: &[String]) -> StorageResult<()> {
        crate::calls::note("r2.delete_multiple");
        self.0
            .delete_multiple(keys.to_vec())
            .await
            .map_err(|e| r2_error("delete", &keys.join(" "), e))
    }

    async fn delete_prefix(&self, prefix: &str) -> StorageResult<()> {
        loop {
            crate::calls::note("r2.list");
            let page = self
                .0
                .list()
                .prefix(prefix.to_owned())
                .execute()
                .await
                .map_err(|e| r2_error("list", prefix, e))?;
            let keys: Vec<String> = page.objects().iter().map(|o| o.key()).collect();
            if keys.is_empty() {
                return Ok(());
            }
            crate::calls::note("r2.delete_multiple");
            self.0
                .delete_multiple(keys)
                .await
                .map_err(|e| r2_error("delete", prefix, e))?;
            if !page.truncated() {
                return Ok(());
            }
        }
    }

    /// An empty pointer object (custom metadata `object` and `size`), written only where there
    /// is no blob yet.
    async fn link(&self, digest: &Digest, object: &str, size: u64) -> StorageResult<bool> {
        let pointer = blob_key(digest);
        let meta = HashMap::from([
            (POINTER_OBJECT.to_owned(), object.to_owned()),
            (POINTER_SIZE.to_owned(), size.to_string()),
        ]);
        crate::calls::note("r2.put");
        let written = self
            .0
            .put(&pointer, Vec::new())
            .custom_metadata(meta)
            .only_if(Conditional {
                etag_does_not_match: Some("*".into()),
                ..Default::default()
            })
            .execute()
            .await
            .map_err(|e| r2_error("put", &pointer, e))?;
        Ok(written.is_some())
    }
}

/// `uploadPart` with a view of the part in wasm memory instead of a copy in the JS heap: the
/// `worker` crate copies every part into a new `Uint8Array` that only GC frees, and a few hundred
/// MiB of those, on top of a cache fill, pushed the isolate over its memory limit in tests.
/// workerd takes the view's bytes when the call is made.
async fn upload_part_from_wasm(bucket: &Bucket, key: &str, upload_id: &str, number: u16, part: &[u8]) -> worker::Result<String> {
    use wasm_bindgen::JsCast;
    let raw_bucket: &JsValue = bucket.as_ref();
    let resume: js_sys::Function = js_sys::Reflect::get(raw_bucket, &"resumeMultipartUpload".into())?.dyn_into()?;
    let upload = resume.call2(raw_bucket, &JsValue::from(key), &JsValue::from(upload_id))?;
    let upload_part: js_sys::Function = js_sys::Reflect::get(&upload, &"uploadPart".into())?.dyn_into()?;
    // SAFETY: the view lives only for the synchronous uploadPart call, which copies the bytes;
    // no Rust code runs in between, so wasm memory cannot grow and detach it.
    let view = unsafe { js_sys::Uint8Array::view(part) };
    let promise = upload_part.call2(&upload, &JsValue::from(number), &view);
    drop(view);
    let promise: js_sys::Promise = promise?.dyn_into()?;
    let uploaded = wasm_bindgen_futures::JsFuture::from(promise).await?;
    js_sys::Reflect::get(&uploaded, &"etag".into())?
        .as_string()
        .ok_or_else(|| worker::Error::RustError("uploadPart returned no etag".into()))
}

/// Reads a small object (a staged tail) whole.
async fn read_small(bucket: &Bucket, key: &str) -> StorageResult<Vec<u8>> {
    crate::calls::note("r2.get");
    let object = bucket
        .get(key)
        .execute()
        .await
        .map_err(|e| r2_error("get", key, e))?
        .ok_or_else(|| StorageError::new(format!("R2 object {key} is missing")))?;
    let body = object
        .body()
        .ok_or_else(|| StorageError::new(format!("R2 object {key} has no body")))?;
    body.bytes().await.map_err(|e| r2_error("read", key, e))
}
