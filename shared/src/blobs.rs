//! Blob pull (GET/HEAD, ranges, redirects) and delete.

use http::header::{ACCEPT_RANGES, CACHE_CONTROL, CONTENT_RANGE, CONTENT_TYPE, ETAG, LOCATION};
use http::StatusCode;

use crate::body::Body;
use crate::error::{oci, ErrorCode, Result};
use crate::events::Found;
use crate::mirror::Miss;
use crate::names::{parse_digest, Digest, RepoName};
use crate::records::blob_key;
use crate::reply::{names::DOCKER_CONTENT_DIGEST, Reply};
use crate::storage::{BlobStore, ByteRange, MetaStore};
use crate::{header_str, Registry, RequestContext};

/// Digest-addressed content never changes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn blob_unknown(digest: &Digest) -> crate::RegistryError {
    oci(ErrorCode::BlobUnknown, format!("blob {digest} is not in this repository"))
        .with_detail(serde_json::json!({ "digest": digest.to_string() }))
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    pub(crate) async fn get_blob(
        &self,
        name: &str,
        digest: &str,
        req: &crate::Parts,
        head: bool,
        ctx: &RequestContext,
    ) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let digest = parse_digest(digest)?;
        let ok = |size: u64| {
            Reply::new(StatusCode::OK)
                .found(Found::blob(&digest, size))
                .header(DOCKER_CONTENT_DIGEST, digest.to_string())
                .header(ETAG, format!("\"{digest}\""))
                .header(CACHE_CONTROL, IMMUTABLE)
                .header(ACCEPT_RANGES, "bytes")
        };
        let size = match self.blob_link(&name, &digest).await? {
            Some(size) => size,
            // A miss in a pull-through cache is fetched from its upstream (src/mirror/); a
            // whole GET the store would serve itself is answered while it is stored.
            None => {
                let whole_get = !head && header_str(&req.headers, "range").is_none();
                let answer_while_storing = whole_get && !self.blobs.redirects();
                match self.mirror_blob(&name, &digest, answer_while_storing, ctx).await? {
                    Miss::Absent => return Err(blob_unknown(&digest)),
                    Miss::Stored(size) => size,
                    Miss::Streaming { size, body } => {
                        return Ok(ok(size).header(CONTENT_TYPE, "application/octet-stream").body(Body::Stream(body), size))
                    }
                }
            }
        };
        let reply = ok(size);
        if head {
            return Ok(reply.header(CONTENT_TYPE, "application/octet-stream").body(Body::Empty, size));
        }
        // Checked before any redirect, so an unsatisfiable range is an OCI error from here.
        let range = match header_str(&req.headers, "range") {
            Some(value) => parse_range(value, size)?,
            None => None,
        };
        if let Some(url) = self.blobs.redirect_url(&digest, ctx.now).await? {
            return Ok(Reply::new(StatusCode::TEMPORARY_REDIRECT)
                .found(Found::blob(&digest, size))
                .header(LOCATION, url)
                .header(DOCKER_CONTENT_DIGEST, digest.to_string()));
        }
        let Some(stream) = self.blobs.read(&digest, range).await? else {
            return Err(blob_unknown(&digest));
        };
        let reply = reply.header(CONTENT_TYPE, "application/octet-stream");
        Ok(match range {
            Some(r) => reply
                .status(StatusCode::PARTIAL_CONTENT)
                .header(CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1))
                .body(Body::Stream(stream), r.end - r.start),
            None => reply.body(Body::Stream(stream), size),
        })
    }

    pub(crate) async fn delete_blob(&self, name: &str, digest: &str) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let digest = parse_digest(digest)?;
        let Some(size) = self.blob_link(&name, &digest).await? else {
            return Err(blob_unknown(&digest));
        };
        // Only the link goes: other repositories may share the content. Unlinked content is
        // garbage collection's to remove.
        self.meta.delete(&blob_key(&name, &digest)).await?;
        Ok(Reply::new(StatusCode::ACCEPTED).found(Found::blob(&digest, size)))
    }
}

/// Parses a single `bytes=` range against a blob of `size` bytes. Forms Berth does not serve
/// (several ranges, other units, garbage) are ignored, as RFC 9110 allows: the whole blob is sent.
pub fn parse_range(value: &str, size: u64) -> Result<Option<ByteRange>> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let unsatisfiable = || {
        oci(ErrorCode::RangeInvalid, format!("range {value:?} is outside the blob's {size} bytes"))
            .with_header(CONTENT_RANGE, format!("bytes */{size}"))
    };
    let range = if first.is_empty() {
        // Suffix: the last N bytes.
        let Ok(n) = last.parse::<u64>() else { return Ok(None) };
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        ByteRange { start: size.saturating_sub(n), end: size }
    } else {
        let Ok(start) = first.parse::<u64>() else { return Ok(None) };
        let end = if last.is_empty() {
            size
        } else {
            match last.parse::<u64>() {
                Ok(l) if l >= start => l.saturating_add(1).min(size),
                _ => return Ok(None),
            }
        };
        if start >= size {
            return Err(unsatisfiable());
        }
        ByteRange { start, end }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s: &str| parse_range(s, 100);
        assert_eq!(r("bytes=0-9").unwrap(), Some(ByteRange { start: 0, end: 10 }));
        assert_eq!(r("bytes=90-").unwrap(), Some(ByteRange { start: 90, end: 100 }));
        assert_eq!(r("bytes=-10").unwrap(), Some(ByteRange { start: 90, end: 100 }));
        assert_eq!(r("bytes=50-500").unwrap(), Some(ByteRange { start: 50, end: 100 }));
        assert_eq!(r("bytes=0-1,5-6").unwrap(), None);
        assert_eq!(r("items=0-1").unwrap(), None);
        assert_eq!(r("bytes=5-1").unwrap(), None);
        assert_eq!(r("bytes=100-").unwrap_err().code, ErrorCode::RangeInvalid);
        assert_eq!(r("bytes=-0").unwrap_err().code, ErrorCode::RangeInvalid);
    }
}
