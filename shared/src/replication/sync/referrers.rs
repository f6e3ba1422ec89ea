//! Referrers follow what a sync stored (docs/replication.md, "Referrers"): signatures, SBOMs and
//! attestations of a manifest are found at the remote by the OCI 1.1 referrers API
//! (`GET /v2/<name>/referrers/<digest>`), or, where it answers 404 (Distribution has no such
//! API), by the referrers tag schema: the tag `sha256-<hex>` naming an index of them (what
//! `oras attach` and cosign write there). Each one not here is fetched and stored as any
//! manifest a sync copies (its blobs first, verified; `accept_manifest`), which makes this
//! registry's own referrers API list it under its subject. As push-mode replication
//! (src/replication/copy.rs), referrers of referrers are followed to [`MAX_DEPTH`].

use std::collections::HashSet;

use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::{next_link, Run};
use crate::error::Result;
use crate::manifests::{parse_manifest, Parsed, OCI_INDEX};
use crate::mirror::upstream::{bad_gateway, resolve_location};
use crate::manifests::VerifiedManifest;
use crate::mirror::{upstream_status, MirrorRule};
use crate::names::{parse_digest, Digest, Reference, RepoName};
use crate::storage::{BlobStore, MetaStore};

/// Referrers of referrers are followed this deep (a signature of an SBOM of an image), as in
/// push mode.
pub(crate) const MAX_DEPTH: u32 = 4;
/// Referrers looked at per tag (all depths): an image with more is synced with these only
/// (logged). Bounds what one remote can make a run fetch.
pub(crate) const MAX_REFERRERS: usize = 256;
/// Pages of one referrers answer read at most.
const MAX_PAGES: usize = 10;

/// Refuses a manifest listed as a referrer of `subject` whose own `subject` is another one:
/// what the remote listed must be what it says it is before anything is stored.
pub(super) fn check_subject(fetched: &VerifiedManifest, subject: &Digest, remote: &MirrorRule, repo: &str) -> Result<()> {
    let named = fetched.parsed.subject().map(|s| s.digest().to_string());
    if named.as_deref() == Some(subject.as_ref()) {
        return Ok(());
    }
    Err(bad_gateway(format!(
        "{}/{repo}: {} is listed as a referrer of {subject} but names {} as its subject; nothing was stored",
        remote.base(),
        fetched.digest,
        named.as_deref().unwrap_or("none")
    )))
}

/// The digests an index lists (a referrers answer, or the tag schema's index).
fn listed(content_type: Option<&str>, bytes: &[u8], what: &str) -> Result<Vec<Digest>> {
    match parse_manifest(content_type, bytes).map_err(|e| bad_gateway(format!("{what}: {}", e.message)))?.1 {
        Parsed::Index(index) => index
            .manifests()
            .iter()
            .map(|d| parse_digest(d.digest().as_ref()).map_err(|e| bad_gateway(format!("{what}: {}", e.message))))
            .collect(),
        Parsed::Image(_) => Err(bad_gateway(format!("{what}: not an index"))),
    }
}

/// The referrers tag schema's tag for `subject`: `sha256:<hex>` -> `sha256-<hex>`.
pub(crate) fn schema_tag(subject: &Digest) -> String {
    subject.to_string().replacen(':', "-", 1)
}

impl<B: BlobStore, M: MetaStore> Run<'_, B, M> {
    /// Stores the remote referrers of `subjects` (manifests stored here, or a tag's root that
    /// was here already) that this repository lacks, then theirs (to MAX_DEPTH). A referrer
    /// here already is not walked again (its referrers were looked at when it came).
    pub(super) async fn referrers(&mut self, local: &RepoName, repo: &str, subjects: Vec<Digest>) -> Result<()> {
        let mut queue: Vec<(Digest, u32)> = subjects.into_iter().map(|d| (d, 0)).collect();
        let mut seen = HashSet::new();
        while let Some((subject, depth)) = queue.pop() {
            for digest in self.remote_referrers(repo, &subject).await? {
                if !seen.insert(digest.clone()) {
                    continue;
                }
                if seen.len() > MAX_REFERRERS {
                    tracing::warn!(rule = %self.rule.name, repository = %repo, subject = %subject,
                                   "sync: more than {MAX_REFERRERS} referrers; the others are left out");
                    return Ok(());
                }
                let reference = Reference::Digest(digest);
                if self.reg.resolve(local, &reference).await.is_ok() {
                    continue;
                }
                let stored = self.manifests(local, repo, reference, None, None, Some(&subject)).await?.unwrap_or_default();
                self.report.referrers += 1;
                if depth + 1 < MAX_DEPTH {
                    queue.extend(stored.into_iter().map(|d| (d, depth + 1)));
                }
            }
        }
        Ok(())
    }

    /// The digests of `subject`'s referrers at the remote: its referrers API, else (404) the
    /// tag schema's index, else none.
    async fn remote_referrers(&mut self, repo: &str, subject: &Digest) -> Result<Vec<Digest>> {
        if self.referrers_api {
            if let Some(found) = self.referrers_api_list(repo, subject).await? {
                return Ok(found);
            }
            self.referrers_api = false;
        }
        let tag = Reference::Tag(schema_tag(subject));
        let Some(response) = self.reg.upstream_manifest(self.client, &self.remote, repo, Method::GET, &tag, self.now).await? else {
            return Ok(Vec::new());
        };
        let index = self.reg.read_upstream_manifest(&tag, &self.remote, repo, response).await?;
        listed(Some(&index.media_type), &index.bytes, &format!("{}/{repo}:{tag}", self.remote.base()))
    }

    /// `GET /v2/<repo>/referrers/<subject>`, every page; None on a 404 (no such API).
    async fn referrers_api_list(&self, repo: &str, subject: &Digest) -> Result<Option<Vec<Digest>>> {
        let what = format!("{}/{repo}: the referrers of {subject}", self.remote.base());
        let mut url = format!("{}/v2/{repo}/referrers/{subject}", self.remote.base());
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(OCI_INDEX));
        let mut out = Vec::new();
        for page in 0..MAX_PAGES {
            let r = self.client.send_to(&self.remote, repo, "pull", Method::GET, url.clone(), headers.clone(), None, self.now).await?;
            match r.status {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND if page == 0 => return Ok(None),
                s => return Err(upstream_status(&self.remote, &format!("the referrers of {repo}@{subject}"), s)),
            }
            let next = next_link(&r.headers).map(|n| resolve_location(&url, n));
            let content_type = crate::header_str(&r.headers, "content-type").map(str::to_owned);
            let body = crate::body::read_limited(r.body, self.reg.config.max_manifest_bytes)
                .await
                .map_err(|e| bad_gateway(format!("{what}: {}", e.message)))?;
            out.extend(listed(content_type.as_deref().or(Some(OCI_INDEX)), &body, &what)?);
            match next {
                Some(n) => url = n,
                None => return Ok(Some(out)),
            }
        }
        Err(bad_gateway(format!("{what} run past {MAX_PAGES} pages")))
    }
}
