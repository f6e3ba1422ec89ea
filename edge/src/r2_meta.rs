//! `MetaStore` on R2: tags, repository links, manifest records, referrers and upload sessions are
//! small objects under `meta/`. R2 is strongly consistent, and its conditional put (`onlyIf`)
//! is the compare-and-swap the core needs: a record's version is its etag.
//!
//! An etag is the MD5 of the content, so a version names a value rather than a write. That is
//! enough for the core's read-modify-write: a conditional write succeeds only while the record
//! still holds exactly the value it was computed from.

use berth_core::storage::StorageResult;
use berth_core::{MetaStore, Precondition, PutOutcome, StorageError, Versioned};
use bytes::Bytes;
use worker::{Bucket, Conditional};

/// Keeps metadata apart from blob content in the same bucket.
pub(crate) const PREFIX: &str = "meta/";
/// R2 returns at most 1000 keys per list call.
const R2_LIST_MAX: usize = 1000;
/// Records up to this size are also kept in their object's custom metadata (R2 allows 2 KiB of
/// it per object); blob links are under 100 bytes.
pub(crate) const SMALL_RECORD: usize = 1024;
pub(crate) const SMALL_RECORD_FIELD: &str = "berth-record";

/// The text a record's custom metadata copy holds, if it gets one: small records that are text.
fn metadata_copy(value: &[u8]) -> Option<&str> {
    (value.len() <= SMALL_RECORD).then(|| std::str::from_utf8(value).ok()).flatten()
}

pub struct R2Meta {
    bucket: Bucket,
}

impl R2Meta {
    pub fn new(bucket: Bucket) -> Self {
        R2Meta { bucket }
    }
}

impl R2Meta {
    /// A small record written before records carried a copy in their metadata (before
    /// de9f6cc) is rewritten once, when `get_small` first has to fall back to reading its body,
    /// so later reads of it are a HEAD again. The same bytes go back only while the object
    /// still has the version just read (`onlyIf` etag): a record changed or deleted in between
    /// (a push, GC) is left as the other writer left it. The etag is the body's MD5, so it does
    /// not change, and a conditional write or delete computed from the old read (GC's) still
    /// holds. Best effort: a conflict or an error leaves the record as it was, still readable.
    async fn copy_into_metadata(&self, key: &str, record: &Versioned) {
        if metadata_copy(&record.value).is_none() {
            return;
        }
        let _ = self.put(key, record.value.clone(), Precondition::Version(record.version.clone())).await;
    }
}

pub(crate) fn r2_error(what: &str, key: &str, err: worker::Error) -> StorageError {
    StorageError::new(format!("R2 {what} {key}: {err}"))
}

#[async_trait::async_trait(?Send)]
impl MetaStore for R2Meta {
    async fn get(&self, key: &str) -> StorageResult<Option<Versioned>> {
        let full = format!("{PREFIX}{key}");
        crate::calls::note("r2.get");
        raw::get(&self.bucket, &full)
            .await
            .map_err(|e| StorageError::new(format!("R2 get {full}: {}", raw::message(&e))))
    }

    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> StorageResult<PutOutcome> {
        let full = format!("{PREFIX}{key}");
        let only_if = match cond {
            Precondition::None => None,
            Precondition::Absent => Some(Conditional {
                etag_does_not_match: Some("*".into()),
                ..Default::default()
            }),
            Precondition::Version(etag) => Some(Conditional {
                etag_matches: Some(etag),
                ..Default::default()
            }),
        };
        crate::calls::note("r2.put");
        let mut put = self.bucket.put(&full, value.to_vec());
        // A small record also goes into the object's custom metadata, where `get_small` reads it
        // with a HEAD instead of a GET and a body read. Same object, same write: it cannot
        // disagree with the body, and the version (the etag, the body's MD5) is unchanged.
        if let Some(text) = metadata_copy(&value) {
            put = put.custom_metadata([(SMALL_RECORD_FIELD.to_owned(), text.to_owned())]);
        }
        if let Some(only_if) = only_if {
            put = put.only_if(only_if);
        }
        // R2 answers a failed precondition with `null`, not an error.
        match put.execute().await.map_err(|e| r2_error("put", &full, e))? {
            Some(object) => Ok(PutOutcome::Written {
                version: object.etag(),
            }),
            None => Ok(PutOutcome::Conflict),
        }
    }

    async fn get_small(&self, key: &str) -> StorageResult<Option<Versioned>> {
        let full = format!("{PREFIX}{key}");
        crate::calls::note("r2.head");
        match raw::head_small(&self.bucket, &full).await {
            Ok(raw::Small::Absent) => Ok(None),
            Ok(raw::Small::Found(found)) => Ok(Some(found)),
            // Written before records carried their value in metadata, or too big for it.
            Ok(raw::Small::NotInMetadata) => {
                let found = self.get(key).await?;
                if let Some(record) = &found {
                    self.copy_into_metadata(key, record).await;
                }
                Ok(found)
            }
            Err(e) => Err(StorageError::new(format!("R2 head {full}: {}", raw::message(&e)))),
        }
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let full = format!("{PREFIX}{key}");
        crate::calls::note("r2.delete");
        self.bucket
            .delete(&full)
            .await
            .map_err(|e| r2_error("delete", &full, e))
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>> {
        let full_prefix = format!("{PREFIX}{prefix}");
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        while keys.len() < limit {
            let mut list = self
                .bucket
                .list()
                .prefix(full_prefix.clone())
                .limit((limit - keys.len()).min(R2_LIST_MAX) as u32);
            // After the first page the cursor alone carries the position.
            match (cursor.take(), after) {
                (Some(c), _) => list = list.cursor(c),
                (None, Some(after)) => list = list.start_after(format!("{PREFIX}{after}")),
                (None, None) => {}
            }
            crate::calls::note("r2.list");
            let page = list
                .execute()
                .await
                .map_err(|e| r2_error("list", &full_prefix, e))?;
            keys.extend(
                page.objects()
                    .iter()
                    .filter_map(|o| o.key().strip_prefix(PREFIX).map(str::to_owned)),
            );
            match page.cursor() {
                Some(c) if page.truncated() => cursor = Some(c),
                _ => break,
            }
        }
        keys.truncate(limit);
        Ok(keys)
    }
}

/// A record read straight through the binding: `bucket.get(key)`, the etag, `arrayBuffer()`.
/// The `worker` crate's builder passes an options object (`onlyIf`, `range`, both undefined
/// here), probes the result's shape and copies the body through an intermediate `Vec`; a
/// metadata read is on every request's path (a pull by tag is this one call), so it goes the
/// short way. What it returns is the same: the value and its version (the etag).
mod raw {
    use berth_core::Versioned;
    use bytes::Bytes;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    use worker::Bucket;

    #[wasm_bindgen]
    extern "C" {
        type R2BucketRaw;
        #[wasm_bindgen(method, catch, js_name = get)]
        fn get_key(this: &R2BucketRaw, key: &str) -> Result<js_sys::Promise, JsValue>;

        type R2ObjectBodyRaw;
        #[wasm_bindgen(method, getter)]
        fn etag(this: &R2ObjectBodyRaw) -> String;
        #[wasm_bindgen(method, catch, js_name = arrayBuffer)]
        fn array_buffer(this: &R2ObjectBodyRaw) -> Result<js_sys::Promise, JsValue>;
    }

    pub async fn get(bucket: &Bucket, key: &str) -> Result<Option<Versioned>, JsValue> {
        let bucket: &R2BucketRaw = AsRef::<JsValue>::as_ref(bucket).unchecked_ref();
        let object = JsFuture::from(bucket.get_key(key)?).await?;
        if object.is_null() || object.is_undefined() {
            return Ok(None);
        }
        let object: R2ObjectBodyRaw = object.unchecked_into();
        let version = object.etag();
        let buffer = JsFuture::from(object.array_buffer()?).await?;
        let value = js_sys::Uint8Array::new(&buffer).to_vec();
        Ok(Some(Versioned { value: Bytes::from(value), version }))
    }

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(method, catch, js_name = head)]
        fn head_key(this: &R2BucketRaw, key: &str) -> Result<js_sys::Promise, JsValue>;

        type R2ObjectRaw;
        #[wasm_bindgen(method, getter)]
        fn etag(this: &R2ObjectRaw) -> String;
        #[wasm_bindgen(method, getter, js_name = customMetadata)]
        fn custom_metadata(this: &R2ObjectRaw) -> JsValue;
    }

    pub enum Small {
        Absent,
        Found(Versioned),
        NotInMetadata,
    }

    /// `bucket.head(key)`: the record from the object's custom metadata (see `put`), no body.
    pub async fn head_small(bucket: &Bucket, key: &str) -> Result<Small, JsValue> {
        let bucket: &R2BucketRaw = AsRef::<JsValue>::as_ref(bucket).unchecked_ref();
        let object = JsFuture::from(bucket.head_key(key)?).await?;
        if object.is_null() || object.is_undefined() {
            return Ok(Small::Absent);
        }
        let object: R2ObjectRaw = object.unchecked_into();
        let metadata = object.custom_metadata();
        if metadata.is_null() || metadata.is_undefined() {
            return Ok(Small::NotInMetadata);
        }
        let value = js_sys::Reflect::get(&metadata, &JsValue::from_str(super::SMALL_RECORD_FIELD))?;
        Ok(match value.as_string() {
            Some(text) => Small::Found(Versioned { value: Bytes::from(text), version: object.etag() }),
            None => Small::NotInMetadata,
        })
    }

    /// A JS error as text for a `StorageError`.
    pub fn message(err: &JsValue) -> String {
        err.dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| err.as_string())
            .unwrap_or_else(|| format!("{err:?}"))
    }
}
