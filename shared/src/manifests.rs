//! Manifests: push (verified, references checked), pull with content negotiation, delete.

use bytes::Bytes;
use futures_util::future::try_join_all;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, VARY};
use http::StatusCode;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::blobs::IMMUTABLE;
use crate::body::{read_limited, Body};
use crate::error::{oci, ErrorCode, RegistryError, Result};
use crate::events::{Found, TagMove};
use crate::hash;
use crate::names::{is_valid_tag, parse_digest, Digest, Reference, RepoName};
use crate::records::{
    manifest_key, referrer_key, tag_key, tag_prefix, ManifestRecord, TagDigest, TagRecord, PULL_RECORD_SECS,
};
use crate::reply::names::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use crate::reply::Reply;
use crate::storage::{BatchOp, BlobStore, MetaStore, Precondition, PutOutcome};
use crate::{header_str, query_of, Registry};

/// `OCI-Tag`: one per tag a push by digest applied from its `tag` query parameters.
const OCI_TAG: http::HeaderName = http::HeaderName::from_static("oci-tag");

/// How often a write retries after losing a race on one record before answering 429.
const ATTEMPTS: usize = 8;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Layers a registry must not expect to hold (Windows base layers and the like).
const FOREIGN_LAYERS: [&str; 3] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
];

/// The parsed manifest, in the two shapes the four media types come in.
pub(crate) enum Parsed {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Just the fields needed to pick and check the media type, before parsing the whole thing.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "schemaVersion")]
    schema_version: Option<serde_json::Value>,
    manifests: Option<serde_json::Value>,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    oci(ErrorCode::ManifestInvalid, message)
}

/// Works out the manifest's media type from Content-Type and the body, and parses it.
pub(crate) fn parse_manifest(content_type: Option<&str>, bytes: &[u8]) -> Result<(String, Parsed)> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("manifest is not a JSON object: {e}")))?;
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
    let generic = |c: &str| c.is_empty() || c == "application/json" || c == "application/octet-stream";
    let media_type = match (content_type, envelope.media_type.as_deref()) {
        (Some(ct), declared) if !generic(ct) => {
            if let Some(declared) = declared.filter(|d| *d != ct) {
                return Err(invalid(format!(
                    "Content-Type {ct} contradicts the manifest's mediaType {declared}"
                )));
            }
            ct.to_owned()
        }
        (_, Some(declared)) => declared.to_owned(),
        // Neither says: OCI allows omitting mediaType; the shape tells.
        (_, None) if envelope.manifests.is_some() => OCI_INDEX.to_owned(),
        (_, None) => OCI_MANIFEST.to_owned(),
    };
    if envelope.schema_version != Some(serde_json::Value::from(2)) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let parsed = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Parsed::Image(Box::new(
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("invalid image manifest: {e}")))?,
        )),
        OCI_INDEX | DOCKER_LIST => Parsed::Index(Box::new(
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("invalid image index: {e}")))?,
        )),
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type {other:?}; Berth accepts {OCI_MANIFEST}, {OCI_INDEX}, \
                 {DOCKER_MANIFEST} and {DOCKER_LIST}"
            )))
        }
    };
    Ok((media_type, parsed))
}

/// The parse/validate step of a manifest push without the storage checks: the media type the
/// manifest would be stored as, or the OCI error the push gets. Public for the fuzz targets (fuzz/).
pub fn validate_manifest(content_type: Option<&str>, bytes: &[u8]) -> Result<String> {
    let (media_type, parsed) = parse_manifest(content_type, bytes)?;
    // What a push reads from the parsed manifest besides its references.
    let _ = (parsed.subject(), parsed.artifact_type(), parsed.annotations());
    Ok(media_type)
}

impl Parsed {
    pub(crate) fn subject(&self) -> Option<&Descriptor> {
        match self {
            Parsed::Image(m) => m.subject().as_ref(),
            Parsed::Index(i) => i.subject().as_ref(),
        }
    }

    /// What the referrers API reports as this manifest's artifactType.
    pub(crate) fn artifact_type(&self) -> Option<String> {
        match self {
            Parsed::Image(m) => Some(
                m.artifact_type()
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| m.config().media_type().to_string()),
            ),
            Parsed::Index(i) => i.artifact_type().as_ref().map(|t| t.to_string()),
        }
    }

    pub(crate) fn annotations(&self) -> Option<&std::collections::HashMap<String, String>> {
        match self {
            Parsed::Image(m) => m.annotations().as_ref(),
            Parsed::Index(i) => i.annotations().as_ref(),
        }
    }
}

fn manifest_unknown(reference: impl std::fmt::Display) -> RegistryError {
    oci(ErrorCode::ManifestUnknown, format!("manifest {reference} is not in this repository"))
        .with_detail(serde_json::json!({ "reference": reference.to_string() }))
}

fn busy(what: impl std::fmt::Display) -> RegistryError {
    oci(ErrorCode::TooManyRequests, format!("{what} is being changed by many requests at once; retry"))
}

/// The tags a push applies: the reference when it is a tag, then each `tag` query parameter
/// (OCI distribution-spec, push by digest). All are checked before any is applied.
fn push_tags(reference: &Reference, query: Option<&str>) -> Result<(Vec<String>, Vec<String>)> {
    let mut from_query = Vec::new();
    for (key, tag) in query_of(query) {
        if key != "tag" {
            continue;
        }
        if !is_valid_tag(&tag) {
            return Err(oci(
                ErrorCode::TagInvalid,
                format!("invalid tag {tag:?}: tags match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}; no tag was applied"),
            ));
        }
        if !from_query.contains(&tag) {
            from_query.push(tag);
        }
    }
    let mut all = Vec::new();
    if let Reference::Tag(tag) = reference {
        all.push(tag.clone());
    }
    all.extend(from_query.iter().filter(|t| !all.contains(t)).cloned().collect::<Vec<_>>());
    Ok((all, from_query))
}

/// Whether a pull at `now` should write the record's pull time: retention only asks when a
/// manifest was last used (pushed or pulled), so within an hour of either there is nothing to
/// write (a pull right after a push, the usual case, stays a read).
fn pull_due(record: &ManifestRecord, now: u64) -> bool {
    let last_used = record.pushed_at.max(record.pulled_at.unwrap_or(0));
    now.saturating_sub(last_used) >= PULL_RECORD_SECS
}

/// What a GET or HEAD of a manifest answers with.
pub(crate) struct Resolved {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) size: u64,
    /// The manifest's bytes, when the tag record carried them (see `TagRecord`).
    pub(crate) inline: Option<Bytes>,
}

/// Whether an Accept header admits `media_type`. No Accept header admits everything.
fn accepts(accept: &[&str], media_type: &str) -> bool {
    accept.is_empty()
        || accept.iter().flat_map(|v| v.split(',')).any(|entry| {
            let t = entry.split(';').next().unwrap_or("").trim();
            t == media_type || t == "*/*" || t == "application/*" || t.is_empty()
        })
}

/// The blobs of an image a registry holds: its config and layers, not foreign or
/// non-distributable layers (those name URLs elsewhere).
pub(crate) fn stored_blobs(m: &ImageManifest) -> impl Iterator<Item = &Descriptor> {
    std::iter::once(m.config()).chain(m.layers().iter().filter(|l| {
        let foreign = FOREIGN_LAYERS.contains(&l.media_type().to_string().as_str());
        !foreign && l.urls().as_ref().is_none_or(|u| u.is_empty())
    }))
}

/// Manifest bytes whose digest is verified and which parse: what a push, a pull-through
/// cache's fetch and pull-mode replication each hand to [`Registry::accept_manifest`] or
/// [`Registry::store_manifest`].
pub(crate) struct VerifiedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
    pub parsed: Parsed,
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// The manifest a reference names. By tag this is one read of the tag record, which carries
    /// the media type, size and (small manifests) bytes; a record written before it did falls
    /// back to the manifest record and the blob store. A tag never outlives its manifest: a
    /// delete by digest removes the tags before the record becomes a tombstone (see `publish`
    /// for the one race that can leave a tag briefly, and `docs/architecture.md`).
    pub(crate) async fn resolve(&self, name: &RepoName, reference: &Reference) -> Result<Resolved> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => {
                let Some(record) = self.get_record::<TagRecord>(&tag_key(name, tag)).await? else {
                    return Err(manifest_unknown(reference));
                };
                let digest = parse_digest(&record.digest)?;
                if let (Some(media_type), Some(size)) = (record.media_type, record.size) {
                    // Bytes whose length is not the recorded size are not trusted: read them.
                    let inline = record.manifest.map(|m| Bytes::from(m.into_bytes())).filter(|b| b.len() as u64 == size);
                    return Ok(Resolved { digest, media_type, size, inline });
                }
                digest
            }
        };
        match self.get_record::<ManifestRecord>(&manifest_key(name, &digest)).await? {
            Some(record) if !record.deleted => {
                Ok(Resolved { digest, media_type: record.media_type, size: record.size, inline: None })
            }
            _ => Err(manifest_unknown(reference)),
        }
    }

    /// Records a pull time: at most one write per manifest per [`PULL_RECORD_SECS`], on
    /// condition that the record is unchanged since read, so it never revives a tombstone
    /// nor undoes a push; like every write of the record it raises the generation.
    async fn note_pull(&self, name: &RepoName, digest: &Digest, now: u64) -> Result<()> {
        let key = manifest_key(name, digest);
        let Some((record, version)) = self.get_versioned::<ManifestRecord>(&key).await? else { return Ok(()) };
        if record.deleted || !pull_due(&record, now) {
            return Ok(());
        }
        let pulled = ManifestRecord { generation: record.generation + 1, pulled_at: Some(now), ..record };
        self.put_record(&key, &pulled, Precondition::Version(version)).await?;
        Ok(())
    }

    pub(crate) async fn get_manifest(
        &self,
        name: &str,
        reference: &str,
        req: &crate::Parts,
        head: bool,
        now: u64,
    ) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        // A tag that could never have been pushed names no manifest: 404, as the conformance
        // suite and other registries answer (a PUT of it is still 400 TAG_INVALID).
        let reference = Reference::parse(reference).map_err(|e| match e.code {
            ErrorCode::TagInvalid => manifest_unknown(reference),
            _ => e,
        })?;
        let resolved = match self.mirror_of(name.as_str()) {
            // A pull-through cache: a miss or a stale tag asks the upstream (src/mirror/).
            Some((rule, upstream)) => self.mirror_resolve(&name, &reference, rule, upstream, now).await?,
            None => self.resolve(&name, &reference).await?,
        };
        let Resolved { digest, media_type, size, inline } = resolved;
        if !head && self.policies.records_pulls(name.as_str()) {
            // Only where a retention rule reads pull times: elsewhere a GET by tag stays one
            // read. A pull is answered even if its time cannot be written (a storage hiccup, or
            // a push or another pull writing the record at the same moment).
            let _ = self.note_pull(&name, &digest, now).await;
        }
        let by_tag = matches!(reference, Reference::Tag(_));
        if by_tag {
            let accept: Vec<&str> =
                req.headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect();
            if !accepts(&accept, &media_type) {
                return Err(oci(
                    ErrorCode::ManifestUnknown,
                    format!(
                        "manifest {reference} is stored as {media_type}, which the request's Accept header excludes"
                    ),
                ));
            }
        }
        let etag = format!("\"{digest}\"");
        let mut reply = Reply::new(StatusCode::OK)
            .found(Found::manifest(&digest, &media_type, size))
            .header(DOCKER_CONTENT_DIGEST, digest.to_string())
            .header(ETAG, etag.clone());
        reply = if by_tag {
            reply.header(CACHE_CONTROL, "no-cache").header(VARY, "Accept")
        } else {
            reply.header(CACHE_CONTROL, IMMUTABLE)
        };
        if header_str(&req.headers, IF_NONE_MATCH.as_str())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        {
            return Ok(reply.status(StatusCode::NOT_MODIFIED));
        }
        let reply = reply.header(CONTENT_TYPE, media_type);
        if head {
            return Ok(reply.body(Body::Empty, size));
        }
        if let Some(bytes) = inline {
            return Ok(reply.body(Body::Full(bytes), size));
        }
        let Some(stream) = self.blobs.read_manifest(&digest).await? else {
            return Err(crate::StorageError::new(format!("manifest {digest} has a record but no content")).into());
        };
        Ok(reply.body(Body::Stream(stream), size))
    }

    pub(crate) async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        parts: &crate::Parts,
        body: crate::ByteStream,
        ctx: &crate::RequestContext,
    ) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let reference = Reference::parse(reference)?;
        let bytes = read_limited(body, self.config.max_manifest_bytes).await?;
        let digest = match &reference {
            Reference::Digest(d) => {
                if !hash::matches(d, &bytes) {
                    return Err(oci(
                        ErrorCode::DigestInvalid,
                        format!("the manifest's bytes do not have digest {d}"),
                    )
                    .with_detail(serde_json::json!({ "digest": d.to_string() })));
                }
                d.clone()
            }
            Reference::Tag(_) => parse_digest(&hash::sha256_of(&bytes))?,
        };
        let (media_type, parsed) = parse_manifest(header_str(&parts.headers, "content-type"), &bytes)?;
        let (tags, query_tags) = push_tags(&reference, parts.uri.query())?;
        let manifest = VerifiedManifest { digest, media_type, bytes, parsed };
        let (record, moved) = self.accept_manifest(&name, &manifest, &tags, ctx.now).await?;
        let VerifiedManifest { digest, media_type, .. } = manifest;
        let subject = record.subject.clone();

        let mut reply = Reply::new(StatusCode::CREATED)
            .header(LOCATION, format!("/v2/{name}/manifests/{digest}"))
            .header(DOCKER_CONTENT_DIGEST, digest.to_string());
        if let Some(subject) = subject {
            reply = reply.header(OCI_SUBJECT, subject);
        }
        for tag in &query_tags {
            reply = reply.header(OCI_TAG, tag.clone());
        }
        let found = Found { tags: query_tags, moved, ..Found::manifest(&digest, &media_type, record.size) };
        Ok(reply.found(found))
    }

    /// What a push checks of verified manifest bytes (tag policies, that what it names is here,
    /// quotas), then [`Registry::store_manifest`]. Also pull-mode replication's, which stores
    /// what it copied exactly as if it had been pushed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn accept_manifest(
        &self,
        name: &RepoName,
        manifest: &VerifiedManifest,
        tags: &[String],
        now: u64,
    ) -> Result<(ManifestRecord, Vec<TagMove>)> {
        self.check_tag_policies(name, tags, &manifest.digest).await?;
        self.check_references(name, &manifest.parsed, now).await?;
        self.charge_quotas(name, &manifest.digest, manifest.bytes.len() as u64, now).await?;
        self.store_manifest(name, manifest, tags, now).await
    }

    /// Stores verified manifest bytes and makes them visible with their tags, as a push does
    /// (and a pull-through cache, for what it fetched). Returns the record written and the tags
    /// it moved from another manifest (webhooks' `tag_moved`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_manifest(
        &self,
        name: &RepoName,
        manifest: &VerifiedManifest,
        tags: &[String],
        now: u64,
    ) -> Result<(ManifestRecord, Vec<TagMove>)> {
        let VerifiedManifest { digest, media_type, bytes, parsed } = manifest;
        // Content first, then the record that makes it visible, then what points at it.
        self.blobs.put_verified(digest, bytes.clone()).await?;
        if self.content_written(digest).await? == crate::gc::Written::Lost {
            // Garbage collection deleted these bytes just after we wrote them (docs/gc.md): once
            // more, and they stay (the next collection sees our record first).
            self.blobs.put_verified(digest, bytes.clone()).await?;
        }
        let record = ManifestRecord {
            media_type: media_type.to_owned(),
            size: bytes.len() as u64,
            subject: parsed.subject().map(|s| s.digest().to_string()),
            generation: 0,
            deleted: false,
            pushed_at: now,
            pulled_at: None,
            condemned_at: None,
        };
        let moved = self.publish(name, digest, &record, bytes, tags, parsed).await?;
        self.ensure_repo(name).await?;
        Ok((record, moved))
    }

    /// Makes a manifest visible with its tags and referrer entry, so that a delete of the same
    /// manifest running at the same time ends with both or neither: never a tag or referrer
    /// entry left pointing at a deleted manifest.
    ///
    /// 1. Write the record (live). 2. Write the referrer entry and the tags. 3. Write the record
    ///    again, on condition that it is unchanged since step 1.
    ///
    /// A delete (see `delete_manifest`) reads the record, removes the tags and referrer entry it
    /// finds, and last replaces the record by a tombstone on condition that it is unchanged since
    /// its read. Whichever of the two conditional writes comes second fails: if step 3 came
    /// first, the delete's read came after step 2 or its condition fails, so its scan saw our
    /// tags (or it retries and sees them); if the tombstone came first, step 3 fails and we go
    /// round again, which brings the manifest back with our tags.
    ///
    /// A GET by tag reads only the tag record (it carries the manifest), so in that last case
    /// the tag answers between the tombstone and our retry, a few storage calls later: the push
    /// is still in flight and about to make the manifest live again. Only a push that dies in
    /// exactly that window leaves a tag that answers for a deleted manifest (before the tag
    /// carried the manifest it answered 404); the next delete of the digest removes it.
    async fn publish(
        &self,
        name: &RepoName,
        digest: &Digest,
        record: &ManifestRecord,
        bytes: &[u8],
        tags: &[String],
        parsed: &Parsed,
    ) -> Result<Vec<TagMove>> {
        let key = manifest_key(name, digest);
        // Tags this push moved from another manifest (webhooks' `tag_moved`); a later round
        // finds them on our digest already, so the first round's finding is kept.
        let mut moved: Vec<TagMove> = Vec::new();
        let tag_value = Self::encode(&key, &TagRecord::new(digest, &record.media_type, bytes, record.pushed_at))?;
        for _ in 0..ATTEMPTS {
            let (version, generation, pulled_at) = self.write_live_record(&key, record).await?;
            if let Some(subject) = &record.subject {
                self.add_referrer(name, subject, digest, &record.media_type, record.size, parsed).await?;
            }
            for tag in tags {
                if let Some(from) = self.set_tag(name, tag, digest, &tag_value).await? {
                    if !moved.iter().any(|m| &m.tag == tag) {
                        moved.push(TagMove { tag: tag.clone(), from });
                    }
                }
            }
            let again = ManifestRecord { generation: generation + 1, deleted: false, pulled_at, ..record.clone() };
            if let PutOutcome::Written { .. } = self.put_record(&key, &again, Precondition::Version(version)).await? {
                return Ok(moved);
            }
        }
        Err(busy(format!("manifest {digest}")))
    }

    /// Writes `record` as the live manifest record, one generation above whatever is there
    /// (keeping its pull time). Returns the new version, generation and pull time.
    async fn write_live_record(&self, key: &str, record: &ManifestRecord) -> Result<(String, u64, Option<u64>)> {
        for _ in 0..ATTEMPTS {
            let (cond, generation, pulled_at) = match self.get_versioned::<ManifestRecord>(key).await? {
                Some((current, version)) => (Precondition::Version(version), current.generation + 1, current.pulled_at),
                None => (Precondition::Absent, 1, None),
            };
            let record = ManifestRecord { generation, deleted: false, pulled_at, ..record.clone() };
            if let PutOutcome::Written { version } = self.put_record(key, &record, cond).await? {
                return Ok((version, generation, pulled_at));
            }
        }
        Err(busy(key))
    }

    /// A manifest may only name blobs (image) or manifests (index) this repository holds.
    /// A condemned blob link is revived on the way (docs/gc.md); `now` is the push's time.
    async fn check_references(&self, name: &RepoName, parsed: &Parsed, now: u64) -> Result<()> {
        let missing = |d: &Digest, what: &str| {
            oci(ErrorCode::ManifestBlobUnknown, format!("the manifest names {what} {d}, which is not in this repository; push it first"))
                .with_detail(serde_json::json!({ "digest": d.to_string() }))
        };
        match parsed {
            Parsed::Image(m) => {
                let checks = stored_blobs(m).map(|d| async move {
                    let digest = parse_digest(d.digest().as_ref())?;
                    match self.use_link(name, &digest, now).await? {
                        true => Ok(()),
                        false => Err(missing(&digest, "blob")),
                    }
                });
                try_join_all(checks).await?;
            }
            Parsed::Index(index) => {
                let checks = index.manifests().iter().map(|d| async move {
                    let digest = parse_digest(d.digest().as_ref())?;
                    match self.use_manifest(name, &digest).await? {
                        true => Ok(()),
                        false => Err(missing(&digest, "manifest")),
                    }
                });
                try_join_all(checks).await?;
            }
        }
        Ok(())
    }

    /// Refuses a push before anything is written when a tag it applies is refused, or is
    /// immutable and points elsewhere: the usual case leaves no trace. `set_tag` checks again
    /// against the record it writes over, which is what holds under races.
    async fn check_tag_policies(&self, name: &RepoName, tags: &[String], digest: &Digest) -> Result<()> {
        for tag in tags {
            self.policies.check_tag_allowed(name.as_str(), tag)?;
            if self.policies.immutable_rule(name.as_str(), tag).is_some() {
                let current = self.get_record::<TagRecord>(&tag_key(name, tag)).await?;
                let current = current.as_ref().map(|c| c.digest.as_str());
                self.policies.check_tag_move(name.as_str(), tag, current, digest.as_ref())?;
            }
        }
        Ok(())
    }

    /// Points a tag at a digest with a conditional write, so concurrent pushes of one tag
    /// serialize: each write is made against the version it read, or retried. `record` is the
    /// encoded `TagRecord` for `digest`. An immutable tag is checked against the record read in
    /// the same round: a concurrent push that created it first makes this write's condition
    /// fail, and the next round sees its digest and refuses. Returns the digest the tag pointed
    /// at before, when that was another one.
    async fn set_tag(&self, name: &RepoName, tag: &str, digest: &Digest, record: &Bytes) -> Result<Option<String>> {
        let key = tag_key(name, tag);
        let immutable = self.policies.immutable_rule(name.as_str(), tag).is_some();
        for _ in 0..ATTEMPTS {
            let (cond, before) = match self.get_versioned::<TagDigest>(&key).await? {
                Some((current, version)) => {
                    if immutable {
                        self.policies.check_tag_move(name.as_str(), tag, Some(&current.digest), digest.as_ref())?;
                    }
                    let moved = (current.digest != digest.as_ref()).then_some(current.digest);
                    (Precondition::Version(version), moved)
                }
                None => (Precondition::Absent, None),
            };
            if let PutOutcome::Written { .. } = self.meta.put(&key, record.clone(), cond).await? {
                return Ok(before);
            }
        }
        Err(busy(format!("tag {tag}")))
    }

    pub(crate) async fn delete_manifest(&self, name: &str, reference: &str) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let reference = Reference::parse(reference)?;
        let found = match &reference {
            Reference::Tag(tag) => {
                let key = tag_key(&name, tag);
                let Some(tagged) = self.get_record::<TagRecord>(&key).await? else {
                    return Err(manifest_unknown(&reference));
                };
                self.policies.check_tag_delete(name.as_str(), tag)?;
                self.meta.delete(&key).await?;
                // For the event only: the manifest the tag named (it stays).
                let digest = parse_digest(&tagged.digest)?;
                match (&tagged.media_type, tagged.size) {
                    (Some(media_type), Some(size)) => Found::manifest(&digest, media_type, size),
                    // A record from before tags carried the manifest: ask its record.
                    _ => match self.get_record::<ManifestRecord>(&manifest_key(&name, &digest)).await? {
                        Some(record) => Found::manifest(&digest, &record.media_type, record.size),
                        None => Found { digest: Some(digest.to_string()), ..Found::default() },
                    },
                }
            }
            Reference::Digest(digest) => {
                let record = self.delete_by_digest(&name, digest).await?;
                Found::manifest(digest, &record.media_type, record.size)
            }
        };
        Ok(Reply::new(StatusCode::ACCEPTED).found(found))
    }

    /// Deletes a manifest, its tags and its referrer entry, in one batch: the tags and the entry
    /// first, then the record becomes a tombstone on condition that it is unchanged since it was
    /// read (see `publish` for why that ordering wins every race with a push). On a store with
    /// transactions the batch is one commit; elsewhere a crash part-way leaves the manifest with
    /// some of its tags, all of which still resolve, and the next delete finishes the job.
    /// Returns the record as it was before the delete.
    pub(crate) async fn delete_by_digest(&self, name: &RepoName, digest: &Digest) -> Result<ManifestRecord> {
        let key = manifest_key(name, digest);
        for _ in 0..ATTEMPTS {
            let Some((record, version)) = self.get_versioned::<ManifestRecord>(&key).await? else {
                return Err(manifest_unknown(digest));
            };
            let mut ops = self.tags_pointing_at(name, digest).await?;
            let prefix = tag_prefix(name);
            let tag_of = |op: &BatchOp| match op {
                BatchOp::Delete { key, .. } => key.strip_prefix(&prefix).map(str::to_owned),
                _ => None,
            };
            if record.deleted {
                // The sweep below never takes an immutable tag either (a re-push of the same
                // digest brings its manifest back).
                ops.retain(|op| tag_of(op).is_none_or(|t| self.policies.immutable_rule(name.as_str(), &t).is_none()));
            } else {
                let tags: Vec<String> = ops.iter().filter_map(tag_of).collect();
                self.policies.check_manifest_delete(name.as_str(), digest.as_ref(), tags.iter().map(String::as_str))?;
            }
            if let Some(subject) = &record.subject {
                let key = referrer_key(name, subject, digest);
                ops.push(BatchOp::Delete { key, cond: Precondition::None });
            }
            if record.deleted {
                // Already deleted. A push that died between its tags and its final write can
                // have left a tag behind a concurrent delete; sweep it, and answer as for any
                // unknown manifest.
                if !ops.is_empty() {
                    self.meta.apply(ops).await?;
                }
                return Err(manifest_unknown(digest));
            }
            let tombstone = ManifestRecord { generation: record.generation + 1, deleted: true, ..record.clone() };
            let value = Self::encode(&key, &tombstone)?;
            ops.push(BatchOp::Put { key: key.clone(), value, cond: Precondition::Version(version) });
            if self.meta.apply(ops).await?.last() == Some(&true) {
                return Ok(record);
            }
            // A push wrote the record meanwhile: read it again and delete what it added too.
        }
        Err(busy(format!("manifest {digest}")))
    }

    /// Garbage collection's delete of a manifest a policy condemned: the tombstone first, on
    /// condition that the record is still the `version` GC judged (a push or an index PUT that
    /// revived it meanwhile wins), then its referrer entry and tags. A tag read after the
    /// tombstone and before its removal resolves to nothing, as for any deleted manifest.
    /// Returns whether it was deleted.
    pub(crate) async fn tombstone_if_unchanged(&self, name: &RepoName, digest: &Digest, version: &str) -> Result<bool> {
        let key = manifest_key(name, digest);
        let Some((record, current)) = self.get_versioned::<ManifestRecord>(&key).await? else { return Ok(false) };
        if current != version || record.deleted {
            return Ok(false);
        }
        let tombstone = ManifestRecord { generation: record.generation + 1, deleted: true, ..record.clone() };
        if let PutOutcome::Conflict = self.put_record(&key, &tombstone, Precondition::Version(current)).await? {
            return Ok(false);
        }
        let mut ops = self.tags_pointing_at(name, digest).await?;
        if let Some(subject) = &record.subject {
            ops.push(BatchOp::Delete { key: referrer_key(name, subject, digest), cond: Precondition::None });
        }
        if !ops.is_empty() {
            self.meta.apply(ops).await?;
        }
        Ok(true)
    }

    /// Conditional deletes of the tags that point at `digest`, each on the version read, so a
    /// tag moved to another manifest meanwhile stays.
    async fn tags_pointing_at(&self, name: &RepoName, digest: &Digest) -> Result<Vec<BatchOp>> {
        let wanted = digest.to_string();
        let mut ops = Vec::new();
        for key in self.list_all(&tag_prefix(name)).await? {
            if let Some((tag, version)) = self.get_versioned::<TagDigest>(&key).await? {
                if tag.digest == wanted {
                    ops.push(BatchOp::Delete { key, cond: Precondition::Version(version) });
                }
            }
        }
        Ok(ops)
    }
}

#[cfg(test)]
mod by_tag;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert!(accepts(&[], OCI_INDEX));
        assert!(accepts(&["application/vnd.oci.image.index.v1+json, */*;q=0.1"], OCI_INDEX));
        assert!(accepts(&[DOCKER_MANIFEST, OCI_MANIFEST], OCI_MANIFEST));
        assert!(!accepts(&[DOCKER_MANIFEST], OCI_INDEX));
    }

    #[test]
    fn media_type_comes_from_header_then_body() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(parse_manifest(None, body).unwrap().0, OCI_INDEX);
        assert_eq!(parse_manifest(Some("application/json"), body).unwrap().0, OCI_INDEX);
        let err = parse_manifest(Some(DOCKER_LIST), body).err().unwrap();
        assert_eq!(err.code, ErrorCode::ManifestInvalid);
        let v1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(parse_manifest(Some("application/vnd.docker.distribution.manifest.v1+prettyjws"), v1).is_err());
        assert!(parse_manifest(None, b"garbage").is_err());
    }
}
