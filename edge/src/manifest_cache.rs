//! Workers KV as a read-through cache of manifests by digest. Digest-addressed content never
//! changes, so KV's eventual consistency (60 s or more between locations) cannot serve a stale
//! value; a miss just falls back to R2. Tags never resolve through KV: they live in R2 only.
//! Cache failures are logged and ignored: R2 stays the source of truth.

use std::cell::OnceCell;
use std::rc::Rc;

use berth_core::names::Digest;
use bytes::Bytes;
use worker::{console_warn, Env, KvStore};

use crate::settings::KV_BINDING;

/// KV rejects values above 25 MiB; manifests are at most 4 MiB (the core's limit).
const KV_MAX_VALUE: usize = 25 * 1024 * 1024;

#[derive(Clone)]
pub struct ManifestCache {
    env: Env,
    /// The binding, looked up on first use: a KV handle costs six lookups through the JS
    /// boundary, and most requests (a pull by tag, a blob HEAD) never touch the cache.
    kv: Rc<OnceCell<Option<KvStore>>>,
}

fn key(digest: &Digest) -> String {
    format!("manifest/{digest}")
}

impl ManifestCache {
    /// The cache on the KV namespace bound as `KV_BINDING`; with none bound every read goes
    /// to R2.
    pub fn new(env: Env) -> Self {
        ManifestCache { env, kv: Rc::default() }
    }

    fn kv(&self) -> Option<&KvStore> {
        self.kv.get_or_init(|| self.env.kv(KV_BINDING).ok()).as_ref()
    }

    pub async fn get(&self, digest: &Digest) -> Option<Bytes> {
        let kv = self.kv()?;
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
        let Some(kv) = self.kv() else { return };
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
        let Some(kv) = self.kv() else { return };
        crate::calls::note("kv.delete");
        if let Err(e) = kv.delete(&key(digest)).await {
            console_warn!("KV delete {}: {e}", key(digest));
        }
    }
}
