//! The Workers Cache API in front of R2 for uploaded blobs: digest-addressed content never
//! changes, so a copy in the data center's cache is always right, and a hit costs no R2 read.
//! Only full, verified blobs go in: on a miss, the one R2 read is split between the client and
//! the cache (src/native.js `teeIntoCache`, finished with `waitUntil`); range requests are
//! answered from a cached copy (206) or from R2, and fill nothing. The core checks that the blob is linked to the repository before it asks the store,
//! so the cache never widens who can read what.
//!
//! Everything here is JavaScript streams end to end: no body byte passes through wasm.

use std::rc::Rc;

use berth_core::blobs::IMMUTABLE;
use berth_core::names::Digest;
use berth_core::ByteRange;
use worker::web_sys::ReadableStream;
use worker::{console_warn, Cache, Context, Headers, Request, RequestInit, ResponseBody};

/// Workers' cache refuses bigger objects on the free plan.
const MAX_CACHED: u64 = 512 * 1024 * 1024;

#[derive(Clone)]
pub struct BlobCache {
    /// The request's origin: cache entries belong to the zone the Worker serves.
    origin: String,
    ctx: Rc<Context>,
}

impl BlobCache {
    pub fn new(origin: String, ctx: Rc<Context>) -> Self {
        BlobCache { origin, ctx }
    }

    fn key(&self, digest: &Digest) -> String {
        format!("{}/.berth-cache/blobs/{digest}", self.origin)
    }

    /// The cached blob (or the range of it), if this data center has it.
    pub async fn get(&self, digest: &Digest, range: Option<ByteRange>) -> Option<ReadableStream> {
        let headers = Headers::new();
        if let Some(r) = range {
            headers
                .set("range", &format!("bytes={}-{}", r.start, r.end - 1))
                .ok()?;
        }
        let request =
            Request::new_with_init(&self.key(digest), RequestInit::new().with_headers(headers))
                .ok()?;
        crate::calls::note("cache.match");
        let found = Cache::default().get(&request, false).await.ok()??;
        let wanted = if range.is_some() { 206 } else { 200 };
        if found.status_code() != wanted {
            return None;
        }
        match found.into_parts().1 {
            ResponseBody::Stream(raw) => Some(raw),
            _ => None,
        }
    }

    /// The client's stream of a blob's full R2 read (`raw`, `size` bytes), which also fills the
    /// cache from that same read, at the pace of the slower side (memory stays flat; see
    /// `teeIntoCache`). `raw` itself when the blob is not to be cached or the split fails.
    pub fn fill_from(&self, digest: &Digest, size: u64, raw: ReadableStream) -> ReadableStream {
        if size > MAX_CACHED || size == 0 {
            return raw;
        }
        let key = self.key(digest);
        match crate::native::tee(&raw, size, &key, IMMUTABLE) {
            Some((client, done)) => {
                crate::calls::note("cache.put");
                self.ctx.wait_until(async move {
                    if let Err(e) = wasm_bindgen_futures::JsFuture::from(done).await {
                        console_warn!("cache fill {key}: {e:?}");
                    }
                });
                client
            }
            None => raw,
        }
    }
}
