//! Workers KV as a read-through cache of manifests by digest. Digest-addressed content never
//! changes, so KV's eventual consistency (60 s or more between locations) cannot serve a stale
//! value; a miss just falls back to R2. Tags never resolve through KV: they live in R2 only.
//! Cache failures are logged and ignored: R2 stays the source of truth.

use berth_core::names::Digest;
use bytes::Bytes;
use worker::{console_warn, KvStore};

/// KV rejects values above 25 MiB; manifests are at most 4 MiB (the core's limit).
const KV_MAX_VALUE: usize = 25 * 1024 * 1024;

#[derive(Clone)]
pub struct ManifestCache {
    kv: Option<KvStore>,
}

fn key(digest: &Digest) -> String {
    format!("manifest/{digest}")
}

impl ManifestCache {
    /// `None`: no KV namespace bound; every read goes to R2.
    pub fn new(kv: Option<KvStore>) -> Self {
        ManifestCache { kv }
    }

    pub async fn get(&self, digest: &Digest) -> Option<Bytes> {
        let kv = self.kv.as_ref()?;
        crate::calls::note("kv.get");
        match kv.get(&key(digest)).bytes().await {
            Ok(found) => found.map(Bytes::from),
            Err(e) => {
                console_warn!("KV get {}: {e}", key(digest));
                None
            }
        }
    }

    pub async fn put(&self, digest: &Digest, content: &[u8]) {
        let Some(kv) = self.kv.as_ref() else { return };
        if content.len() > KV_MAX_VALUE {
            return;
        }
        crate::calls::note("kv.put");
        let result = match kv.put_bytes(&key(digest), content) {
            Ok(put) => put.execute().await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            console_warn!("KV put {}: {e}", key(digest));
        }
    }

    pub async fn delete(&self, digest: &Digest) {
        let Some(kv) = self.kv.as_ref() else { return };
        crate::calls::note("kv.delete");
        if let Err(e) = kv.delete(&key(digest)).await {
            console_warn!("KV delete {}: {e}", key(digest));
        }
    }
}
