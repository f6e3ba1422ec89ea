//! The copy step: one manifest (by tag or digest) from this registry to a rule's destination,
//! through the same registry client as the pull-through cache ([`UpstreamClient`]: its token
//! and Basic auth, its redirects), so every runtime that can reach an upstream can replicate.
//!
//! Order is what a registry checks on push: an index's children before it, an image's blobs
//! before it, referrers after their subject. The exact bytes are pushed, so the digest is the
//! same at the destination. Blobs the destination has (HEAD) are skipped; a blob this rule
//! already put in another destination repository is mounted from there; others are uploaded
//! in one POST + PUT, streamed from the blob store (never held whole).
//! No recursion: a work stack, so the future stays `Send` and its size bounded.

use std::collections::HashSet;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::config::ReplicationRule;
use crate::error::Result;
use crate::manifests::{parse_manifest, Parsed, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::mirror::upstream::{bad_gateway, resolve_location};
use crate::mirror::{MirrorRule, UpstreamClient, UpstreamResponse};
use crate::names::{parse_digest, Reference, RepoName};
use crate::records::referrer_prefix;
use crate::storage::{BlobStore, MetaStore, Precondition};
use crate::Registry;

/// Under this: where each rule last put each blob (`<rule>/<digest>` -> destination repo),
/// so a later copy can mount it instead of uploading it again.
pub(crate) const BLOB_HOMES: &str = "replication/blobs/";
/// Referrers of referrers are followed this deep (a signature of an SBOM of an image).
const MAX_DEPTH: u32 = 4;
/// An error body from the destination is quoted up to this many bytes.
const MAX_ERROR_BODY: usize = 1024;

/// What one copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyReport {
    /// Manifests put (indexes, images, referrers, the tag).
    pub manifests: usize,
    /// Manifests the destination had already (by digest), with all they name.
    pub manifests_present: usize,
    pub blobs_uploaded: usize,
    pub blobs_mounted: usize,
    pub blobs_present: usize,
    pub bytes_uploaded: u64,
    /// The digest of the manifest copied (a tag's, as resolved when the copy started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

enum Step {
    /// Look at a manifest: its blobs now, then its children, then put it, then its referrers.
    Visit { digest: String, tag: Option<String>, depth: u32 },
    Put { digest: String, tag: Option<String>, media_type: String, bytes: Bytes },
    Referrers { digest: String, depth: u32 },
}

struct Copy<'a, B, M> {
    reg: &'a Registry<B, M>,
    client: &'a UpstreamClient,
    rule: &'a ReplicationRule,
    remote: MirrorRule,
    src: RepoName,
    dest: String,
    now: u64,
    seen: HashSet<String>,
    report: CopyReport,
}

const ACCEPT: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// Copies `repo:reference` (a tag or a digest) to `rule`'s destination.
    pub async fn copy_to(
        &self,
        client: &UpstreamClient,
        rule: &ReplicationRule,
        repo: &str,
        reference: &str,
        now: u64,
    ) -> Result<CopyReport> {
        let src = RepoName::parse(repo)?;
        let (root, digest) = match Reference::parse(reference)? {
            Reference::Tag(tag) => {
                let digest = self.resolve(&src, &Reference::Tag(tag.clone())).await?.digest.to_string();
                (Step::Visit { digest: digest.clone(), tag: Some(tag), depth: 0 }, digest)
            }
            Reference::Digest(d) => (Step::Visit { digest: d.to_string(), tag: None, depth: 0 }, d.to_string()),
        };
        let mut copy = Copy {
            reg: self,
            client,
            rule,
            remote: rule.remote(),
            dest: rule.destination_name(repo),
            src,
            now,
            seen: HashSet::new(),
            report: CopyReport { digest: Some(digest), ..CopyReport::default() },
        };
        let mut stack = vec![root];
        while let Some(step) = stack.pop() {
            match step {
                Step::Visit { digest, tag, depth } => copy.visit(digest, tag, depth, &mut stack).await?,
                Step::Put { digest, tag, media_type, bytes } => copy.put_manifest(&digest, tag.as_deref(), &media_type, bytes).await?,
                Step::Referrers { digest, depth } => {
                    if depth < MAX_DEPTH {
                        let prefix = referrer_prefix(&copy.src, &digest);
                        for key in self.list_all(&prefix).await? {
                            let referrer = key[prefix.len()..].to_owned();
                            stack.push(Step::Visit { digest: referrer, tag: None, depth: depth + 1 });
                        }
                    }
                }
            }
        }
        Ok(copy.report)
    }

    /// Deletes `repo:reference` at the destination (a manifest deleted here, when the rule
    /// replicates deletes). Already gone there is done.
    pub async fn delete_at(&self, client: &UpstreamClient, rule: &ReplicationRule, repo: &str, reference: &str, now: u64) -> Result<()> {
        let dest = rule.destination_name(repo);
        let remote = rule.remote();
        let url = format!("{}/v2/{dest}/manifests/{reference}", remote.base());
        let r = client.send_to(&remote, &dest, "pull,push,delete", Method::DELETE, url, HeaderMap::new(), None, now).await?;
        match r.status {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            s => Err(failure(&dest, "DELETE manifest", s, r).await),
        }
    }
}

/// The destination's refusal as an error, with the start of its body (OCI errors say why).
async fn failure(dest: &str, what: &str, status: StatusCode, r: UpstreamResponse) -> crate::RegistryError {
    let body = crate::body::read_limited(r.body, MAX_ERROR_BODY).await.unwrap_or_default();
    bad_gateway(format!("destination {dest}: {what} answered {status}: {}", String::from_utf8_lossy(&body).trim()))
}

fn header(name: http::HeaderName, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
    h
}

impl<B: BlobStore, M: MetaStore> Copy<'_, B, M> {
    async fn call(&self, method: Method, url: String, headers: HeaderMap, body: Option<crate::ByteStream>) -> Result<UpstreamResponse> {
        self.client.send_to(&self.remote, &self.dest, "pull,push", method, url, headers, body, self.now).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.remote.base(), self.dest)
    }

    async fn visit(&mut self, digest: String, tag: Option<String>, depth: u32, stack: &mut Vec<Step>) -> Result<()> {
        if tag.is_none() && !self.seen.insert(digest.clone()) {
            return Ok(());
        }
        stack.push(Step::Referrers { digest: digest.clone(), depth });
        if tag.is_none() {
            // Present by digest: a registry holds what a manifest names (it checks on push).
            let mut accept = HeaderMap::new();
            for a in ACCEPT {
                accept.append(http::header::ACCEPT, HeaderValue::from_static(a));
            }
            let r = self.call(Method::HEAD, self.url(&format!("manifests/{digest}")), accept, None).await?;
            if r.status == StatusCode::OK {
                self.report.manifests_present += 1;
                return Ok(());
            }
        }
        let d = parse_digest(&digest)?;
        let resolved = self.reg.resolve(&self.src, &Reference::Digest(d.clone())).await?;
        let bytes = match resolved.inline {
            Some(b) => b,
            None => {
                let stream = self.reg.blobs.read_manifest(&d).await?.ok_or_else(|| {
                    crate::error::oci(crate::ErrorCode::ManifestUnknown, format!("manifest {d} has no content here"))
                })?;
                crate::body::read_limited(stream, self.reg.config.max_manifest_bytes).await?
            }
        };
        let (media_type, parsed) = parse_manifest(Some(&resolved.media_type), &bytes)?;
        stack.push(Step::Put { digest: digest.clone(), tag, media_type, bytes });
        match parsed {
            Parsed::Image(m) => {
                for b in std::iter::once(m.config()).chain(m.layers().iter()) {
                    let mt = b.media_type().to_string();
                    let external = b.urls().as_ref().is_some_and(|u| !u.is_empty())
                        || mt.contains("foreign")
                        || mt.contains("nondistributable");
                    if !external {
                        self.blob(b.digest().to_string(), b.size()).await?;
                    }
                }
            }
            Parsed::Index(index) => {
                for child in index.manifests().iter().rev() {
                    stack.push(Step::Visit { digest: child.digest().to_string(), tag: None, depth });
                }
            }
        }
        Ok(())
    }

    async fn put_manifest(&mut self, digest: &str, tag: Option<&str>, media_type: &str, bytes: Bytes) -> Result<()> {
        let mut headers = header(CONTENT_TYPE, media_type);
        headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        let body: crate::ByteStream = Box::pin(futures_util::stream::iter([Ok(bytes)]));
        let reference = tag.unwrap_or(digest);
        let r = self.call(Method::PUT, self.url(&format!("manifests/{reference}")), headers, Some(body)).await?;
        if !r.status.is_success() {
            return Err(failure(&self.dest, &format!("PUT manifest {reference}"), r.status, r).await);
        }
        if let Some(theirs) = crate::header_str(&r.headers, "docker-content-digest").filter(|t| *t != digest) {
            return Err(bad_gateway(format!("destination {}: stored {reference} as {theirs}, not {digest}", self.dest)));
        }
        self.report.manifests += 1;
        Ok(())
    }

    async fn blob(&mut self, digest: String, size: u64) -> Result<()> {
        if !self.seen.insert(digest.clone()) {
            return Ok(());
        }
        let r = self.call(Method::HEAD, self.url(&format!("blobs/{digest}")), HeaderMap::new(), None).await?;
        if r.status == StatusCode::OK {
            self.report.blobs_present += 1;
            return self.note_home(&digest).await;
        }
        let home_key = format!("{BLOB_HOMES}{}/{digest}", self.rule.name);
        let home: Option<String> = self.reg.get_record(&home_key).await?.filter(|h: &String| *h != self.dest);
        let start = match &home {
            Some(from) => {
                let q = form_urlencoded::Serializer::new(String::new()).append_pair("mount", &digest).append_pair("from", from).finish();
                self.url(&format!("blobs/uploads/?{q}"))
            }
            None => self.url("blobs/uploads/"),
        };
        let post_url = start.clone();
        let r = self.call(Method::POST, start, header(CONTENT_LENGTH, "0"), None).await?;
        if r.status == StatusCode::CREATED && home.is_some() {
            self.report.blobs_mounted += 1;
            return self.note_home(&digest).await;
        }
        if r.status != StatusCode::ACCEPTED {
            return Err(failure(&self.dest, "POST blob upload", r.status, r).await);
        }
        let Some(location) = crate::header_str(&r.headers, LOCATION.as_str()) else {
            return Err(bad_gateway(format!("destination {}: an upload started without a Location", self.dest)));
        };
        let mut url = resolve_location(&post_url, location);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&form_urlencoded::Serializer::new(String::new()).append_pair("digest", &digest).finish());
        let d = parse_digest(&digest)?;
        let content = self.reg.blobs.read(&d, None).await?.ok_or_else(|| {
            crate::error::oci(crate::ErrorCode::BlobUnknown, format!("blob {digest} is not in this registry"))
        })?;
        let mut headers = header(CONTENT_TYPE, "application/octet-stream");
        headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        let r = self.call(Method::PUT, url, headers, Some(content)).await?;
        if r.status != StatusCode::CREATED {
            return Err(failure(&self.dest, &format!("PUT blob {digest}"), r.status, r).await);
        }
        self.report.blobs_uploaded += 1;
        self.report.bytes_uploaded += size;
        self.note_home(&digest).await
    }

    /// Remembers that the destination repository holds `digest`, for mounts by later copies.
    async fn note_home(&self, digest: &str) -> Result<()> {
        let key = format!("{BLOB_HOMES}{}/{digest}", self.rule.name);
        self.reg.put_record(&key, &self.dest, Precondition::None).await?;
        Ok(())
    }
}
