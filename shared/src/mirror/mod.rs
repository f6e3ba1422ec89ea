//! Pull-through cache (docs/mirror.md): a namespace whose repositories are served from an
//! upstream registry, fetched on the first pull and kept as ordinary content (tags, the catalog,
//! garbage collection and retention see it as if it had been pushed).
//!
//! Nothing fetched becomes visible before its digest is verified: a manifest's bytes are hashed
//! in memory (they are small and bounded), a blob streams through the same monolithic upload
//! path a push takes, so memory stays flat and a wrong or truncated blob is discarded there.
//! A blob's first whole GET is answered while it is stored (`tee`); anything else the cache
//! fetches is stored, then served.

pub mod config;
mod inflight;
mod tee;
pub mod upstream;
#[cfg(test)]
mod tests;

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::{oci, ErrorCode, RegistryError, Result};
use crate::hash;
use crate::manifests::{parse_manifest, Resolved, VerifiedManifest, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::names::{parse_digest, Digest, Reference, RepoName};
use crate::reply::names::DOCKER_CONTENT_DIGEST;
use crate::routes::{Access, Action, Endpoint};
use crate::storage::{BlobStore, MetaStore, Precondition};
use crate::uploads::Source;
use crate::{header_str, Registry, RequestContext};

pub use config::{MirrorRule, Secret};
pub use upstream::{Upstream, UpstreamClient, UpstreamRequest, UpstreamResponse};
use inflight::{Lead, Outcome, Turn, Wait};
use upstream::{bad_gateway, UpstreamResponse as Response};

/// What a mirror asks the upstream for: every manifest type Berth stores, indexes first, so a
/// multi-platform image is cached whole.
const MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// When a cached tag was last confirmed with the upstream (or the upstream last failed to say).
fn checked_key(name: &RepoName, tag: &str) -> String {
    format!("mirror-checked/{name}@{tag}")
}


#[derive(Serialize, Deserialize)]
struct Checked {
    at: u64,
}

/// The client's answer to an upstream status other than success or 404.
pub(crate) fn upstream_status(rule: &MirrorRule, what: &str, status: StatusCode) -> RegistryError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return oci(ErrorCode::TooManyRequests, format!("upstream registry {} rate-limits pulls of {what}; retry later", rule.base()));
    }
    bad_gateway(format!("{} answered {status} for {what}", rule.base()))
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// The mirror rule for a repository and the repository's name upstream.
    pub(crate) fn mirror_of<'a>(&self, name: &'a str) -> Option<(&MirrorRule, &'a str)> {
        let rule = config::rule_for(&self.policies.config().mirrors, name)?;
        Some((rule, rule.upstream_name(name)?))
    }

    fn upstream_client(&self) -> Result<&UpstreamClient> {
        self.upstream.as_deref().ok_or_else(|| {
            oci(ErrorCode::Unknown, "this repository is a mirror, but this runtime has no upstream HTTP client configured")
        })
    }

    /// Pushes into a mirrored namespace are refused: its content is the upstream's. 405
    /// UNSUPPORTED, as Distribution's proxy mode answers; no credential could make it writable,
    /// so 403 DENIED would point the user the wrong way. Deletes stay allowed (evicting content
    /// from the cache; the next pull fetches it again).
    pub(crate) fn refuse_mirrored_write(&self, endpoint: &Endpoint) -> Result<()> {
        let Access::Repository { name, action: Action::Push } = endpoint.access() else { return Ok(()) };
        let Some((rule, _)) = self.mirror_of(name) else { return Ok(()) };
        Err(oci(
            ErrorCode::Unsupported,
            format!(
                "{name} is in a pull-through cache of {}: it cannot be pushed to; push to the upstream registry, \
                 or to a repository outside the mirrored namespace",
                rule.base()
            ),
        )
        .with_status(StatusCode::METHOD_NOT_ALLOWED))
    }

    /// What a manifest GET/HEAD in a mirrored repository answers with: the cache, the upstream
    /// on a miss, and for a tag older than the TTL the upstream's word (HEAD; GET only when the
    /// digest moved). Cached content is served whenever the upstream cannot answer.
    pub(crate) async fn mirror_resolve(
        &self,
        name: &RepoName,
        reference: &Reference,
        rule: &MirrorRule,
        upstream: &str,
        now: u64,
    ) -> Result<Resolved> {
        let cached = match self.resolve(name, reference).await {
            Ok(found) => Some(found),
            Err(e) if e.code == ErrorCode::ManifestUnknown => None,
            Err(e) => return Err(e),
        };
        let tag = match (reference, cached) {
            (Reference::Digest(_), Some(found)) => return Ok(found),
            (Reference::Tag(tag), Some(found)) => {
                let key = checked_key(name, tag);
                let checked = self.get_record::<Checked>(&key).await?.map(|c| c.at).unwrap_or(0);
                if now.saturating_sub(checked) < rule.tag_ttl_secs {
                    return Ok(found);
                }
                return Ok(self.revalidate(name, tag, rule, upstream, found, now).await);
            }
            (Reference::Tag(tag), None) => Some(tag),
            (Reference::Digest(_), None) => None,
        };
        let response = self.mirror_manifest(rule, upstream, Method::GET, reference, now).await?;
        let Some(response) = response else {
            return Err(oci(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in {upstream} on the upstream registry {}", rule.base()),
            ));
        };
        let found = self.store_upstream_manifest(name, reference, rule, upstream, response, now).await?;
        if let Some(tag) = tag {
            self.mark_checked(name, tag, now).await;
        }
        Ok(found)
    }

    /// A cached tag past its TTL: keep it if the upstream names the same digest (HEAD: no
    /// download, and Docker Hub does not count it against the pull limit), follow the upstream
    /// if it moved, and keep serving it when the upstream fails, for another TTL.
    async fn revalidate(&self, name: &RepoName, tag: &str, rule: &MirrorRule, upstream: &str, found: Resolved, now: u64) -> Resolved {
        let reference = Reference::Tag(tag.to_owned());
        let moved = match self.mirror_manifest(rule, upstream, Method::HEAD, &reference, now).await {
            Ok(Some(head)) => header_str(&head.headers, DOCKER_CONTENT_DIGEST.as_str()) != Some(found.digest.as_ref()),
            Ok(None) => {
                tracing::warn!(repository = %name, tag, "the upstream no longer has this tag; serving the cached one");
                false
            }
            Err(e) => {
                tracing::warn!(repository = %name, tag, error = %e.message, "upstream unavailable; serving the cached tag");
                false
            }
        };
        let mut result = found;
        if moved {
            let fetched = match self.mirror_manifest(rule, upstream, Method::GET, &reference, now).await {
                Ok(Some(response)) => self.store_upstream_manifest(name, &reference, rule, upstream, response, now).await.map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match fetched {
                Ok(Some(new)) => result = new,
                Ok(None) => {}
                Err(e) => tracing::warn!(repository = %name, tag, error = %e.message, "cannot fetch the moved tag; serving the cached one"),
            }
        }
        self.mark_checked(name, tag, now).await;
        result
    }

    /// A failure to note the time only means the upstream is asked again sooner.
    async fn mark_checked(&self, name: &RepoName, tag: &str, now: u64) {
        let _ = self.put_record(&checked_key(name, tag), &Checked { at: now }, Precondition::None).await;
    }

    /// [`Registry::upstream_manifest`] through this registry's own client.
    async fn mirror_manifest(&self, rule: &MirrorRule, upstream: &str, method: Method, reference: &Reference, now: u64) -> Result<Option<Response>> {
        self.upstream_manifest(self.upstream_client()?, rule, upstream, method, reference, now).await
    }

    /// The upstream's answer for a manifest: Some on 200, None on 404, Err otherwise (also
    /// pull-mode replication's, through its own `client`).
    pub(crate) async fn upstream_manifest(
        &self,
        client: &UpstreamClient,
        rule: &MirrorRule,
        upstream: &str,
        method: Method,
        reference: &Reference,
        now: u64,
    ) -> Result<Option<Response>> {
        let path = format!("manifests/{reference}");
        let response = client.send(rule, upstream, method, &path, &MANIFEST_TYPES, now).await?;
        match response.status {
            StatusCode::OK => Ok(Some(response)),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(upstream_status(rule, &format!("{upstream}:{reference}"), status)),
        }
    }

    /// Verifies an upstream manifest (its bytes hash to the digest asked for, or to the one
    /// the upstream announced) and stores it like a push, tagged when asked by tag. Its blobs
    /// are fetched when they are pulled, not now.
    async fn store_upstream_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        rule: &MirrorRule,
        upstream: &str,
        response: Response,
        now: u64,
    ) -> Result<Resolved> {
        let manifest = self.read_upstream_manifest(reference, rule, upstream, response).await?;
        let tags: Vec<String> = match reference {
            Reference::Tag(tag) => vec![tag.clone()],
            Reference::Digest(_) => Vec::new(),
        };
        // Cached content counts against quotas as pushed content does (docs/quotas.md).
        self.charge_quotas(name, &manifest.digest, manifest.bytes.len() as u64, now).await?;
        self.store_manifest(name, &manifest, &tags, now).await?;
        let VerifiedManifest { digest, media_type, bytes, .. } = manifest;
        Ok(Resolved { digest, media_type, size: bytes.len() as u64, inline: Some(bytes) })
    }

    /// An upstream manifest's bytes, verified: they hash to the digest asked for, or to the one
    /// the upstream announced (also pull-mode replication's). Nothing is stored.
    pub(crate) async fn read_upstream_manifest(
        &self,
        reference: &Reference,
        rule: &MirrorRule,
        upstream: &str,
        response: Response,
    ) -> Result<VerifiedManifest> {
        let what = format!("{}/{upstream}:{reference}", rule.base());
        let content_type = header_str(&response.headers, "content-type").map(str::to_owned);
        let announced = header_str(&response.headers, DOCKER_CONTENT_DIGEST.as_str()).map(str::to_owned);
        let bytes = crate::body::read_limited(response.body, self.config.max_manifest_bytes)
            .await
            .map_err(|e| bad_gateway(format!("manifest {what}: {}; nothing was stored", e.message)))?;
        let expected = match (reference, announced) {
            (Reference::Digest(d), _) => Some(d.clone()),
            (Reference::Tag(_), Some(announced)) => Some(parse_digest(&announced).map_err(|_| {
                bad_gateway(format!("manifest {what}: the upstream announced the digest {announced:?}; nothing was stored"))
            })?),
            (Reference::Tag(_), None) => None,
        };
        let digest = match expected {
            Some(d) if hash::matches(&d, &bytes) => d,
            Some(d) => {
                return Err(bad_gateway(format!(
                    "manifest {what}: the upstream sent bytes with digest {}, not {d}; nothing was stored",
                    hash::sha256_of(&bytes)
                )))
            }
            None => parse_digest(&hash::sha256_of(&bytes))?,
        };
        let (media_type, parsed) = parse_manifest(content_type.as_deref(), &bytes)
            .map_err(|e| bad_gateway(format!("manifest {what}: {}; nothing was stored", e.message)))?;
        Ok(VerifiedManifest { digest, media_type, bytes, parsed })
    }

    /// A blob GET/HEAD missed in a mirrored repository: fetch it from the upstream through the
    /// monolithic upload path (streamed, verified, linked as if pushed). With `answer_while_storing`
    /// (a whole-blob GET the store would serve itself, not redirect) and a length the upstream
    /// announced, the client gets the bytes as they arrive (`tee`); otherwise the blob is
    /// stored first. Concurrent misses of one blob in this process fetch it once.
    pub(crate) async fn mirror_blob(&self, name: &RepoName, digest: &Digest, answer_while_storing: bool, ctx: &RequestContext) -> Result<Miss> {
        let Some((rule, upstream)) = self.mirror_of(name.as_str()) else { return Ok(Miss::Absent) };
        let client = self.upstream_client()?;
        // Keyed by what is fetched: a waiter finds the blob linked under its own name.
        let key = format!("{}/{upstream}@{digest}", rule.base());
        let lead = loop {
            match client.inflight.turn(&key) {
                Turn::Lead(lead) => break lead,
                Turn::Follow(wait) => match follow(client, wait).await {
                    Some(Outcome::Done) => return Ok(self.blob_link(name, digest).await?.map_or(Miss::Absent, Miss::Stored)),
                    Some(Outcome::Failed(e)) => return Err(e),
                    Some(Outcome::Abandoned) => continue,
                    None => {
                        tracing::info!(repository = %name, %digest, "the fetch this pull waited for is slow; fetching alone");
                        break client.inflight.alone();
                    }
                },
            }
        };
        let finish = |lead: Lead, result: &Result<Option<u64>>| {
            lead.finish(match result {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Failed(e.clone()),
            })
        };
        let mut response = match self.open_blob(client, rule, upstream, digest, ctx.now).await {
            Ok(Some(response)) => response,
            result => {
                let result = result.map(|_| None);
                finish(lead, &result);
                return result.map(|_| Miss::Absent);
            }
        };
        // Counted as read, so waiters can judge this fetch's pace.
        let progress = lead.progress();
        response.body = Box::pin(futures_util::TryStreamExt::inspect_ok(response.body, move |chunk| progress.add(chunk.len())));
        let what = format!("{}/{upstream}@{digest}", rule.base());
        let announced = header_str(&response.headers, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse::<u64>().ok());
        if let (true, Some(size)) = (answer_while_storing, announced) {
            // Refused now, while the answer can still be a status; the charge comes when it is linked.
            if let Err(e) = self.check_quotas(name, digest, size).await {
                finish(lead, &Err(e.clone()));
                return Err(e);
            }
            let (registry, name, digest, ctx) = (self.clone(), name.clone(), digest.clone(), *ctx);
            let headers = response.headers;
            let body = tee::tee(response.body, move |piped| {
                Box::pin(async move {
                    let result = registry.store_fetched(&name, &digest, &headers, piped, &what, &ctx).await;
                    finish(lead, &result);
                    result.map(|_| ())
                })
            });
            return Ok(Miss::Streaming { size, body });
        }
        let result = self.store_fetched(name, digest, &response.headers, response.body, &what, ctx).await;
        finish(lead, &result);
        result.map(|size| size.map_or(Miss::Absent, Miss::Stored))
    }

    /// Fetches a blob from the upstream into `name` (pull-mode replication's): streamed through
    /// the monolithic upload path, verified, linked as if pushed; None on a 404.
    pub(crate) async fn fetch_blob(
        &self,
        client: &UpstreamClient,
        name: &RepoName,
        digest: &Digest,
        rule: &MirrorRule,
        upstream: &str,
        ctx: &RequestContext,
    ) -> Result<Option<u64>> {
        let Some(response) = self.open_blob(client, rule, upstream, digest, ctx.now).await? else { return Ok(None) };
        let what = format!("{}/{upstream}@{digest}", rule.base());
        self.store_fetched(name, digest, &response.headers, response.body, &what, ctx).await
    }

    /// The upstream's answer for a blob: Some on 200, None on a 404, an error otherwise.
    async fn open_blob(&self, client: &UpstreamClient, rule: &MirrorRule, upstream: &str, digest: &Digest, now: u64) -> Result<Option<Response>> {
        let path = format!("blobs/{digest}");
        let response = client.send(rule, upstream, Method::GET, &path, &[], now).await?;
        match response.status {
            StatusCode::OK => Ok(Some(response)),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(upstream_status(rule, &format!("{upstream}@{digest}"), status)),
        }
    }

    /// Stores an upstream blob body (`what` names it in errors) through the monolithic upload
    /// path and links it; returns its size.
    async fn store_fetched(
        &self,
        name: &RepoName,
        digest: &Digest,
        upstream_headers: &HeaderMap,
        body: crate::storage::ByteStream,
        what: &str,
        ctx: &RequestContext,
    ) -> Result<Option<u64>> {
        // The upload path checks the length against Content-Length: a short body is refused.
        let mut headers = HeaderMap::new();
        if let Some(len) = upstream_headers.get(CONTENT_LENGTH) {
            headers.insert(CONTENT_LENGTH, len.clone());
        }
        match self.monolithic(name, digest.clone(), &headers, body, Source::Fetched, ctx).await {
            Ok(_) => {}
            // What a pushing client would be blamed for (its bytes) is the upstream's fault here;
            // anything else (a quota, storage) is answered as it is.
            Err(e) if matches!(e.code, ErrorCode::DigestInvalid | ErrorCode::SizeInvalid | ErrorCode::BlobUploadInvalid) => {
                return Err(bad_gateway(format!("blob {what}: {}; nothing was stored", e.message)))
            }
            Err(e) => return Err(e),
        }
        self.blob_link(name, digest).await
    }
}

/// Waits for another request's fetch of the same blob: its outcome, or None once it has read
/// less than [`inflight::MIN_PROGRESS`] bytes in [`inflight::STALL_SECS`] (its client reads
/// slowly, or the upstream crawls): then this pull fetches alone rather than at that pace.
async fn follow(client: &UpstreamClient, mut wait: Wait) -> Option<Outcome> {
    let mut seen = wait.read();
    loop {
        match futures_util::future::select(&mut wait, std::pin::pin!(client.sleep(inflight::STALL_SECS))).await {
            futures_util::future::Either::Left((outcome, _)) => return Some(outcome),
            futures_util::future::Either::Right(((), _)) => {
                let read = wait.read();
                if read.saturating_sub(seen) < inflight::MIN_PROGRESS {
                    return None;
                }
                seen = read;
            }
        }
    }
}

/// What a blob miss in a mirrored repository came to.
pub(crate) enum Miss {
    /// Not mirrored, or the upstream has no such blob.
    Absent,
    /// Fetched, verified and linked: served from the store like any blob.
    Stored(u64),
    /// Being fetched and stored while this body answers the client ([`tee`]).
    Streaming { size: u64, body: crate::storage::ByteStream },
}
