//! Every read and write GC makes, through one place, so that a dry run is the same code over an
//! overlay: its writes land in a map that its own later reads see, and nothing reaches the stores.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::Result;
use crate::names::Digest;
use crate::storage::{precondition_holds, BatchOp, BlobStore, MetaStore, Precondition, PutOutcome};
use crate::Registry;

/// A dry run's writes: key → value (None: deleted) with a version of its own.
#[derive(Default)]
struct Overlay {
    meta: HashMap<String, Option<(String, Bytes)>>,
    counter: u64,
}

pub(crate) struct Io<'a, B, M> {
    pub(crate) reg: &'a Registry<B, M>,
    overlay: Option<Mutex<Overlay>>,
}

fn lock(m: &Mutex<Overlay>) -> std::sync::MutexGuard<'_, Overlay> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a, B: BlobStore, M: MetaStore> Io<'a, B, M> {
    pub(crate) fn new(reg: &'a Registry<B, M>, dry_run: bool) -> Self {
        Io { reg, overlay: dry_run.then(|| Mutex::new(Overlay::default())) }
    }

    pub(crate) fn dry(&self) -> bool {
        self.overlay.is_some()
    }

    /// The overlay's entry for `key`, if the dry run wrote it: Some(None) when it deleted it.
    fn overlaid(&self, key: &str) -> Option<Option<(String, Bytes)>> {
        self.overlay.as_ref().and_then(|o| lock(o).meta.get(key).cloned())
    }

    pub(crate) async fn get_raw(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        if let Some(entry) = self.overlaid(key) {
            return Ok(entry.map(|(version, value)| (value, version)));
        }
        Ok(self.reg.meta.get(key).await?.map(|v| (v.value, v.version)))
    }

    /// A record and its version; a record GC cannot read is skipped by the caller's rules
    /// (never acted on), so it is an error here.
    pub(crate) async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, String)>> {
        let Some((value, version)) = self.get_raw(key).await? else { return Ok(None) };
        let record = serde_json::from_slice(&value)
            .map_err(|e| crate::StorageError::new(format!("corrupt metadata record {key}: {e}")))?;
        Ok(Some((record, version)))
    }

    /// A conditional put; true when written.
    pub(crate) async fn put<T: Serialize>(&self, key: &str, record: &T, cond: Precondition) -> Result<bool> {
        let value = Registry::<B, M>::encode(key, record)?;
        let Some(overlay) = &self.overlay else {
            return Ok(matches!(self.reg.meta.put(key, value, cond).await?, PutOutcome::Written { .. }));
        };
        let current = match self.overlaid(key) {
            Some(entry) => entry.map(|(version, _)| version),
            None => self.reg.meta.get(key).await?.map(|v| v.version),
        };
        if !precondition_holds(&cond, current.as_deref()) {
            return Ok(false);
        }
        let mut o = lock(overlay);
        o.counter += 1;
        let version = format!("dry-{}", o.counter);
        o.meta.insert(key.to_owned(), Some((version, value)));
        Ok(true)
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        match &self.overlay {
            Some(overlay) => {
                lock(overlay).meta.insert(key.to_owned(), None);
            }
            None => self.reg.meta.delete(key).await?,
        }
        Ok(())
    }

    /// Removes `key` if it still has `version`, through `apply` (one transaction where the
    /// store has them). True when removed.
    pub(crate) async fn delete_if(&self, key: &str, version: &str) -> Result<bool> {
        if self.overlay.is_some() {
            self.delete(key).await?;
            return Ok(true);
        }
        let op = BatchOp::Delete { key: key.to_owned(), cond: Precondition::Version(version.to_owned()) };
        Ok(self.reg.meta.apply(vec![op]).await?.first() == Some(&true))
    }

    /// Keys under `prefix` after `after`: the stores' own listing (a dry run's writes only
    /// change records GC has already listed).
    pub(crate) async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        Ok(self.reg.meta.list(prefix, after, limit).await?)
    }

    pub(crate) async fn delete_content(&self, digest: &Digest) -> Result<()> {
        if self.overlay.is_none() {
            self.reg.blobs.delete(digest).await?;
        }
        Ok(())
    }

    pub(crate) async fn upload_abort(&self, id: &str, backend: &str) -> Result<()> {
        if self.overlay.is_none() {
            self.reg.blobs.upload_abort(id, backend).await?;
        }
        Ok(())
    }
}
