//! In-memory storage: a [`BlobStore`] and a [`MetaStore`] in plain maps behind a mutex.
//!
//! Complete (uploads, conditional writes, ordered listing, atomic batches, enumeration) and pure
//! Rust, so it builds for wasm32 like the rest of the core. Uses: unit tests that drive the whole
//! registry without a process (`shared/tests/in_memory.rs`), embedding Berth in another program,
//! and the reference the storage contract (`contract`, feature `contract`) is checked against.
//! Nothing survives the process; clones share one store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

use crate::error::StorageError;
use crate::names::Digest;
use crate::storage::{
    is_after, precondition_holds, BatchOp, BlobStore, ByteRange, ByteStream, MetaStore, Precondition,
    NativeAppend, PutOutcome, StorageResult, StoredBlob, UploadWriter, Versioned,
};

/// A poisoned lock only means another thread panicked mid-operation; every operation here leaves
/// the maps consistent at each step, so the data is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn one_chunk(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::iter(
        (!bytes.is_empty()).then_some(Ok(bytes)),
    ))
}

/// Blobs by digest string (so iteration is in `list_blobs` order), and uploads in progress.
#[derive(Clone, Default)]
pub struct MemoryBlobStore {
    state: Arc<Mutex<BlobState>>,
    /// Takes bodies through `upload_native`, as a runtime with its own digest would: so the
    /// core's native-digest protocol is tested without one.
    native: bool,
}

#[derive(Default)]
struct BlobState {
    blobs: BTreeMap<String, (Digest, Bytes)>,
    uploads: HashMap<String, Upload>,
    /// Bodies taken by `upload_native`.
    native_bodies: usize,
}

struct Upload {
    data: BytesMut,
    /// Raised by every new writer: an older writer (a request whose claim lapsed) finds it
    /// changed and stops, as the local store's fence does.
    writer: u64,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that takes whole bodies natively ([`BlobStore::upload_native`]), hashing them
    /// itself, as the Worker does with the runtime's digest.
    pub fn with_native_digest() -> Self {
        MemoryBlobStore { native: true, ..Self::default() }
    }

    /// How many request bodies `upload_native` took (with [`MemoryBlobStore::with_native_digest`]).
    pub fn native_bodies(&self) -> usize {
        lock(&self.state).native_bodies
    }

    /// Number of uploads whose data is held (started, neither committed nor aborted).
    pub fn uploads_in_progress(&self) -> usize {
        lock(&self.state).uploads.len()
    }
}

fn unknown_upload(id: &str) -> StorageError {
    StorageError::new(format!("upload {id} does not exist in this store"))
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl BlobStore for MemoryBlobStore {
    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        Ok(lock(&self.state).blobs.get(&digest.to_string()).map(|(_, b)| b.len() as u64))
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> StorageResult<Option<ByteStream>> {
        let Some(content) = lock(&self.state).blobs.get(&digest.to_string()).map(|(_, b)| b.clone()) else {
            return Ok(None);
        };
        let len = content.len() as u64;
        let content = match range {
            None => content,
            // The core checks ranges against the size; clamp anyway rather than panic.
            Some(r) => content.slice(r.start.min(len) as usize..r.end.clamp(r.start.min(len), len) as usize),
        };
        Ok(Some(one_chunk(content)))
    }

    async fn put_verified(&self, digest: &Digest, content: Bytes) -> StorageResult<()> {
        lock(&self.state).blobs.insert(digest.to_string(), (digest.clone(), content));
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<()> {
        lock(&self.state).blobs.remove(&digest.to_string());
        Ok(())
    }

    async fn list_blobs(&self, after: Option<&Digest>, limit: usize) -> StorageResult<Vec<StoredBlob>> {
        let state = lock(&self.state);
        let start = after.map(|a| a.to_string());
        let entries: Box<dyn Iterator<Item = (&String, &(Digest, Bytes))>> = match &start {
            Some(a) => Box::new(state.blobs.range::<String, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))),
            None => Box::new(state.blobs.iter()),
        };
        Ok(entries
            .filter(|(key, _)| is_after(key, after))
            .take(limit)
            .map(|(_, (digest, content))| StoredBlob { digest: digest.clone(), size: content.len() as u64 })
            .collect())
    }

    async fn upload_start(&self, id: &str) -> StorageResult<String> {
        lock(&self.state).uploads.insert(id.to_owned(), Upload { data: BytesMut::new(), writer: 0 });
        Ok(String::new())
    }

    async fn upload_writer(&self, id: &str, _backend: &str, offset: u64) -> StorageResult<Box<dyn UploadWriter>> {
        let mut state = lock(&self.state);
        let upload = state.uploads.get_mut(id).ok_or_else(|| unknown_upload(id))?;
        let held = upload.data.len() as u64;
        if offset > held {
            return Err(StorageError::new(format!("upload {id} holds {held} bytes, cannot resume at {offset}")));
        }
        // Bytes past the acknowledged length came from an interrupted request.
        upload.data.truncate(offset as usize);
        upload.writer += 1;
        Ok(Box::new(MemoryUploadWriter { state: self.state.clone(), id: id.to_owned(), writer: upload.writer }))
    }

    async fn upload_native(&self, id: &str, _backend: &str, limit: Option<u64>, mut body: ByteStream) -> StorageResult<NativeAppend> {
        if !self.native {
            return Ok(NativeAppend::Declined(body));
        }
        // Read first, store after: a body that fails leaves the upload as it was.
        let mut data = BytesMut::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
            match chunk {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(e) => return Ok(NativeAppend::Broken { received: data.len() as u64, message: e.to_string() }),
            }
            if limit.is_some_and(|l| data.len() as u64 > l) {
                return Ok(NativeAppend::TooLarge);
            }
        }
        let sha256 = crate::hash::sha256_of(&data);
        let received = data.len() as u64;
        let mut state = lock(&self.state);
        let upload = state.uploads.get_mut(id).ok_or_else(|| unknown_upload(id))?;
        upload.data = data;
        upload.writer += 1;
        state.native_bodies += 1;
        Ok(NativeAppend::Appended { backend: String::new(), received, sha256 })
    }

    async fn upload_read(&self, id: &str, _backend: &str) -> StorageResult<ByteStream> {
        let state = lock(&self.state);
        let upload = state.uploads.get(id).ok_or_else(|| unknown_upload(id))?;
        Ok(one_chunk(Bytes::copy_from_slice(&upload.data)))
    }

    async fn upload_commit(&self, id: &str, _backend: &str, digest: &Digest, size: u64) -> StorageResult<()> {
        let mut state = lock(&self.state);
        let held = state.uploads.get(id).ok_or_else(|| unknown_upload(id))?.data.len() as u64;
        // The verified hash covers `size` bytes; anything else is not that blob.
        if held != size {
            return Err(StorageError::new(format!("upload {id} holds {held} bytes, not the {size} that were verified")));
        }
        let upload = state.uploads.remove(id).ok_or_else(|| unknown_upload(id))?;
        state.blobs.insert(digest.to_string(), (digest.clone(), upload.data.freeze()));
        Ok(())
    }

    async fn upload_abort(&self, id: &str, _backend: &str) -> StorageResult<()> {
        lock(&self.state).uploads.remove(id);
        Ok(())
    }
}

struct MemoryUploadWriter {
    state: Arc<Mutex<BlobState>>,
    id: String,
    writer: u64,
}

impl MemoryUploadWriter {
    /// Runs `f` on the upload if this writer is still its current one.
    fn with_upload<T>(&self, f: impl FnOnce(&mut Upload) -> T) -> StorageResult<T> {
        let mut state = lock(&self.state);
        match state.uploads.get_mut(&self.id) {
            Some(upload) if upload.writer == self.writer => Ok(f(upload)),
            Some(_) => Err(StorageError::new(format!("upload {}: a newer writer took over", self.id))),
            None => Err(unknown_upload(&self.id)),
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl UploadWriter for MemoryUploadWriter {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()> {
        self.with_upload(|upload| upload.data.extend_from_slice(&chunk))
    }

    async fn finish(self: Box<Self>) -> StorageResult<String> {
        self.with_upload(|_| String::new())
    }
}

/// Records with versions from one counter: a key deleted and created again never repeats a
/// version a client may still hold. Batches apply all or nothing, as on the local store.
#[derive(Clone, Default)]
pub struct MemoryMetaStore {
    state: Arc<Mutex<MetaState>>,
}

#[derive(Default)]
struct MetaState {
    records: BTreeMap<String, (u64, Bytes)>,
    counter: u64,
}

impl MetaState {
    fn version(&self, key: &str) -> Option<String> {
        self.records.get(key).map(|(v, _)| v.to_string())
    }

    fn write(&mut self, key: &str, value: Bytes) -> String {
        self.counter += 1;
        self.records.insert(key.to_owned(), (self.counter, value));
        self.counter.to_string()
    }
}

impl MemoryMetaStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl MetaStore for MemoryMetaStore {
    async fn get(&self, key: &str) -> StorageResult<Option<Versioned>> {
        Ok(lock(&self.state)
            .records
            .get(key)
            .map(|(version, value)| Versioned { value: value.clone(), version: version.to_string() }))
    }

    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> StorageResult<PutOutcome> {
        let mut state = lock(&self.state);
        if !precondition_holds(&cond, state.version(key).as_deref()) {
            return Ok(PutOutcome::Conflict);
        }
        Ok(PutOutcome::Written { version: state.write(key, value) })
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        lock(&self.state).records.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        let state = lock(&self.state);
        let start = after.filter(|a| *a >= prefix).unwrap_or(prefix);
        Ok(state
            .records
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .map(|(key, _)| key)
            .take_while(|key| key.starts_with(prefix))
            .filter(|key| Some(key.as_str()) != after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn apply(&self, ops: Vec<BatchOp>) -> StorageResult<Vec<bool>> {
        let mut state = lock(&self.state);
        // Staged writes over the current records, so each condition sees what the earlier ops
        // of the batch did, as in one transaction; nothing is applied unless all hold.
        let mut staged: BTreeMap<String, Option<(u64, Bytes)>> = BTreeMap::new();
        let mut counter = state.counter;
        for op in &ops {
            let current = match staged.get(op.key()) {
                Some(staged) => staged.as_ref().map(|(version, _)| version.to_string()),
                None => state.version(op.key()),
            };
            let (cond, value) = match op {
                BatchOp::Put { cond, value, .. } => (cond, Some(value)),
                BatchOp::Delete { cond, .. } => (cond, None),
            };
            if !precondition_holds(cond, current.as_deref()) {
                return Ok(vec![false; ops.len()]);
            }
            let new = value.map(|value| {
                counter += 1;
                (counter, value.clone())
            });
            staged.insert(op.key().to_owned(), new);
        }
        state.counter = counter;
        for (key, record) in staged {
            match record {
                Some(record) => state.records.insert(key, record),
                None => state.records.remove(&key),
            };
        }
        Ok(vec![true; ops.len()])
    }
}

#[cfg(all(test, feature = "contract"))]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn memory_blob_store_keeps_the_contract() {
        let store = MemoryBlobStore::new();
        block_on(crate::contract::blob_store_contract(&store)).unwrap();
        assert_eq!(store.uploads_in_progress(), 0, "the contract left uploads behind");
    }

    #[test]
    fn memory_meta_store_keeps_the_contract() {
        block_on(crate::contract::meta_store_contract(&MemoryMetaStore::new())).unwrap();
    }

    /// The contract passes a store whose batches are not atomic; this one's are.
    #[test]
    fn memory_batches_apply_all_or_nothing() {
        block_on(async {
            let meta = MemoryMetaStore::new();
            meta.put("a", Bytes::from_static(b"1"), Precondition::None).await.unwrap();
            let ops = vec![
                BatchOp::Put { key: "b".into(), value: Bytes::from_static(b"2"), cond: Precondition::Absent },
                BatchOp::Delete { key: "a".into(), cond: Precondition::Version("stale".into()) },
            ];
            assert_eq!(meta.apply(ops).await.unwrap(), [false, false]);
            assert!(meta.get("b").await.unwrap().is_none());
        });
    }

    /// A writer replaced by a newer one (its request's claim lapsed) cannot write again.
    #[test]
    fn a_superseded_writer_is_fenced_off() {
        block_on(async {
            let store = MemoryBlobStore::new();
            store.upload_start("u").await.unwrap();
            let mut old = store.upload_writer("u", "", 0).await.unwrap();
            old.write(Bytes::from_static(b"abc")).await.unwrap();
            let mut new = store.upload_writer("u", "", 0).await.unwrap();
            assert!(old.write(Bytes::from_static(b"zzz")).await.is_err());
            new.write(Bytes::from_static(b"xy")).await.unwrap();
            new.finish().await.unwrap();
            assert!(store.upload_writer("u", "", 3).await.is_err(), "resumed past the data held");
        });
    }
}
