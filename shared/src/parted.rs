//! One upload engine for object stores with multipart uploads (R2 in the Worker, S3 on Lambda).
//!
//! Clients send whatever they like (docker one streamed PATCH, containerd one PUT, skopeo and oras
//! chunks of any size) across stateless requests, while the stores want parts of a minimum size
//! (R2: all but the last of one equal size). So a request cuts its bytes into parts of
//! `part_size` as they flow; the bytes left at its end that do not fill a part go into a small
//! staging "tail" object, named in the state the core saves with the session, and the next
//! request starts with them. Completion turns the tail into the last part: the upload ends as one
//! object, `data/<id>`, and the blob becomes a create-only pointer to it, so nothing is copied
//! whole.
//!
//! Nothing here trusts a request to finish: the state only moves forward in `finish`, which the
//! core calls after the body ended cleanly and whose result it saves. A tail is named by the
//! upload's new length, so a request killed after writing one never overwrites the tail a saved
//! session points at; parts a killed request uploaded past the saved state are overwritten by the
//! next request (same part numbers). Staging objects live under `uploads/<id>/` and are removed
//! at the end (lifecycle rules expire what an abandoned upload leaves there).
//!
//! Adapters implement [`PartStore`] (a handful of object-store calls) and keep what is theirs:
//! R2's zero-copy part upload, S3's direct uploads with presigned parts.

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::names::Digest;
use crate::storage::{MaybeSendSync, StorageResult, UploadWriter};

/// Both R2 and S3 allow this many parts per multipart upload.
pub const MAX_PARTS: usize = 10_000;

/// The object-store calls the engine needs. Keys are object keys in one bucket.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait PartStore: MaybeSendSync {
    /// Starts a multipart upload of `key`; returns its upload id.
    async fn create_multipart(&self, key: &str) -> StorageResult<String>;
    /// Uploads part `number` (1-based); returns its etag.
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, part: Bytes) -> StorageResult<String>;
    /// Uploads the small object `source` as part `number`. The default reads it and uploads it;
    /// a store that can copy server-side (S3's UploadPartCopy) overrides this.
    async fn upload_part_from(&self, key: &str, upload_id: &str, number: u16, source: &str) -> StorageResult<String> {
        let bytes = self.get_small(source).await?;
        self.upload_part(key, upload_id, number, bytes).await
    }
    /// Completes the upload from the etags of parts `1..=etags.len()`.
    async fn complete_multipart(&self, key: &str, upload_id: &str, etags: &[String]) -> StorageResult<()>;
    /// Discards a multipart upload; one that is gone already (completed, aborted) is no error.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StorageResult<()>;
    /// Writes a small object (a tail, a small upload's data).
    async fn put_small(&self, key: &str, bytes: Bytes) -> StorageResult<()>;
    /// Reads a small object whole; a missing one is an error.
    async fn get_small(&self, key: &str) -> StorageResult<Bytes>;
    /// Copies a small object. The default reads and writes it; S3 copies server-side.
    async fn copy_small(&self, from: &str, to: &str) -> StorageResult<()> {
        let bytes = self.get_small(from).await?;
        self.put_small(to, bytes).await
    }
    /// The size of an object, or None.
    async fn size_of(&self, key: &str) -> StorageResult<Option<u64>>;
    /// Removes an object; a missing one is no error.
    async fn delete(&self, key: &str) -> StorageResult<()>;
    /// Removes every object whose key starts with `prefix`.
    async fn delete_prefix(&self, prefix: &str) -> StorageResult<()>;
    /// Removes these objects (missing ones are no error); a store with a batch delete uses it.
    async fn delete_keys(&self, keys: &[String]) -> StorageResult<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }
    /// Makes the complete object `object` (`size` bytes) the content of `digest`, only where
    /// there is no content for `digest` yet (create-only, so content already stored stays);
    /// returns whether it did. The blob key layout and pointer format are the store's.
    async fn link(&self, digest: &Digest, object: &str, size: u64) -> StorageResult<bool>;
}

/// An upload's state in the store, saved by the core with the session after every request.
///
/// Adapters with more to save (S3's direct mode) wrap it with `#[serde(flatten)]`.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq, Eq)]
pub struct PartedUpload {
    /// Fixed when the upload starts, so a configuration change cannot mix part sizes.
    pub part_size: u64,
    /// The multipart upload of `data/<id>`, created with the first full part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart: Option<String>,
    /// Etags of parts 1..=n, each exactly `part_size` bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// Bytes after the last full part, kept in a staging object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Tail>,
    /// Staged tails this upload replaced with later ones (still stored), so completion deletes
    /// them by key instead of listing the staging prefix. At most [`MAX_SUPERSEDED`]; past that,
    /// `superseded_overflow` is set and completion lists the prefix as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded_overflow: bool,
}

/// Superseded tails remembered by key; an upload of more unaligned chunks than this falls back
/// to listing its staging prefix at completion (the session record stays small either way).
pub const MAX_SUPERSEDED: usize = 16;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    pub key: String,
    pub len: u64,
}

impl PartedUpload {
    pub fn new(part_size: u64) -> Self {
        PartedUpload { part_size, ..Default::default() }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.parts.len() as u64 * self.part_size + self.tail.as_ref().map_or(0, |t| t.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads a saved backend state (this engine's or an adapter's wrapper of it).
pub fn decode<T: DeserializeOwned>(backend: &str) -> StorageResult<T> {
    // from_slice, not from_str: the Worker then compiles one JSON reader, not two (issue 19).
    serde_json::from_slice(backend.as_bytes()).map_err(|e| StorageError::new(format!("corrupt upload state {backend:?}: {e}")))
}

/// The backend string the core saves.
pub fn encode<T: Serialize>(state: &T) -> String {
    // Plain strings, numbers and flags: serializing cannot fail.
    serde_json::to_string(state).unwrap_or_default()
}

/// Where an upload's bytes end up once complete, and stay once published (the blob is a pointer
/// to it). Outside `uploads/`, so a lifecycle rule may expire staging without touching content.
pub fn data_key(id: &str) -> String {
    format!("data/{id}")
}

/// Staging objects (tails) of one upload live under this prefix.
pub fn staging_prefix(id: &str) -> String {
    format!("uploads/{id}/")
}

/// The staging object holding an upload's tail once the upload has `new_len` bytes: named by
/// that length, so a killed request can never overwrite the tail a saved session points at.
pub fn tail_key(id: &str, new_len: u64) -> String {
    format!("{}{new_len}", tail_key_prefix(id))
}

/// [`tail_key`] without the length, for a writer that learns it at the end.
pub fn tail_key_prefix(id: &str) -> String {
    format!("{}tail-", staging_prefix(id))
}

/// Receives one request's bytes: full parts go out as they fill, the rest becomes the new tail.
pub struct PartedWriter<S> {
    store: S,
    id: String,
    state: PartedUpload,
    /// Bytes not yet in a part: the staged tail first (once loaded), then this request's.
    pending: BytesMut,
    /// Whether this request brought bytes. The staged tail is read only then, so a request that
    /// brings nothing (the final empty PUT) neither reads nor rewrites it.
    changed: bool,
}

impl<S: PartStore> PartedWriter<S> {
    /// Opens the upload at `offset`, the length the session acknowledged.
    pub fn open(store: S, id: &str, state: PartedUpload, offset: u64) -> StorageResult<Self> {
        if state.len() != offset {
            return Err(StorageError::new(format!(
                "upload {id}: the session says {offset} bytes but the store's state holds {}",
                state.len()
            )));
        }
        if state.part_size == 0 {
            return Err(StorageError::new(format!("upload {id}: its state has no part size")));
        }
        Ok(PartedWriter { store, id: id.to_owned(), state, pending: BytesMut::new(), changed: false })
    }

    async fn load_tail(&mut self) -> StorageResult<()> {
        if let Some(tail) = &self.state.tail {
            let bytes = self.store.get_small(&tail.key).await?;
            if bytes.len() as u64 != tail.len {
                return Err(StorageError::new(format!("upload {}: staged tail {} is damaged", self.id, tail.key)));
            }
            self.pending.extend_from_slice(&bytes);
        }
        Ok(())
    }

    async fn upload_full_parts(&mut self) -> StorageResult<()> {
        let part_size = self.state.part_size as usize;
        while self.pending.len() >= part_size {
            let part = self.pending.split_to(part_size).freeze();
            let etag = upload_part(&self.store, &self.id, &mut self.state, part).await?;
            self.state.parts.push(etag);
        }
        Ok(())
    }

    pub async fn write_chunk(&mut self, chunk: Bytes) -> StorageResult<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if !self.changed {
            self.changed = true;
            self.load_tail().await?;
        }
        self.pending.extend_from_slice(&chunk);
        self.upload_full_parts().await
    }

    /// Stages what does not fill a part; returns the new state.
    pub async fn finish_state(mut self) -> StorageResult<PartedUpload> {
        if self.changed {
            // The tail just read is replaced (by a new one, or by parts): completion deletes it.
            if let Some(old) = self.state.tail.take() {
                if self.state.superseded.len() < MAX_SUPERSEDED {
                    self.state.superseded.push(old.key);
                } else {
                    self.state.superseded_overflow = true;
                }
            }
            self.state.tail = if self.pending.is_empty() {
                None
            } else {
                let len = self.pending.len() as u64;
                let new_len = self.state.parts.len() as u64 * self.state.part_size + len;
                // Named by the upload's new length: unique per state, so a killed request can
                // never overwrite the tail a saved session still points at.
                let key = tail_key(&self.id, new_len);
                self.store.put_small(&key, self.pending.split().freeze()).await?;
                Some(Tail { key, len })
            };
        }
        Ok(self.state)
    }
}

async fn upload_part<S: PartStore + ?Sized>(
    store: &S,
    id: &str,
    state: &mut PartedUpload,
    part: Bytes,
) -> StorageResult<String> {
    let key = data_key(id);
    let upload_id = match &state.multipart {
        Some(upload_id) => upload_id.clone(),
        None => {
            let created = store.create_multipart(&key).await?;
            state.multipart = Some(created.clone());
            created
        }
    };
    let number = part_number(id, state.parts.len() + 1)?;
    store.upload_part(&key, &upload_id, number, part).await
}

fn part_number(id: &str, number: usize) -> StorageResult<u16> {
    u16::try_from(number)
        .ok()
        .filter(|n| usize::from(*n) <= MAX_PARTS)
        .ok_or_else(|| StorageError::new(format!("upload {id} is over {MAX_PARTS} parts")))
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl<S: PartStore + 'static> UploadWriter for PartedWriter<S> {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()> {
        self.write_chunk(chunk).await
    }

    async fn finish(self: Box<Self>) -> StorageResult<String> {
        Ok(encode(&self.finish_state().await?))
    }
}

/// Turns the upload into the object `data/<id>`: the tail becomes the last part (or, under one
/// part, the whole object). Returns its size. Idempotent (the core may read an upload back
/// before it commits it): a completion that fails because an earlier one went through finds the
/// object in place.
pub async fn complete<S: PartStore + ?Sized>(store: &S, id: &str, state: &PartedUpload) -> StorageResult<u64> {
    match assemble(store, id, state).await {
        Ok(()) => Ok(state.len()),
        Err(e) => match store.size_of(&data_key(id)).await {
            Ok(Some(size)) if size == state.len() => Ok(size),
            _ => Err(e),
        },
    }
}

async fn assemble<S: PartStore + ?Sized>(store: &S, id: &str, state: &PartedUpload) -> StorageResult<()> {
    let key = data_key(id);
    match (&state.multipart, state.parts.is_empty()) {
        (Some(upload_id), false) => {
            let mut etags = state.parts.clone();
            if let Some(tail) = &state.tail {
                let number = part_number(id, etags.len() + 1)?;
                etags.push(store.upload_part_from(&key, upload_id, number, &tail.key).await?);
            }
            store.complete_multipart(&key, upload_id, &etags).await
        }
        // Smaller than one part: a plain object.
        _ => match &state.tail {
            Some(tail) => store.copy_small(&tail.key, &key).await,
            None => store.put_small(&key, Bytes::new()).await,
        },
    }
}

/// The key of an object holding the whole upload, to read it back (digests other than sha256):
/// the tail itself while there are no parts, else the completed object. None: nothing uploaded.
pub async fn readable<S: PartStore + ?Sized>(store: &S, id: &str, state: &PartedUpload) -> StorageResult<Option<String>> {
    if state.parts.is_empty() {
        return Ok(state.tail.as_ref().map(|t| t.key.clone()));
    }
    complete(store, id, state).await?;
    Ok(Some(data_key(id)))
}

/// Completes the upload and publishes it as `digest`'s content, which the core verified.
pub async fn commit<S: PartStore + ?Sized>(
    store: &S,
    id: &str,
    state: &PartedUpload,
    digest: &Digest,
    size: u64,
) -> StorageResult<()> {
    let stored = complete(store, id, state).await?;
    if stored != size {
        return Err(StorageError::new(format!("upload {id}: stored {stored} bytes, the session says {size}")));
    }
    publish(store, id, digest, size).await?;
    cleanup_staging(store, id, state).await
}

/// Deletes what an upload staged: its tails by key (one call for the current one and each it
/// superseded), or by listing the prefix when it superseded too many to remember. A request
/// killed after staging a tail but before its session was saved leaves that tail to the bucket's
/// lifecycle rule on `uploads/`.
pub async fn cleanup_staging<S: PartStore + ?Sized>(store: &S, id: &str, state: &PartedUpload) -> StorageResult<()> {
    if state.superseded_overflow {
        return store.delete_prefix(&staging_prefix(id)).await;
    }
    let keys: Vec<String> = state.superseded.iter().cloned().chain(state.tail.iter().map(|t| t.key.clone())).collect();
    if keys.is_empty() {
        return Ok(());
    }
    store.delete_keys(&keys).await
}

/// Publishes the complete object `data/<id>` as `digest`'s content: a create-only pointer, not a
/// copy. Where the content is stored already, it stays and the new copy goes.
pub async fn publish<S: PartStore + ?Sized>(store: &S, id: &str, digest: &Digest, size: u64) -> StorageResult<()> {
    let object = data_key(id);
    if !store.link(digest, &object, size).await? {
        store.delete(&object).await?;
    }
    Ok(())
}

/// Discards an upload: its multipart upload (when still open), its object and its staging.
pub async fn abort<S: PartStore + ?Sized>(store: &S, id: &str, multipart: Option<&str>) -> StorageResult<()> {
    let key = data_key(id);
    if let Some(upload_id) = multipart {
        store.abort_multipart(&key, upload_id).await?;
    }
    store.delete(&key).await?;
    store.delete_prefix(&staging_prefix(id)).await
}

#[cfg(test)]
mod tests;
