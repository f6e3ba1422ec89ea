//! The narrow storage interface every runtime implements: blob content (with uploads) and a small
//! metadata store with conditional writes. R2 + KV, S3 (+ DynamoDB) and a local directory + embedded
//! database all fit behind these two traits; the protocol never sees which one it talks to.

use bytes::Bytes;

use crate::error::StorageError;
use crate::names::Digest;

/// Streams are `Send` on native targets (tokio moves tasks between threads) and not on wasm32,
/// where the Worker's JS-backed types never are.
#[cfg(not(target_arch = "wasm32"))]
pub type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, StorageError>> + Send + 'static>>;
#[cfg(target_arch = "wasm32")]
pub type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, StorageError>> + 'static>>;

#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync> MaybeSendSync for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSendSync {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSendSync for T {}

#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send> MaybeSend for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSend for T {}

pub type StorageResult<T> = Result<T, StorageError>;

/// A byte range `[start, end)` already checked against the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// Content addressed by digest, and the uploads that produce it.
///
/// An upload is identified by the id the core chose plus an opaque `backend` string the store
/// returns (an R2/S3 multipart upload id and its parts, for example); the core saves both with the
/// session so that any stateless instance can continue it.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait BlobStore: MaybeSendSync + 'static {
    /// Size of a verified blob, or None.
    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>>;
    /// The content of a verified blob (or a range of it), or None.
    async fn read(&self, digest: &Digest, range: Option<ByteRange>)
        -> StorageResult<Option<ByteStream>>;
    /// A manifest's bytes, whole, or None. Manifests are read far more often than blobs and are
    /// small, so a store may serve them from a cache ([`BlobStore::read`] never consults one:
    /// a layer GET that asked a manifest cache first would pay a miss every time).
    async fn read_manifest(&self, digest: &Digest) -> StorageResult<Option<ByteStream>> {
        self.read(digest, None).await
    }
    /// Stores small content the core has already verified, in one write: manifest bytes, and
    /// blobs pushed whole up to `uploads::SMALL_BLOB_BYTES`.
    async fn put_verified(&self, digest: &Digest, content: Bytes) -> StorageResult<()>;
    /// Removes content. Absent content is not an error.
    async fn delete(&self, digest: &Digest) -> StorageResult<()>;
    /// Enumerates stored content (verified blobs and manifest bytes; what garbage collection
    /// walks): up to `limit` entries whose digest, as a string (`sha256:<hex>`), sorts after
    /// `after`, in that order. Page with the last digest of the previous page as `after`; a page
    /// shorter than `limit` is the last. Sizes are the content's, as [`BlobStore::stat`] reports
    /// them (pointer objects count as the content they point to). Objects that are not content
    /// (stray files, malformed names) are skipped.
    ///
    /// Uploads in progress are not content: their sessions are [`MetaStore`] records under the
    /// `uploads/` prefix (see `records::UPLOADS`), enumerable with [`MetaStore::list`], and each
    /// names the `backend` state that [`BlobStore::upload_abort`] needs to discard its data.
    async fn list_blobs(&self, after: Option<&Digest>, limit: usize) -> StorageResult<Vec<StoredBlob>>;
    /// Whether [`BlobStore::redirect_url`] may send blob GETs elsewhere. A pull-through cache's
    /// first pull is then stored before it is answered (the redirect needs the stored blob);
    /// otherwise it is answered while it is stored.
    fn redirects(&self) -> bool {
        false
    }

    /// A short-lived URL a client can fetch the blob from directly, when the store can presign.
    /// `now` is the Unix time in seconds (the core never reads a clock).
    async fn redirect_url(&self, _digest: &Digest, _now: u64) -> StorageResult<Option<String>> {
        Ok(None)
    }

    /// Takes a whole request body at the start of an empty upload (the session's offset is 0)
    /// outside the core, hashing it with the runtime's own sha256 on the way, and returns the
    /// new backend state, the byte count and that digest. The core saves the digest with the
    /// session: it completes the upload when nothing is appended after it, so this suits a
    /// body that is the whole blob (a monolithic POST or PUT, docker's one streamed PATCH).
    ///
    /// A store whose runtime holds the request body in native form (the Worker: a JS stream)
    /// may read that instead of `body`, but only while `body` was not polled. The default, and
    /// any store that cannot, declines and gives `body` back: the core then streams it through
    /// [`BlobStore::upload_writer`] and hashes it itself. Nothing past the saved state may
    /// become visible when this fails: the core keeps the session as it was.
    async fn upload_native(&self, _id: &str, _backend: &str, _limit: Option<u64>, body: ByteStream) -> StorageResult<NativeAppend> {
        Ok(NativeAppend::Declined(body))
    }

    /// Starts an upload; returns the backend state to save with the session.
    async fn upload_start(&self, id: &str) -> StorageResult<String>;
    /// Opens a writer that appends at `offset`, the length the session has acknowledged. Bytes
    /// past `offset` left by an interrupted request are discarded.
    async fn upload_writer(
        &self,
        id: &str,
        backend: &str,
        offset: u64,
    ) -> StorageResult<Box<dyn UploadWriter>>;
    /// Reads back what was uploaded (used to verify digests other than sha256).
    async fn upload_read(&self, id: &str, backend: &str) -> StorageResult<ByteStream>;
    /// Makes the upload the content of `digest`, which the core has verified. Atomic: readers
    /// see nothing or all of it.
    async fn upload_commit(
        &self,
        id: &str,
        backend: &str,
        digest: &Digest,
        size: u64,
    ) -> StorageResult<()>;
    /// Discards the upload's data.
    async fn upload_abort(&self, id: &str, backend: &str) -> StorageResult<()>;

    // Berth's direct-upload extension (see `uploads::direct`): the client sends parts straight
    // to storage. Stores that cannot presign keep these defaults and the extension stays off.

    /// The part limits of direct uploads, or None when the store does not take them.
    fn direct_limits(&self) -> Option<DirectLimits> {
        None
    }
    /// Switches a fresh upload to direct mode; returns the new backend state.
    async fn direct_start(&self, _id: &str, _backend: &str) -> StorageResult<String> {
        Err(StorageError::new("direct uploads are not supported by this store"))
    }
    /// Presigned URLs for parts `first..first + count`, signed at `now` (Unix seconds), and the
    /// Unix time they expire.
    async fn direct_part_urls(
        &self,
        _id: &str,
        _backend: &str,
        _first: u32,
        _count: u32,
        _now: u64,
    ) -> StorageResult<(Vec<String>, u64)> {
        Err(StorageError::new("direct uploads are not supported by this store"))
    }
    /// Assembles the parts the client sent; returns the new backend state and the size. After
    /// it, `upload_read` reads the whole content, and `upload_commit`/`upload_abort` work as usual.
    async fn direct_complete(&self, _id: &str, _backend: &str) -> StorageResult<(String, u64)> {
        Err(StorageError::new("direct uploads are not supported by this store"))
    }
}

/// What [`BlobStore::upload_native`] did with a request body.
pub enum NativeAppend {
    /// Not taken (not supported here, or not for this body): the core streams it itself.
    Declined(ByteStream),
    /// Appended: the new backend state, how many bytes came, and their `sha256:<hex>`.
    Appended { backend: String, received: u64, sha256: String },
    /// More than the limit came; nothing was kept.
    TooLarge,
    /// The body broke off after `received` bytes; nothing was kept.
    Broken { received: u64, message: String },
}

/// One piece of stored content, as [`BlobStore::list_blobs`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
}

/// Parses the `alg:hex` of a stored object's name back into a digest, for `list_blobs`: only
/// digests the registry accepts (sha256, sha512; see `names::parse_digest`) are content.
pub fn stored_digest(s: &str) -> Option<Digest> {
    crate::names::parse_digest(s).ok()
}

/// Whether `digest` is after the cursor `after` of [`BlobStore::list_blobs`].
pub fn is_after(digest: &str, after: Option<&Digest>) -> bool {
    after.is_none_or(|a| digest > a.to_string().as_str())
}

/// What a store accepts for the parts of a direct upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectLimits {
    /// Every part but the last must be at least this big (S3: 5 MiB).
    pub min_part_size: u64,
    pub max_part_size: u64,
    pub max_parts: u32,
}

/// Receives one request's worth of an upload, chunk by chunk, in order.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait UploadWriter: MaybeSend {
    async fn write(&mut self, chunk: Bytes) -> StorageResult<()>;
    /// Makes the written bytes durable; returns the new backend state for the session.
    async fn finish(self: Box<Self>) -> StorageResult<String>;
}

/// A precondition on a metadata write; this is what keeps tags consistent across stateless
/// instances (R2 `onlyIf`, S3 `If-Match`/`If-None-Match`, DynamoDB conditions, a local
/// transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    None,
    Absent,
    Version(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Written { version: String },
    /// The precondition did not hold; nothing was written.
    Conflict,
}

#[derive(Debug, Clone)]
pub struct Versioned {
    pub value: Bytes,
    pub version: String,
}

/// One write of a [`MetaStore::apply`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put { key: String, value: Bytes, cond: Precondition },
    /// Removes `key` if `cond` holds (`Absent`: there is nothing to remove, which holds trivially).
    Delete { key: String, cond: Precondition },
}

impl BatchOp {
    pub fn key(&self) -> &str {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key, .. } => key,
        }
    }
}

/// Whether `cond` holds for a key whose current version is `current`.
pub fn precondition_holds(cond: &Precondition, current: Option<&str>) -> bool {
    match (cond, current) {
        (Precondition::None, _) => true,
        (Precondition::Absent, current) => current.is_none(),
        (Precondition::Version(v), Some(current)) => v == current,
        (Precondition::Version(_), None) => false,
    }
}

/// A strongly consistent key-value store for small records (tags, links, upload sessions).
/// Keys are ASCII; listing is in byte order.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait MetaStore: MaybeSendSync + 'static {
    async fn get(&self, key: &str) -> StorageResult<Option<Versioned>>;
    /// [`MetaStore::get`] of a record the caller knows is small (a blob link, read by every
    /// blob HEAD and GET): the same answer, which a store may find more cheaply (R2: in the
    /// object's custom metadata, by a HEAD that reads no body).
    async fn get_small(&self, key: &str) -> StorageResult<Option<Versioned>> {
        self.get(key).await
    }
    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> StorageResult<PutOutcome>;
    /// Removes a key; absent keys are not an error.
    async fn delete(&self, key: &str) -> StorageResult<()>;
    /// Up to `limit` keys starting with `prefix` and sorting after `after`, in byte order.
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize)
        -> StorageResult<Vec<String>>;

    /// Applies `ops` and reports, op by op, whether each was applied (its condition held).
    ///
    /// A store with transactions overrides this to apply all of them or none (a failed
    /// condition anywhere: every entry false), in one commit. This default, for stores without
    /// multi-key transactions (R2, S3), applies them one by one in order, each only if its own
    /// condition holds; a conditional delete is a read then a delete, so it can remove a value
    /// written in between. Callers order the ops so that a crash part-way leaves a consistent
    /// state (see `manifests::delete_manifest`).
    async fn apply(&self, ops: Vec<BatchOp>) -> StorageResult<Vec<bool>> {
        let mut applied = Vec::with_capacity(ops.len());
        for op in ops {
            let done = match op {
                BatchOp::Put { key, value, cond } => {
                    matches!(self.put(&key, value, cond).await?, PutOutcome::Written { .. })
                }
                BatchOp::Delete { key, cond: Precondition::None } => {
                    self.delete(&key).await?;
                    true
                }
                BatchOp::Delete { key, cond } => {
                    let current = self.get(&key).await?;
                    let holds = precondition_holds(&cond, current.as_ref().map(|c| c.version.as_str()));
                    if holds && current.is_some() {
                        self.delete(&key).await?;
                    }
                    holds
                }
            };
            applied.push(done);
        }
        Ok(applied)
    }
}
