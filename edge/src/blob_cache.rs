//! The Workers Cache API in front of R2 for uploaded blobs: digest-addressed content never
//! changes, so a copy in the data center's cache is always right, and a hit costs no R2 read.
//! Only full, verified blobs go in (copied from R2 after the response, with `waitUntil`, on a
//! miss); range requests are answered from a cached copy (206) or
//! from R2. The core checks that the blob is linked to the repository before it asks the store,
//! so the cache never widens who can read what.
//!
//! Everything here is JavaScript streams end to end: no body byte passes through wasm.

use std::rc::Rc;

use berth_core::blobs::IMMUTABLE;
use berth_core::names::Digest;
use berth_core::ByteRange;
use worker::web_sys::ReadableStream;
use worker::{
    console_warn, Bucket, Cache, Context, Headers, Request, RequestInit, ResponseBody,
    ResponseBuilder,
};

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

    /// After the response, copies the blob from R2 into the cache. A second R2 read rather than
    /// a tee of the client's stream: a tee buffers whatever one branch reads ahead of the other,
    /// and for a layer of hundreds of MiB that would not fit in a Worker's 128 MB.
    pub fn fill(&self, digest: &Digest, size: u64, bucket: Bucket, object_key: String) {
        if size > MAX_CACHED || size == 0 {
            return;
        }
        let key = self.key(digest);
        self.ctx.wait_until(async move {
            if let Err(e) = copy_into_cache(&bucket, &object_key, size, &key).await {
                console_warn!("cache fill {key}: {e}");
            }
        });
    }
}

async fn copy_into_cache(
    bucket: &Bucket,
    object_key: &str,
    size: u64,
    key: &str,
) -> worker::Result<()> {
    let Some(object) = bucket.get(object_key).execute().await? else {
        return Ok(());
    };
    let Some(body) = object.body() else {
        return Ok(());
    };
    let ResponseBody::Stream(raw) = body.response_body()? else {
        return Ok(());
    };
    let response = ResponseBuilder::new()
        .with_header("cache-control", IMMUTABLE)?
        .with_header("content-length", &size.to_string())?
        .stream(raw);
    Cache::default().put(key, response).await
}
