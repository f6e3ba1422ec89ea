//! Berth's direct-upload extension, for runtimes that cap request bodies (Lambda's 6 MB): the
//! client sends a blob's parts straight to object storage over presigned URLs, then completes
//! the upload through the registry with the standard `PUT <location>?digest=`. The registry
//! assembles the parts, streams the stored object back through a hasher, and makes the blob
//! visible only when the digest matches. The wire protocol is in docs/protocol.md.
//!
//! A child of `uploads`: a direct upload is an upload session (HMAC-signed id, claims) whose
//! bytes take another road.

use futures_util::StreamExt;
use http::header::HeaderName;
use http::StatusCode;
use serde::Serialize;

use super::{Session, BUSY};
use crate::error::{oci, ErrorCode, Result};
use crate::hash::{Sha512Hasher, UploadHasher};
use crate::names::{Digest, DigestAlgorithm, RepoName};
use crate::records::upload_key;
use crate::reply::Reply;
use crate::storage::{BlobStore, ByteStream, MetaStore, Precondition, PutOutcome};
use crate::{query_of, query_param, Registry, RequestContext};

/// On upload responses when the store takes direct uploads; its value names the scheme.
pub const BERTH_DIRECT_UPLOAD: HeaderName = HeaderName::from_static("berth-direct-upload");
/// Part URLs handed out per request (keeps the response well under Lambda's 6 MB).
pub const MAX_URLS_PER_REQUEST: u32 = 100;

#[derive(Serialize)]
struct PartUrls {
    /// Every part but the last must be at least this big.
    min_part_size: u64,
    max_part_size: u64,
    max_parts: u32,
    /// Unix time after which the URLs are refused; ask again for fresh ones.
    expires: u64,
    parts: Vec<PartUrl>,
}

#[derive(Serialize)]
struct PartUrl {
    number: u32,
    url: String,
}

fn unsupported() -> crate::RegistryError {
    oci(ErrorCode::Unsupported, "this registry's storage does not take direct uploads; push in chunks")
        .with_status(StatusCode::NOT_FOUND)
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// `POST /v2/<name>/blobs/uploads/<id>/parts?first=N&count=M`: presigned URLs for parts
    /// `N..N+M`. The first call switches a fresh session to direct mode.
    pub(crate) async fn direct_parts(
        &self,
        name: &str,
        id: &str,
        parts: &crate::Parts,
        ctx: &RequestContext,
    ) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let Some(limits) = self.blobs.direct_limits() else { return Err(unsupported()) };
        let (mut session, version) = self.load_session(&name, id).await?;
        let query = query_of(parts.uri.query());
        let number = |key: &str, default: u32| -> Result<u32> {
            match query_param(&query, key) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    oci(ErrorCode::BlobUploadInvalid, format!("?{key}= must be a whole number, got {v:?}"))
                }),
            }
        };
        let first = number("first", 1)?;
        let count = number("count", MAX_URLS_PER_REQUEST)?;
        let last = first.checked_add(count).map(|n| n - 1).unwrap_or(u32::MAX);
        if first == 0 || count == 0 || count > MAX_URLS_PER_REQUEST || last > limits.max_parts {
            return Err(oci(
                ErrorCode::BlobUploadInvalid,
                format!(
                    "ask for 1 to {MAX_URLS_PER_REQUEST} parts numbered from 1 to {}; got first={first} count={count}",
                    limits.max_parts
                ),
            ));
        }
        if !session.direct {
            if session.offset != 0 {
                return Err(oci(
                    ErrorCode::BlobUploadInvalid,
                    "this upload already has bytes sent through the registry; start a new upload for a direct one",
                ));
            }
            if session.writing_until > ctx.now {
                return Err(self.out_of_order(&name, id, session.offset, BUSY.to_owned()));
            }
            session.backend = self.blobs.direct_start(id, &session.backend).await?;
            session.direct = true;
            match self.put_record(&upload_key(id), &session, Precondition::Version(version)).await? {
                PutOutcome::Written { .. } => {}
                // A concurrent request switched or changed it: the client asks again.
                PutOutcome::Conflict => return Err(self.busy(&name, id, 0).await),
            }
        }
        let (urls, expires) = self.blobs.direct_part_urls(id, &session.backend, first, count, ctx.now).await?;
        let body = PartUrls {
            min_part_size: limits.min_part_size,
            max_part_size: limits.max_part_size,
            max_parts: limits.max_parts,
            expires,
            parts: (first..).zip(urls).map(|(number, url)| PartUrl { number, url }).collect(),
        };
        let json = serde_json::to_vec(&body).map_err(|e| crate::StorageError::new(e.to_string()))?;
        Ok(Reply::json(StatusCode::OK, json)
            .header(http::header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")))
    }

    /// `PUT <location>?digest=` on a direct session: assemble, verify by reading back, publish.
    pub(crate) async fn complete_direct(
        &self,
        name: &RepoName,
        id: &str,
        session: Session,
        version: String,
        digest: &Digest,
        mut body: ByteStream,
        ctx: &RequestContext,
    ) -> Result<Reply> {
        if let Some(Ok(chunk)) = body.next().await {
            if !chunk.is_empty() {
                return Err(oci(
                    ErrorCode::BlobUploadInvalid,
                    "a direct upload's parts go to storage; complete it with an empty PUT",
                ));
            }
        }
        let (mut session, version) = self.claim(name, id, session, version, ctx).await?;
        let (backend, size) = match self.blobs.direct_complete(id, &session.backend).await {
            Ok(done) => done,
            Err(e) => {
                self.release(id, session, version).await;
                return Err(e.into());
            }
        };
        session.backend = backend;
        session.offset = size;
        let actual = self.digest_stored(id, &session.backend, digest.algorithm()).await;
        let result = match actual {
            Ok(actual) if actual == digest.to_string() => {
                self.blobs.upload_commit(id, &session.backend, digest, size).await.map_err(Into::into)
            }
            Ok(actual) => {
                self.blobs.upload_abort(id, &session.backend).await?;
                Err(oci(
                    ErrorCode::DigestInvalid,
                    format!("the {size} uploaded bytes have digest {actual}, not {digest}"),
                )
                .with_detail(serde_json::json!({ "expected": digest.to_string(), "actual": actual })))
            }
            Err(e) => Err(e),
        };
        self.meta.delete(&upload_key(id)).await?;
        result?;
        self.upload_committed(digest).await?;
        self.link_blob(name, digest, size, ctx.now).await?;
        Ok(Self::created_reply(name, digest, size))
    }

    /// The digest of what storage holds for the upload, read back as a stream (memory flat).
    pub(super) async fn digest_stored(&self, id: &str, backend: &str, algorithm: &DigestAlgorithm) -> Result<String> {
        let mut content = self.blobs.upload_read(id, backend).await?;
        match algorithm {
            DigestAlgorithm::Sha512 => {
                let mut hasher = Sha512Hasher::default();
                while let Some(chunk) = content.next().await {
                    hasher.update(&chunk?);
                }
                Ok(hasher.finish())
            }
            _ => {
                let mut hasher = UploadHasher::default();
                while let Some(chunk) = content.next().await {
                    hasher.update(&chunk?);
                }
                Ok(hasher.finish())
            }
        }
    }
}

/// Refuses PATCH bytes on a session whose parts go to storage directly.
pub(crate) fn refuse_patch(session: &Session, id: &str) -> Result<()> {
    if session.direct {
        return Err(oci(
            ErrorCode::BlobUploadInvalid,
            format!("upload {id} sends its parts to storage directly; complete it with PUT ?digest= and no body"),
        ));
    }
    Ok(())
}
