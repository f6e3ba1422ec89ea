//! `BlobStore` on R2 (+ the KV manifest cache and, when configured, presigned GETs).
//!
//! Layout: `blobs/<digest>` is the blob. Manifests (small, verified by the core) are stored
//! there inline; uploaded blobs are a small pointer object (empty body, custom metadata
//! `object` and `size`) to `data/<upload id>`, the object the upload produced, so completing an
//! upload never copies its bytes. Upload staging lives under `uploads/<id>/` (see `r2_upload`).

use berth_core::names::Digest;
use berth_core::parted::{self, PartedUpload, PartedWriter};
use berth_core::storage::{is_after, stored_digest, NativeAppend, StorageResult};
use berth_core::{BlobStore, ByteRange, ByteStream, StorageError, StoredBlob, UploadWriter};
use bytes::Bytes;
use worker::web_sys::ReadableStream;
use worker::{Bucket, Include, Object, Range};

use crate::blob_cache::BlobCache;
use crate::handoff::{from_js, BodyHandoff};
use crate::manifest_cache::ManifestCache;
use crate::presign::Presigner;
use crate::r2_meta::r2_error;
use crate::r2_upload::{blob_key, R2Parts, POINTER_OBJECT, POINTER_SIZE};

pub struct R2Blobs {
    bucket: Bucket,
    cache: ManifestCache,
    handoff: BodyHandoff,
    part_size: u64,
    presigner: Option<Presigner>,
    blob_cache: Option<BlobCache>,
    /// The request's body as the runtime's stream, for `upload_native` (see `translate::request`).
    request_body: BodyHandoff,
}

/// Where a blob's bytes are and how many there are.
struct Located {
    key: String,
    size: u64,
}

impl R2Blobs {
    /// The blob store as the deployment's settings configure it (part size, presigner), with
    /// the KV manifest cache of `env`: what the fetch handler, the scheduled runs and the
    /// contract route each build.
    pub fn configured(bucket: Bucket, env: worker::Env, handoff: BodyHandoff, settings: &crate::settings::Settings) -> Self {
        Self::new(bucket, ManifestCache::new(env), handoff, settings.part_size, settings.presigner.clone())
    }

    pub fn new(
        bucket: Bucket,
        cache: ManifestCache,
        handoff: BodyHandoff,
        part_size: u64,
        presigner: Option<Presigner>,
    ) -> Self {
        R2Blobs {
            bucket,
            cache,
            handoff,
            part_size,
            presigner,
            blob_cache: None,
            request_body: BodyHandoff::default(),
        }
    }

    /// Serves uploaded blobs through the Workers Cache API.
    pub fn with_blob_cache(mut self, blob_cache: BlobCache) -> Self {
        self.blob_cache = Some(blob_cache);
        self
    }

    /// Where `translate::request` parked the request body.
    pub fn with_request_body(mut self, request_body: BodyHandoff) -> Self {
        self.request_body = request_body;
        self
    }

    fn parts(&self) -> R2Parts {
        R2Parts(self.bucket.clone())
    }

    async fn locate(&self, digest: &Digest) -> StorageResult<Option<Located>> {
        let key = blob_key(digest);
        crate::calls::note("r2.head");
        let Some(head) = self
            .bucket
            .head(&key)
            .await
            .map_err(|e| r2_error("head", &key, e))?
        else {
            return Ok(None);
        };
        Ok(Some(pointer_target(&head).unwrap_or(Located {
            key,
            size: head.size(),
        })))
    }
}

impl R2Blobs {
    /// A whole blob in as few reads as it takes: `blobs/<digest>` is the content itself (a
    /// manifest, a small blob) or a pointer, whose target is read next. Two GETs for an uploaded
    /// blob, as a HEAD and a GET were, and one for small content.
    async fn get_content(&self, digest: &Digest) -> StorageResult<Option<(Object, Located)>> {
        let key = blob_key(digest);
        crate::calls::note("r2.get");
        let Some(object) = self
            .bucket
            .get(&key)
            .execute()
            .await
            .map_err(|e| r2_error("get", &key, e))?
        else {
            return Ok(None);
        };
        let Some(target) = pointer_target(&object) else {
            let size = object.size();
            return Ok(Some((object, Located { key, size })));
        };
        crate::calls::note("r2.get");
        let object = self
            .bucket
            .get(&target.key)
            .execute()
            .await
            .map_err(|e| r2_error("get", &target.key, e))?;
        Ok(object.map(|object| (object, target)))
    }

    /// An object's body as the core's stream; when it goes out as R2's own stream, `streaming`
    /// may replace that (the blob cache splits it to fill itself).
    fn stream(
        &self,
        object: Object,
        located: &Located,
        streaming: impl FnOnce(ReadableStream) -> ReadableStream,
    ) -> StorageResult<Option<ByteStream>> {
        let body = object
            .body()
            .ok_or_else(|| StorageError::new(format!("R2 object {} has no body", located.key)))?;
        match body
            .response_body()
            .map_err(|e| r2_error("read", &located.key, e))?
        {
            worker::ResponseBody::Stream(raw) => Ok(Some(self.handoff.park(streaming(raw)))),
            worker::ResponseBody::Body(bytes) => Ok(Some(one_chunk(Bytes::from(bytes)))),
            worker::ResponseBody::Empty => Ok(Some(Box::pin(futures_util::stream::empty()))),
        }
    }
}

/// Manifests are at most 4 MiB (the core's limit); anything bigger is not read into memory.
const MAX_MANIFEST_READ: u64 = 4 * 1024 * 1024;

/// The object a pointer names, or None when the object holds the content itself.
fn pointer_target(object: &Object) -> Option<Located> {
    let meta = object.custom_metadata().ok()?;
    let key = meta.get(POINTER_OBJECT)?.clone();
    let size = meta.get(POINTER_SIZE)?.parse().ok()?;
    Some(Located { key, size })
}

fn one_chunk(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
}

#[async_trait::async_trait(?Send)]
impl BlobStore for R2Blobs {
    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        Ok(self.locate(digest).await?.map(|l| l.size))
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> StorageResult<Option<ByteStream>> {
        // Only uploaded blobs (behind a pointer) are ever in the cache, so a hit needs no R2
        // call at all: a cached layer costs the core's link read and this.
        if let Some(blob_cache) = &self.blob_cache {
            if let Some(hit) = blob_cache.get(digest, range).await {
                self.handoff.mark_cache_hit();
                return Ok(Some(self.handoff.park(hit)));
            }
        }
        let Some(range) = range else {
            let Some((object, located)) = self.get_content(digest).await? else {
                return Ok(None);
            };
            let blob_cache = self.blob_cache.as_ref().filter(|_| located.key != blob_key(digest));
            let size = located.size;
            return self.stream(object, &located, |raw| match blob_cache {
                Some(blob_cache) => blob_cache.fill_from(digest, size, raw),
                None => raw,
            });
        };
        let Some(located) = self.locate(digest).await? else {
            return Ok(None);
        };
        crate::calls::note("r2.get");
        let got = self
            .bucket
            .get(&located.key)
            .range(Range::OffsetWithLength {
                offset: range.start,
                length: range.end - range.start,
            })
            .execute()
            .await
            .map_err(|e| r2_error("get", &located.key, e))?;
        match got {
            Some(object) => self.stream(object, &located, |raw| raw),
            None => Ok(None),
        }
    }

    async fn read_manifest(&self, digest: &Digest) -> StorageResult<Option<ByteStream>> {
        if let Some(cached) = self.cache.get(digest).await {
            return Ok(Some(one_chunk(cached)));
        }
        let Some((object, located)) = self.get_content(digest).await? else {
            return Ok(None);
        };
        if located.size > MAX_MANIFEST_READ {
            return self.stream(object, &located, |raw| raw);
        }
        // Read through into KV: only manifests someone pulls are cached (a CI push of many
        // manifests writes none), and the next GET anywhere costs one KV read instead of R2's.
        let body = object
            .body()
            .ok_or_else(|| StorageError::new(format!("R2 object {} has no body", located.key)))?;
        let bytes = Bytes::from(body.bytes().await.map_err(|e| r2_error("read", &located.key, e))?);
        self.cache.put(digest, &bytes).await;
        Ok(Some(one_chunk(bytes)))
    }

    async fn put_verified(&self, digest: &Digest, content: Bytes) -> StorageResult<()> {
        let key = blob_key(digest);
        crate::calls::note("r2.put");
        self.bucket
            .put(&key, content.to_vec())
            .execute()
            .await
            .map_err(|e| r2_error("put", &key, e))?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<()> {
        let key = blob_key(digest);
        if let Some(located) = self.locate(digest).await? {
            if located.key != key {
                crate::calls::note("r2.delete");
                self.bucket
                    .delete(&located.key)
                    .await
                    .map_err(|e| r2_error("delete", &located.key, e))?;
            }
        }
        crate::calls::note("r2.delete");
        self.bucket
            .delete(&key)
            .await
            .map_err(|e| r2_error("delete", &key, e))?;
        self.cache.delete(digest).await;
        Ok(())
    }

    /// Keys `blobs/<digest>` list in digest order; R2 returns custom metadata with the listing,
    /// so pointers give their size without a HEAD each.
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> StorageResult<Vec<StoredBlob>> {
        const PREFIX: &str = "blobs/";
        let mut found = Vec::new();
        let mut cursor: Option<String> = None;
        while found.len() < limit {
            let mut list = self
                .bucket
                .list()
                .prefix(PREFIX)
                .limit((limit - found.len()).min(1000) as u32)
                .include(vec![Include::CustomMetadata]);
            list = match (&cursor, after) {
                (Some(cursor), _) => list.cursor(cursor.clone()),
                (None, Some(after)) => list.start_after(blob_key(after)),
                (None, None) => list,
            };
            crate::calls::note("r2.list");
            let listed = list
                .execute()
                .await
                .map_err(|e| r2_error("list", PREFIX, e))?;
            for object in listed.objects() {
                let key = object.key();
                let name = key.strip_prefix(PREFIX).unwrap_or_default();
                let Some(digest) = stored_digest(name).filter(|_| is_after(name, after)) else {
                    continue;
                };
                let size = pointer_target(&object).map_or(object.size(), |target| target.size);
                found.push(StoredBlob { digest, size });
            }
            cursor = listed.cursor().filter(|_| listed.truncated());
            if cursor.is_none() {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    fn redirects(&self) -> bool {
        self.presigner.is_some()
    }

    async fn redirect_url(&self, digest: &Digest, now: u64) -> StorageResult<Option<String>> {
        let Some(presigner) = &self.presigner else {
            return Ok(None);
        };
        let Some(located) = self.locate(digest).await? else {
            return Ok(None);
        };
        Ok(Some(presigner.presign_get(&located.key, now)))
    }

    async fn upload_start(&self, _id: &str) -> StorageResult<String> {
        // Nothing to create yet: the multipart upload starts with the first full part, so a
        // small blob never costs one.
        Ok(parted::encode(&PartedUpload::new(self.part_size)))
    }

    async fn upload_writer(
        &self,
        id: &str,
        backend: &str,
        offset: u64,
    ) -> StorageResult<Box<dyn UploadWriter>> {
        let state: PartedUpload = parted::decode(backend)?;
        Ok(Box::new(PartedWriter::open(self.parts(), id, state, offset)?))
    }

    /// A body that may be the whole blob, straight from the request's stream into R2 with the
    /// runtime's sha256 (src/native.js): no byte through wasm. Only at the start of an upload
    /// and only while the core has not read the body (a small monolithic blob it has).
    async fn upload_native(
        &self,
        id: &str,
        backend: &str,
        limit: Option<u64>,
        body: ByteStream,
    ) -> StorageResult<NativeAppend> {
        let state: PartedUpload = parted::decode(backend)?;
        if !state.is_empty() || state.multipart.is_some() {
            return Ok(NativeAppend::Declined(body));
        }
        let Some(raw) = self.request_body.take() else {
            return Ok(NativeAppend::Declined(body));
        };
        drop(body);
        crate::native::append(&self.bucket, id, state, raw, limit).await
    }

    async fn upload_read(&self, id: &str, backend: &str) -> StorageResult<ByteStream> {
        let state: PartedUpload = parted::decode(backend)?;
        let Some(key) = parted::readable(&self.parts(), id, &state).await? else {
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        crate::calls::note("r2.get");
        let object = self
            .bucket
            .get(&key)
            .execute()
            .await
            .map_err(|e| r2_error("get", &key, e))?
            .ok_or_else(|| StorageError::new(format!("R2 object {key} is missing")))?;
        let body = object
            .body()
            .ok_or_else(|| StorageError::new(format!("R2 object {key} has no body")))?;
        match body
            .response_body()
            .map_err(|e| r2_error("read", &key, e))?
        {
            worker::ResponseBody::Stream(raw) => Ok(from_js(raw)),
            worker::ResponseBody::Body(bytes) => Ok(one_chunk(Bytes::from(bytes))),
            worker::ResponseBody::Empty => Ok(Box::pin(futures_util::stream::empty())),
        }
    }

    async fn upload_commit(
        &self,
        id: &str,
        backend: &str,
        digest: &Digest,
        size: u64,
    ) -> StorageResult<()> {
        let state: PartedUpload = parted::decode(backend)?;
        parted::commit(&self.parts(), id, &state, digest, size).await
    }

    async fn upload_abort(&self, id: &str, backend: &str) -> StorageResult<()> {
        let state: PartedUpload = parted::decode(backend)?;
        parted::abort(&self.parts(), id, state.multipart.as_deref()).await
    }
}
