//! Manifests: push (verified, references checked), pull with content negotiation, delete.

use futures_util::future::try_join_all;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, VARY};
use http::StatusCode;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::blobs::IMMUTABLE;
use crate::body::{read_limited, Body};
use crate::error::{oci, ErrorCode, RegistryError, Result};
use crate::hash;
use crate::names::{parse_digest, Digest, Reference, RepoName};
use crate::records::{manifest_key, tag_key, tag_prefix, ManifestRecord, TagRecord};
use crate::reply::names::{DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use crate::reply::Reply;
use crate::storage::{BlobStore, MetaStore, Precondition, PutOutcome};
use crate::{header_str, Registry};

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
    fn subject(&self) -> Option<&Descriptor> {
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

fn manifest_unknown(reference: &Reference) -> RegistryError {
    oci(ErrorCode::ManifestUnknown, format!("manifest {reference} is not in this repository"))
        .with_detail(serde_json::json!({ "reference": reference.to_string() }))
}

/// Whether an Accept header admits `media_type`. No Accept header admits everything.
fn accepts(accept: &[&str], media_type: &str) -> bool {
    accept.is_empty()
        || accept.iter().flat_map(|v| v.split(',')).any(|entry| {
            let t = entry.split(';').next().unwrap_or("").trim();
            t == media_type || t == "*/*" || t == "application/*" || t.is_empty()
        })
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    async fn resolve(&self, name: &RepoName, reference: &Reference) -> Result<(Digest, ManifestRecord)> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => {
                let Some(record) = self.get_record::<TagRecord>(&tag_key(name, tag)).await? else {
                    return Err(manifest_unknown(reference));
                };
                parse_digest(&record.digest)?
            }
        };
        match self.get_record::<ManifestRecord>(&manifest_key(name, &digest)).await? {
            Some(record) => Ok((digest, record)),
            None => Err(manifest_unknown(reference)),
        }
    }

    pub(crate) async fn get_manifest(
        &self,
        name: &str,
        reference: &str,
        req: &crate::Parts,
        head: bool,
    ) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let reference = Reference::parse(reference)?;
        let (digest, record) = self.resolve(&name, &reference).await?;
        let by_tag = matches!(reference, Reference::Tag(_));
        if by_tag {
            let accept: Vec<&str> =
                req.headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect();
            if !accepts(&accept, &record.media_type) {
                return Err(oci(
                    ErrorCode::ManifestUnknown,
                    format!(
                        "manifest {reference} is stored as {}, which the request's Accept header excludes",
                        record.media_type
                    ),
                ));
            }
        }
        let etag = format!("\"{digest}\"");
        let mut reply = Reply::new(StatusCode::OK)
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
        let reply = reply.header(CONTENT_TYPE, record.media_type.clone());
        if head {
            return Ok(reply.body(Body::Empty, record.size));
        }
        let Some(stream) = self.blobs.read(&digest, None).await? else {
            return Err(crate::StorageError::new(format!("manifest {digest} has a record but no content")).into());
        };
        Ok(reply.body(Body::Stream(stream), record.size))
    }

    pub(crate) async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        parts: &crate::Parts,
        body: crate::ByteStream,
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
        self.check_references(&name, &parsed).await?;

        // Content first, then the record that makes it visible, then the tag.
        self.blobs.put_verified(&digest, bytes.clone()).await?;
        let subject = parsed.subject().map(|s| s.digest().to_string());
        let record = ManifestRecord { media_type: media_type.clone(), size: bytes.len() as u64, subject: subject.clone() };
        self.put_record(&manifest_key(&name, &digest), &record, Precondition::None).await?;
        if let Some(subject) = &subject {
            self.add_referrer(&name, subject, &digest, &media_type, bytes.len() as u64, &parsed).await?;
        }
        if let Reference::Tag(tag) = &reference {
            self.set_tag(&name, tag, &digest).await?;
        }
        self.ensure_repo(&name).await?;

        let mut reply = Reply::new(StatusCode::CREATED)
            .header(LOCATION, format!("/v2/{name}/manifests/{digest}"))
            .header(DOCKER_CONTENT_DIGEST, digest.to_string());
        if let Some(subject) = subject {
            reply = reply.header(OCI_SUBJECT, subject);
        }
        Ok(reply)
    }

    /// A manifest may only name blobs (image) or manifests (index) this repository holds.
    async fn check_references(&self, name: &RepoName, parsed: &Parsed) -> Result<()> {
        let missing = |d: &Digest, what: &str| {
            oci(ErrorCode::ManifestBlobUnknown, format!("the manifest names {what} {d}, which is not in this repository; push it first"))
                .with_detail(serde_json::json!({ "digest": d.to_string() }))
        };
        match parsed {
            Parsed::Image(m) => {
                let blobs = std::iter::once(m.config()).chain(m.layers().iter().filter(|l| {
                    let foreign = FOREIGN_LAYERS.contains(&l.media_type().to_string().as_str());
                    !foreign && l.urls().as_ref().is_none_or(|u| u.is_empty())
                }));
                let checks = blobs.map(|d| async move {
                    let digest = parse_digest(d.digest().as_ref())?;
                    match self.blob_link(name, &digest).await? {
                        Some(_) => Ok(()),
                        None => Err(missing(&digest, "blob")),
                    }
                });
                try_join_all(checks).await?;
            }
            Parsed::Index(index) => {
                let checks = index.manifests().iter().map(|d| async move {
                    let digest = parse_digest(d.digest().as_ref())?;
                    match self.meta.get(&manifest_key(name, &digest)).await? {
                        Some(_) => Ok(()),
                        None => Err(missing(&digest, "manifest")),
                    }
                });
                try_join_all(checks).await?;
            }
        }
        Ok(())
    }

    /// Points a tag at a digest with a conditional write, so concurrent pushes of one tag
    /// serialize: each write is made against the version it read, or retried.
    async fn set_tag(&self, name: &RepoName, tag: &str, digest: &Digest) -> Result<()> {
        let key = tag_key(name, tag);
        let record = TagRecord { digest: digest.to_string() };
        for _ in 0..8 {
            let cond = match self.meta.get(&key).await? {
                Some(current) => Precondition::Version(current.version),
                None => Precondition::Absent,
            };
            if let PutOutcome::Written { .. } = self.put_record(&key, &record, cond).await? {
                return Ok(());
            }
        }
        Err(oci(ErrorCode::TooManyRequests, format!("tag {tag} is being changed by many pushes at once; retry")))
    }

    pub(crate) async fn delete_manifest(&self, name: &str, reference: &str) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        let reference = Reference::parse(reference)?;
        match &reference {
            Reference::Tag(tag) => {
                let key = tag_key(&name, tag);
                if self.meta.get(&key).await?.is_none() {
                    return Err(manifest_unknown(&reference));
                }
                self.meta.delete(&key).await?;
            }
            Reference::Digest(digest) => {
                let (_, record) = self.resolve(&name, &reference).await?;
                // Tags first, so no tag is left pointing at a deleted manifest.
                let prefix = tag_prefix(&name);
                for key in self.list_all(&prefix).await? {
                    if let Some(tag) = self.get_record::<TagRecord>(&key).await? {
                        if tag.digest == digest.to_string() {
                            self.meta.delete(&key).await?;
                        }
                    }
                }
                if let Some(subject) = &record.subject {
                    self.remove_referrer(&name, subject, digest).await?;
                }
                self.meta.delete(&manifest_key(&name, digest)).await?;
            }
        }
        Ok(Reply::new(StatusCode::ACCEPTED))
    }
}

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
