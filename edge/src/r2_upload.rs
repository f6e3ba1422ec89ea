//! Uploads into R2 multipart uploads, across stateless requests.
//!
//! R2 wants every part but the last to have the same size (at least 5 MiB), while clients send
//! whatever they like: docker one streamed PATCH, containerd one PUT, skopeo and oras chunks of
//! any size. So a request cuts its body into parts of `part_size` as it flows; the bytes left at
//! its end that do not fill a part go into a small staging object, named in the state the core
//! saves with the session, and the next request starts with them. Completion turns the staged
//! tail into the last part: the upload ends as one R2 object, `data/<id>`, and the blob is a small
//! pointer to it, so nothing is ever copied whole.
//!
//! Nothing here trusts a request to finish: the state only moves forward in `finish`, which the
//! core calls after the body ended cleanly; parts a killed request uploaded past the saved state
//! are overwritten by the next one (same part numbers), staging objects have unique names, and
//! `cleanup` removes them all at the end.

use berth_core::storage::StorageResult;
use berth_core::{StorageError, UploadWriter};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::{Bucket, UploadedPart};

use crate::r2_meta::r2_error;

/// R2's smallest part (every part but the last).
pub const R2_MIN_PART: u64 = 5 * 1024 * 1024;

/// What the core saves with the session for this store (opaque to it).
#[derive(Serialize, Deserialize, Default, Clone, Debug)]
pub struct UploadState {
    /// Fixed when the upload starts, so a configuration change cannot mix part sizes.
    pub part_size: u64,
    /// The R2 multipart upload, created with the first full part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<String>,
    /// Etags of parts 1..=n, each exactly `part_size` bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// Bytes after the last full part, kept in a staging object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Tail>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Tail {
    pub key: String,
    pub len: u64,
}

impl UploadState {
    pub fn parse(backend: &str) -> StorageResult<Self> {
        serde_json::from_str(backend)
            .map_err(|e| StorageError::new(format!("corrupt upload state {backend:?}: {e}")))
    }

    pub fn save(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.parts.len() as u64 * self.part_size + self.tail.as_ref().map_or(0, |t| t.len)
    }
}

/// Where an upload's bytes end up once complete.
pub fn data_key(id: &str) -> String {
    format!("data/{id}")
}

/// Staging objects of one upload live under this prefix.
fn staging_prefix(id: &str) -> String {
    format!("uploads/{id}/")
}

pub struct R2UploadWriter {
    bucket: Bucket,
    id: String,
    state: UploadState,
    /// Bytes not yet in a part: the staged tail first, then what this request brought.
    pending: Vec<u8>,
    /// Whether `pending` differs from the staged tail (a request that brought nothing rewrites
    /// nothing).
    changed: bool,
}

impl R2UploadWriter {
    pub async fn open(bucket: Bucket, id: &str, backend: &str, offset: u64) -> StorageResult<Self> {
        let state = UploadState::parse(backend)?;
        if state.len() != offset {
            return Err(StorageError::new(format!(
                "upload {id}: the session says {offset} bytes but the store's state holds {}",
                state.len()
            )));
        }
        let mut pending = Vec::new();
        if let Some(tail) = &state.tail {
            pending = read_small(&bucket, &tail.key).await?;
            if pending.len() as u64 != tail.len {
                return Err(StorageError::new(format!(
                    "upload {id}: staged tail {} is damaged",
                    tail.key
                )));
            }
        }
        Ok(R2UploadWriter {
            bucket,
            id: id.to_owned(),
            state,
            pending,
            changed: false,
        })
    }

    async fn upload_full_parts(&mut self) -> StorageResult<()> {
        let part_size = self.state.part_size as usize;
        while self.pending.len() >= part_size {
            let rest = self.pending.split_off(part_size);
            let part = std::mem::replace(&mut self.pending, rest);
            let etag = upload_part(&self.bucket, &self.id, &mut self.state, part).await?;
            self.state.parts.push(etag);
        }
        Ok(())
    }
}

#[async_trait::async_trait(?Send)]
impl UploadWriter for R2UploadWriter {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.pending.extend_from_slice(&chunk);
        self.changed = true;
        self.upload_full_parts().await
    }

    async fn finish(mut self: Box<Self>) -> StorageResult<String> {
        if self.changed {
            self.state.tail = if self.pending.is_empty() {
                None
            } else {
                // Named by the upload's new length: unique per state, so a killed request can
                // never overwrite the tail a saved session still points at.
                let len = self.pending.len() as u64;
                let new_len = self.state.parts.len() as u64 * self.state.part_size + len;
                let key = format!("{}tail-{new_len}", staging_prefix(&self.id));
                self.bucket
                    .put(&key, std::mem::take(&mut self.pending))
                    .execute()
                    .await
                    .map_err(|e| r2_error("put", &key, e))?;
                Some(Tail { key, len })
            };
        }
        Ok(self.state.save())
    }
}

async fn upload_part(
    bucket: &Bucket,
    id: &str,
    state: &mut UploadState,
    part: Vec<u8>,
) -> StorageResult<String> {
    let key = data_key(id);
    if state.multipart.is_none() {
        let created = bucket
            .create_multipart_upload(&key)
            .execute()
            .await
            .map_err(|e| r2_error("create multipart", &key, e))?;
        state.multipart = Some(created.upload_id().await);
    }
    // Part numbers are 1-based; R2 allows 10,000 of them.
    let number = state.parts.len() + 1;
    let number = u16::try_from(number)
        .ok()
        .filter(|n| *n <= 10_000)
        .ok_or_else(|| StorageError::new(format!("upload {id} is over R2's 10,000 parts")))?;
    let upload_id = state.multipart.clone().unwrap_or_default();
    upload_part_from_wasm(bucket, &key, &upload_id, number, &part)
        .await
        .map_err(|e| r2_error("upload part", &key, e))
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

/// Turns the upload into the object `data/<id>`: the staged tail becomes the last part. Idempotent
/// (the core may read an upload back before it commits it).
pub async fn complete(bucket: &Bucket, id: &str, state: &UploadState) -> StorageResult<u64> {
    let key = data_key(id);
    if let Some(done) = bucket
        .head(&key)
        .await
        .map_err(|e| r2_error("head", &key, e))?
    {
        if done.size() == state.len() {
            return Ok(done.size());
        }
    }
    let tail = match &state.tail {
        Some(tail) => read_small(bucket, &tail.key).await?,
        None => Vec::new(),
    };
    match (&state.multipart, state.parts.is_empty()) {
        (Some(upload_id), false) => {
            let multipart = bucket
                .resume_multipart_upload(&key, upload_id)
                .map_err(|e| r2_error("resume multipart", &key, e))?;
            let mut parts: Vec<UploadedPart> = state
                .parts
                .iter()
                .enumerate()
                .map(|(i, etag)| UploadedPart::new(i as u16 + 1, etag.clone()))
                .collect();
            if !tail.is_empty() {
                let number = parts.len() as u16 + 1;
                let last = multipart
                    .upload_part(number, tail)
                    .await
                    .map_err(|e| r2_error("upload part", &key, e))?;
                parts.push(last);
            }
            multipart
                .complete(parts)
                .await
                .map_err(|e| r2_error("complete multipart", &key, e))?;
        }
        // Smaller than one part: a plain object.
        _ => {
            bucket
                .put(&key, tail)
                .execute()
                .await
                .map_err(|e| r2_error("put", &key, e))?;
        }
    }
    Ok(state.len())
}

/// Discards the multipart upload (if any) and the object (if completed).
pub async fn abort(bucket: &Bucket, id: &str, state: &UploadState) -> StorageResult<()> {
    let key = data_key(id);
    if let Some(upload_id) = &state.multipart {
        // Gone already (completed or aborted) is fine; R2 also expires forgotten ones.
        if let Ok(multipart) = bucket.resume_multipart_upload(&key, upload_id) {
            let _ = multipart.abort().await;
        }
    }
    bucket
        .delete(&key)
        .await
        .map_err(|e| r2_error("delete", &key, e))?;
    cleanup(bucket, id).await
}

/// Removes every staging object of the upload.
pub async fn cleanup(bucket: &Bucket, id: &str) -> StorageResult<()> {
    let prefix = staging_prefix(id);
    loop {
        let page = bucket
            .list()
            .prefix(prefix.clone())
            .execute()
            .await
            .map_err(|e| r2_error("list", &prefix, e))?;
        let keys: Vec<String> = page.objects().iter().map(|o| o.key()).collect();
        if keys.is_empty() {
            return Ok(());
        }
        bucket
            .delete_multiple(keys)
            .await
            .map_err(|e| r2_error("delete", &prefix, e))?;
        if !page.truncated() {
            return Ok(());
        }
    }
}

/// Reads a small object (a staged tail) whole.
pub async fn read_small(bucket: &Bucket, key: &str) -> StorageResult<Vec<u8>> {
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
