//! Blob push: monolithic POST, POST then PUT, chunked PATCHes, docker's one streamed PATCH,
//! status, cancel and cross-repository mount.
//!
//! A session (offset, serialized sha256 state, the backend's upload state) is saved after every
//! request, so a push may hop between stateless instances. Its id carries an HMAC binding it to
//! the repository. A blob becomes visible only after its digest is verified.

use futures_util::StreamExt;
use hmac::{KeyInit, Mac};
use http::header::LOCATION;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::error::{oci, ErrorCode, RegistryError, Result};
use crate::events::Found;
use crate::hash::UploadHasher;
use crate::names::{parse_digest, Digest, DigestAlgorithm, RepoName};
use crate::records::upload_key;
use crate::reply::names::{
    DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, OCI_CHUNK_MAX_LENGTH, OCI_CHUNK_MIN_LENGTH, RANGE,
};
use crate::reply::Reply;
use crate::storage::{BlobStore, ByteStream, MetaStore, NativeAppend, Precondition, PutOutcome};
use crate::{header_str, query_of, query_param, Registry, RequestContext};

pub mod direct;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct Session {
    pub(crate) repo: String,
    pub(crate) offset: u64,
    /// Serialized sha256 state of the bytes so far; empty when it was not kept (after a body
    /// the store hashed natively), and completion then reads the upload back to hash it.
    pub(crate) hash: String,
    /// The sha256 of the bytes so far as the runtime computed it (`BlobStore::upload_native`),
    /// while nothing else was appended; it completes the upload without any hashing in the core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) native: Option<String>,
    /// The blob store's own state for this upload.
    pub(crate) backend: String,
    pub(crate) started: u64,
    /// While a request writes to the upload, the Unix time its claim lapses (0: nobody writes).
    /// Two requests writing one session at once would interleave bytes under one hash state, so
    /// a request claims the session (a conditional write) before it touches the data.
    #[serde(default)]
    pub(crate) writing_until: u64,
    /// When a request last claimed the session to write (0: never): with `started`, what
    /// garbage collection measures idleness from.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) touched: u64,
    /// The client sends the parts to storage itself (Berth's direct-upload extension).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) direct: bool,
}

/// Where an upload's bytes come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The client's request body: the runtime's body limit applies (Lambda's 6 MB, a Workers
    /// plan's), and the store may take the body natively (`BlobStore::upload_native`).
    Request,
    /// Bytes the registry fetched itself (a pull-through cache, src/mirror/): no request-body
    /// limit applies, and never the native path, which reads the request's own body.
    Fetched,
}

const BUSY: &str = "another request is writing this upload or just changed it; check its status \
                    and resend from the offset in Range";

fn upload_unknown(id: &str) -> RegistryError {
    oci(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id:?} is unknown: it finished, was cancelled, or never existed here"),
    )
}

/// `Range` as Distribution sends it: the inclusive span received, `0-0` when empty.
fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// `Content-Range` of a chunk: `A-B`, also `bytes A-B`, `bytes=A-B`, with an optional `/total`.
/// Returns the inclusive span and its length. Public so the fuzz targets (fuzz/) can drive it.
pub fn parse_content_range(value: &str) -> Result<(u64, u64, u64)> {
    let bad = || {
        oci(ErrorCode::BlobUploadInvalid, format!("malformed Content-Range {value:?}; expected START-END"))
    };
    let v = value.trim();
    let v = v.strip_prefix("bytes").map(|r| r.trim_start_matches([' ', '='])).unwrap_or(v);
    let v = v.split('/').next().unwrap_or(v);
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    // `b - a + 1` overflows for `0-18446744073709551615`; such a range is malformed anyway.
    let len = b.checked_sub(a).and_then(|n| n.checked_add(1)).ok_or_else(bad)?;
    Ok((a, b, len))
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    fn sign_upload(&self, name: &RepoName, nonce: &str) -> String {
        // An HMAC key of any length is accepted, so this cannot fail.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.config.upload_secret)
            .expect("HMAC takes keys of any length");
        mac.update(b"berth-upload\0");
        mac.update(name.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(nonce.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    fn new_upload_id(&self, name: &RepoName, ctx: &RequestContext) -> String {
        let nonce = hex::encode(ctx.random);
        format!("{nonce}.{}", self.sign_upload(name, &nonce))
    }

    fn verify_upload_id(&self, name: &RepoName, id: &str) -> Result<()> {
        let valid = id.split_once('.').is_some_and(|(nonce, tag)| {
            nonce.len() == 32
                && nonce.bytes().all(|b| b.is_ascii_hexdigit())
                && constant_time_eq(self.sign_upload(name, nonce).as_bytes(), tag.as_bytes())
        });
        if valid { Ok(()) } else { Err(upload_unknown(id)) }
    }

    async fn load_session(&self, name: &RepoName, id: &str) -> Result<(Session, String)> {
        self.verify_upload_id(name, id)?;
        match self.get_versioned::<Session>(&upload_key(id)).await? {
            Some((session, version)) if session.repo == name.as_str() => Ok((session, version)),
            _ => Err(upload_unknown(id)),
        }
    }

    fn upload_reply(&self, status: StatusCode, name: &RepoName, id: &str, offset: u64) -> Reply {
        let mut reply = Reply::new(status)
            .header(LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
            .header(RANGE, range_header(offset))
            .header(DOCKER_UPLOAD_UUID, id);
        if let Some(min) = self.config.chunk_min_length {
            reply = reply.header(OCI_CHUNK_MIN_LENGTH, min.to_string());
        }
        if let Some(max) = self.config.max_request_body {
            reply = reply.header(OCI_CHUNK_MAX_LENGTH, max.to_string());
        }
        if self.blobs.direct_limits().is_some() {
            reply = reply.header(direct::BERTH_DIRECT_UPLOAD, "parts");
        }
        reply
    }

    /// 416 with the upload's current Range, so the client can resume from there.
    fn out_of_order(&self, name: &RepoName, id: &str, offset: u64, message: String) -> RegistryError {
        let mut err = oci(ErrorCode::BlobUploadInvalid, message)
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(RANGE, range_header(offset))
            .with_header(LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
            .with_header(DOCKER_UPLOAD_UUID, id.to_owned());
        if let Some(min) = self.config.chunk_min_length {
            err = err.with_header(OCI_CHUNK_MIN_LENGTH, min.to_string());
        }
        err
    }

    /// A concurrent request holds or changed the session: 416 with the offset as it now stands.
    async fn busy(&self, name: &RepoName, id: &str, fallback_offset: u64) -> RegistryError {
        let offset = match self.get_versioned::<Session>(&upload_key(id)).await {
            Ok(Some((session, _))) => session.offset,
            Ok(None) => return upload_unknown(id),
            Err(_) => fallback_offset,
        };
        self.out_of_order(name, id, offset, BUSY.to_owned())
    }

    /// Claims the session for one writing request. The claim lapses after `upload_lease_secs`,
    /// so a runtime that died mid-request does not lock the session for ever.
    async fn claim(
        &self,
        name: &RepoName,
        id: &str,
        mut session: Session,
        version: String,
        ctx: &RequestContext,
    ) -> Result<(Session, String)> {
        if session.writing_until > ctx.now {
            // Just read: no need to fetch the session again for its offset.
            return Err(self.out_of_order(name, id, session.offset, BUSY.to_owned()));
        }
        session.writing_until = ctx.now.saturating_add(self.config.upload_lease_secs.max(1));
        session.touched = ctx.now;
        match self.put_record(&upload_key(id), &session, Precondition::Version(version)).await? {
            PutOutcome::Written { version } => Ok((session, version)),
            PutOutcome::Conflict => Err(self.busy(name, id, session.offset).await),
        }
    }

    /// Gives up a claim after a failed request; the session stays as it was before it.
    async fn release(&self, id: &str, mut session: Session, version: String) {
        session.writing_until = 0;
        if let Err(e) = self.put_record(&upload_key(id), &session, Precondition::Version(version)).await {
            // The claim then lapses on its own.
            tracing::warn!(upload = id, "could not release an upload claim: {e:?}");
        }
    }

    /// 201 for a blob now in the repository, reporting it for the request's event.
    fn created_reply(name: &RepoName, digest: &Digest, size: u64) -> Reply {
        Reply::new(StatusCode::CREATED)
            .header(LOCATION, format!("/v2/{name}/blobs/{digest}"))
            .header(DOCKER_CONTENT_DIGEST, digest.to_string())
            .found(Found::blob(digest, size))
    }

    /// `POST /v2/<name>/blobs/uploads/` with `?digest=` (monolithic), `?mount=&from=`, or nothing.
    pub(crate) async fn start_upload(
        &self,
        name: &str,
        parts: &crate::Parts,
        body: ByteStream,
        grant: &crate::auth::Grant,
        ctx: &RequestContext,
    ) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let query = query_of(parts.uri.query());
        if let Some(mount) = query_param(&query, "mount") {
            let digest = parse_digest(mount)?;
            // Only the source the gate authorized (the same parse of the same query), and only
            // when it did: without pull on the source, nothing about it is revealed.
            let from = crate::auth::mount_source(&query).filter(|_| grant.mount_source_readable);
            if let Some(from) = from {
                let from = RepoName::parse(from)?;
                if let Some(size) = self.blob_link(&from, &digest).await? {
                    self.link_blob(&name, &digest, size, ctx.now).await?;
                    return Ok(Self::created_reply(&name, &digest, size));
                }
            }
            // Not mountable (or not allowed): the client uploads instead, as the spec says.
        } else if let Some(digest) = query_param(&query, "digest") {
            let digest = parse_digest(digest)?;
            return self.monolithic(&name, digest, &parts.headers, body, Source::Request, ctx).await;
        }
        let id = self.new_upload_id(&name, ctx);
        let backend = self.blobs.upload_start(&id).await?;
        let session = Session {
            repo: name.to_string(),
            offset: 0,
            hash: UploadHasher::default().save(),
            backend,
            started: ctx.now,
            writing_until: 0,
            touched: 0,
            direct: false,
            native: None,
        };
        self.put_record(&upload_key(&id), &session, Precondition::Absent).await?;
        Ok(self.upload_reply(StatusCode::ACCEPTED, &name, &id, 0))
    }

    /// The whole blob in the POST: nothing is saved as a session; a failure leaves nothing.
    pub(crate) async fn monolithic(
        &self,
        name: &RepoName,
        digest: Digest,
        headers: &http::HeaderMap,
        body: ByteStream,
        source: Source,
        ctx: &RequestContext,
    ) -> Result<Reply> {
        let declared = header_str(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let body = match read_small(body, declared).await? {
            Whole(bytes) => return self.put_small_blob(name, &digest, bytes, declared, source, ctx).await,
            Larger(body) => body,
        };
        let id = self.new_upload_id(name, ctx);
        let backend = self.blobs.upload_start(&id).await?;
        let session = Session {
            repo: name.to_string(),
            offset: 0,
            hash: UploadHasher::default().save(),
            backend,
            started: ctx.now,
            writing_until: 0,
            touched: 0,
            direct: false,
            native: None,
        };
        let session = match self.append(name, &id, session.clone(), headers, body, source).await {
            Ok(s) if declared.is_some_and(|len| len != s.offset) => {
                self.blobs.upload_abort(&id, &s.backend).await?;
                return Err(oci(ErrorCode::SizeInvalid, "body length differs from Content-Length"));
            }
            Ok(s) => s,
            Err(e) => {
                self.blobs.upload_abort(&id, &session.backend).await?;
                return Err(e);
            }
        };
        let size = session.offset;
        self.complete(name, &id, session, &digest, ctx).await?;
        Ok(Self::created_reply(name, &digest, size))
    }

    /// A small blob pushed whole: verified in memory and stored with one write, without an
    /// upload's staging, completion and cleanup (3 to 6 storage calls fewer; configs and small
    /// layers are most of the blobs of most images).
    async fn put_small_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        bytes: bytes::Bytes,
        declared: Option<u64>,
        source: Source,
        ctx: &RequestContext,
    ) -> Result<Reply> {
        let size = bytes.len() as u64;
        if declared.is_some_and(|len| len != size) {
            return Err(oci(ErrorCode::SizeInvalid, "body length differs from Content-Length"));
        }
        if let Some(limit) = self.body_limit(source).filter(|l| size > *l) {
            return Err(too_large(limit));
        }
        if !crate::hash::matches(digest, &bytes) {
            let actual = crate::hash::digest_of(digest.algorithm(), &bytes);
            return Err(oci(ErrorCode::DigestInvalid, format!("the {size} uploaded bytes have digest {actual}, not {digest}"))
                .with_detail(serde_json::json!({ "expected": digest.to_string(), "actual": actual })));
        }
        self.blobs.put_verified(digest, bytes.clone()).await?;
        if self.content_written(digest).await? == crate::gc::Written::Lost {
            // Garbage collection deleted it just after we wrote it (docs/gc.md): once more.
            self.blobs.put_verified(digest, bytes).await?;
        }
        self.link_blob(name, digest, size, ctx.now).await?;
        Ok(Self::created_reply(name, digest, size))
    }

    /// Streams a request body onto the end of an upload, hashing as it flows. The session is
    /// returned advanced but not saved; bytes of a failed request are discarded by the next writer.
    async fn append(
        &self,
        name: &RepoName,
        id: &str,
        mut session: Session,
        headers: &http::HeaderMap,
        mut body: ByteStream,
        source: Source,
    ) -> Result<Session> {
        direct::refuse_patch(&session, id)?;
        let range = header_str(headers, "content-range").map(parse_content_range).transpose()?;
        if let Some((start, _, _)) = range {
            if start != session.offset {
                return Err(self.out_of_order(
                    name,
                    id,
                    session.offset,
                    format!(
                        "chunk starts at byte {start} but the upload has {} bytes; send the chunk \
                         that starts at {}",
                        session.offset, session.offset
                    ),
                ));
            }
        }
        let declared = header_str(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let limit = self.body_limit(source);
        if let Some(limit) = limit.filter(|l| declared.is_some_and(|len| len > *l)) {
            return Err(too_large(limit));
        }
        // A body that may be the whole blob (docker's streamed PATCH has no Content-Range; a
        // monolithic POST or a PUT with every byte) goes to the store to take natively, hashed by
        // the runtime outside the core (the Worker: no byte through wasm). A chunked client's
        // first chunk carries a Content-Range and stays on the resumable hash the next continues.
        if session.offset == 0 && range.is_none() && source == Source::Request {
            body = match self.blobs.upload_native(id, &session.backend, limit, body).await? {
                NativeAppend::Declined(body) => body,
                NativeAppend::Appended { backend, received, sha256 } => {
                    tracing::debug!(upload = id, received, "body appended natively");
                    session.backend = backend;
                    session.offset = received;
                    session.hash = String::new();
                    session.native = Some(sha256);
                    return Ok(session);
                }
                NativeAppend::TooLarge => return Err(too_large(limit.unwrap_or_default())),
                NativeAppend::Broken { received, message } => return Err(body_broke(declared, received, &message)),
            };
        }
        // None: the state was not kept (a native body came first); completion reads back.
        let mut hasher = match session.hash.as_str() {
            "" => None,
            saved => Some(
                UploadHasher::restore(saved)
                    .ok_or_else(|| crate::StorageError::new(format!("upload {id} has a corrupt hash state")))?,
            ),
        };
        let mut writer = self.blobs.upload_writer(id, &session.backend, session.offset).await?;
        let (mut received, mut chunks) = (0u64, 0u64);
        while let Some(chunk) = body.next().await {
            chunks += 1;
            let chunk = chunk.map_err(|e| body_broke(declared, received, &e.to_string()))?;
            received += chunk.len() as u64;
            if let Some(limit) = limit.filter(|l| received > *l) {
                return Err(too_large(limit));
            }
            if !chunk.is_empty() {
                // The runtime's digest covered the bytes before these only: no longer the
                // upload's. Its resumable state was not kept, so completion reads back.
                session.native = None;
            }
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            writer.write(chunk).await?;
        }
        if let Some((start, end, len)) = range {
            // An empty body with a Content-Range is what some clients send with the final PUT.
            if received != 0 && received != len {
                return Err(oci(
                    ErrorCode::BlobUploadInvalid,
                    format!("Content-Range {start}-{end} announced {len} bytes but {received} came"),
                ));
            }
        }
        tracing::debug!(upload = id, received, chunks, "chunk appended");
        session.backend = writer.finish().await?;
        session.offset += received;
        session.hash = hasher.map(|h| h.save()).unwrap_or_default();
        Ok(session)
    }

    /// `append` under a claim, giving the claim up again when the request fails.
    async fn append_claimed(
        &self,
        name: &RepoName,
        id: &str,
        session: Session,
        version: &str,
        headers: &http::HeaderMap,
        body: ByteStream,
    ) -> Result<Session> {
        match self.append(name, id, session.clone(), headers, body, Source::Request).await {
            Ok(appended) => Ok(appended),
            Err(e) => {
                self.release(id, session, version.to_owned()).await;
                Err(e)
            }
        }
    }

    fn body_limit(&self, source: Source) -> Option<u64> {
        match source {
            Source::Request => self.config.max_request_body,
            Source::Fetched => None,
        }
    }

    /// Saves the advanced session and gives up the claim on it.
    async fn save_session(&self, name: &RepoName, id: &str, mut session: Session, version: String) -> Result<Session> {
        session.writing_until = 0;
        match self.put_record(&upload_key(id), &session, Precondition::Version(version)).await? {
            PutOutcome::Written { .. } => Ok(session),
            // Only when the claim lapsed or the upload was cancelled meanwhile.
            PutOutcome::Conflict => Err(self.busy(name, id, session.offset).await),
        }
    }

    /// Verifies the digest and makes the blob visible; on a mismatch the upload is discarded.
    async fn complete(
        &self,
        name: &RepoName,
        id: &str,
        session: Session,
        digest: &Digest,
        ctx: &RequestContext,
    ) -> Result<()> {
        let actual = match (digest.algorithm(), &session.native) {
            (DigestAlgorithm::Sha512, _) => self.digest_stored(id, &session.backend, digest.algorithm()).await?,
            (_, Some(native)) => native.clone(),
            // Chunks came after a natively hashed body: one pass over what is stored.
            _ if session.hash.is_empty() => self.digest_stored(id, &session.backend, digest.algorithm()).await?,
            _ => UploadHasher::restore(&session.hash)
                .ok_or_else(|| crate::StorageError::new(format!("upload {id} has a corrupt hash state")))?
                .finish(),
        };
        if actual != digest.to_string() {
            self.blobs.upload_abort(id, &session.backend).await?;
            return Err(oci(
                ErrorCode::DigestInvalid,
                format!("the {} uploaded bytes have digest {actual}, not {digest}", session.offset),
            )
            .with_detail(serde_json::json!({ "expected": digest.to_string(), "actual": actual })));
        }
        self.blobs.upload_commit(id, &session.backend, digest, session.offset).await?;
        self.upload_committed(digest).await?;
        self.link_blob(name, digest, session.offset, ctx.now).await
    }

    pub(crate) async fn patch_upload(
        &self,
        name: &str,
        id: &str,
        parts: &crate::Parts,
        body: ByteStream,
        ctx: &RequestContext,
    ) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let (session, version) = self.load_session(&name, id).await?;
        let (session, version) = self.claim(&name, id, session, version, ctx).await?;
        let appended = self.append_claimed(&name, id, session, &version, &parts.headers, body).await?;
        let session = self.save_session(&name, id, appended, version).await?;
        Ok(self.upload_reply(StatusCode::ACCEPTED, &name, id, session.offset))
    }

    pub(crate) async fn put_upload(
        &self,
        name: &str,
        id: &str,
        parts: &crate::Parts,
        body: ByteStream,
        ctx: &RequestContext,
    ) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let (session, version) = self.load_session(&name, id).await?;
        let query = query_of(parts.uri.query());
        let Some(digest) = query_param(&query, "digest") else {
            return Err(oci(ErrorCode::DigestInvalid, "PUT must name the blob's digest in ?digest="));
        };
        let digest = parse_digest(digest)?;
        if session.direct {
            return self.complete_direct(&name, id, session, version, &digest, body, ctx).await;
        }
        // The claim also keeps a concurrent PUT from completing the upload twice.
        let (session, version) = self.claim(&name, id, session, version, ctx).await?;
        let appended = self.append_claimed(&name, id, session, &version, &parts.headers, body).await?;
        let size = appended.offset;
        let result = self.complete(&name, id, appended, &digest, ctx).await;
        self.meta.delete(&upload_key(id)).await?;
        result?;
        Ok(Self::created_reply(&name, &digest, size))
    }

    /// Clears every upload claim. Only for a runtime that knows no request is in flight in any
    /// instance (the single-process local server at start-up): claims left by a crash would
    /// otherwise refuse the resuming client until they lapse. Returns how many were cleared.
    pub async fn release_all_upload_claims(&self) -> Result<usize> {
        let mut cleared = 0;
        for key in self.list_all(crate::records::UPLOADS).await? {
            if let Some((mut session, version)) = self.get_versioned::<Session>(&key).await? {
                if session.writing_until != 0 {
                    session.writing_until = 0;
                    self.put_record(&key, &session, Precondition::Version(version)).await?;
                    cleared += 1;
                }
            }
        }
        Ok(cleared)
    }

    pub(crate) async fn upload_status(&self, name: &str, id: &str) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let (session, _) = self.load_session(&name, id).await?;
        Ok(self.upload_reply(StatusCode::NO_CONTENT, &name, id, session.offset))
    }

    /// Cancels under a claim like any writer: a cancel racing a completing PUT or a PATCH
    /// waits its turn (409) instead of pulling the data from under it.
    pub(crate) async fn cancel_upload(&self, name: &str, id: &str, ctx: &RequestContext) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let (session, version) = self.load_session(&name, id).await?;
        let (session, _) = match self.claim(&name, id, session, version, ctx).await {
            Ok(claimed) => claimed,
            Err(e) if e.code == ErrorCode::BlobUploadUnknown => return Err(e),
            Err(_) => {
                return Err(oci(
                    ErrorCode::BlobUploadInvalid,
                    "another request is writing this upload; cancel it again once that request has finished",
                )
                .with_status(StatusCode::CONFLICT))
            }
        };
        self.meta.delete(&upload_key(id)).await?;
        self.blobs.upload_abort(id, &session.backend).await?;
        Ok(Reply::new(StatusCode::NO_CONTENT))
    }
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// After `upload_commit` of `digest`, before its link: an upload cannot write its bytes
    /// again, so content garbage collection deleted right after the commit fails the upload.
    pub(crate) async fn upload_committed(&self, digest: &Digest) -> Result<()> {
        match self.content_written(digest).await? {
            crate::gc::Written::Kept => Ok(()),
            crate::gc::Written::Lost => Err(crate::gc::being_collected(digest)),
        }
    }
}

/// Blobs pushed whole up to this size are verified in memory and written at once
/// (`put_small_blob`); a bound on what one request buffers, like the manifest limit.
pub const SMALL_BLOB_BYTES: u64 = 1024 * 1024;

enum SmallOrNot {
    /// The whole body, at most `SMALL_BLOB_BYTES`.
    Whole(bytes::Bytes),
    /// A larger body: what was read, then the rest, as one stream again.
    Larger(ByteStream),
}
use SmallOrNot::{Larger, Whole};

/// Reads a body whole if it is small; stops reading at the first byte over the bound.
async fn read_small(mut body: ByteStream, declared: Option<u64>) -> Result<SmallOrNot> {
    if declared.is_some_and(|len| len > SMALL_BLOB_BYTES) {
        return Ok(Larger(body));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| match declared {
            Some(len) => oci(
                ErrorCode::SizeInvalid,
                format!("the request body ended after {} of the {len} bytes its Content-Length announced: {e}", buf.len()),
            ),
            None => oci(ErrorCode::BlobUploadInvalid, format!("the request body broke off: {e}")),
        })?;
        buf.extend_from_slice(&chunk);
        if buf.len() as u64 > SMALL_BLOB_BYTES {
            let read: ByteStream = Box::pin(futures_util::stream::once(async move { Ok(buf.freeze()) }));
            return Ok(Larger(Box::pin(read.chain(body))));
        }
    }
    Ok(Whole(buf.freeze()))
}

/// A request body that ended early or broke off.
fn body_broke(declared: Option<u64>, received: u64, why: &str) -> RegistryError {
    match declared {
        Some(len) => oci(
            ErrorCode::SizeInvalid,
            format!("the request body ended after {received} of the {len} bytes its Content-Length announced: {why}"),
        ),
        None => oci(ErrorCode::BlobUploadInvalid, format!("the request body broke off: {why}")),
    }
}

pub(crate) fn too_large(limit: u64) -> RegistryError {
    oci(
        ErrorCode::SizeInvalid,
        format!(
            "request body is over this registry's limit of {limit} bytes per request; push the \
             blob in chunks (PATCH with Content-Range) smaller than that, or use `berth push`"
        ),
    )
    .with_detail(serde_json::json!({ "limit": limit }))
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99").unwrap(), (0, 99, 100));
        assert_eq!(parse_content_range("bytes 100-199/*").unwrap(), (100, 199, 100));
        assert_eq!(parse_content_range("bytes=5-9").unwrap(), (5, 9, 5));
        assert!(parse_content_range("0-18446744073709551615").is_err());
        assert!(parse_content_range("9-5").is_err());
        assert!(parse_content_range("abc").is_err());
        assert!(parse_content_range("1-").is_err());
    }

    #[test]
    fn range_header_is_inclusive() {
        assert_eq!(range_header(0), "0-0");
        assert_eq!(range_header(10), "0-9");
    }
}
