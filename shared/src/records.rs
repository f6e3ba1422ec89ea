//! How the registry's metadata is laid out in the [`MetaStore`]. `@` cannot appear in a
//! repository name or a tag, so `prefix/<name>@` lists exactly one repository's entries even when
//! another repository's name extends this one (`a` and `a/b`).

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::Result;
use crate::names::{Digest, RepoName};
use crate::storage::{BlobStore, MetaStore, Precondition, PutOutcome};
use crate::Registry;

pub(crate) const REPOS: &str = "repos/";

pub(crate) fn repo_key(name: &RepoName) -> String {
    format!("{REPOS}{name}")
}
pub(crate) fn blob_key(name: &RepoName, digest: &Digest) -> String {
    format!("blobs/{name}@{digest}")
}
pub(crate) fn manifest_key(name: &RepoName, digest: &Digest) -> String {
    format!("manifests/{name}@{digest}")
}
pub(crate) fn tag_prefix(name: &RepoName) -> String {
    format!("tags/{name}@")
}
pub(crate) fn tag_key(name: &RepoName, tag: &str) -> String {
    format!("{}{tag}", tag_prefix(name))
}
pub(crate) fn referrer_prefix(name: &RepoName, subject: &str) -> String {
    format!("referrers/{name}@{subject}@")
}
pub(crate) fn referrer_key(name: &RepoName, subject: &str, digest: &Digest) -> String {
    format!("{}{digest}", referrer_prefix(name, subject))
}
pub(crate) const UPLOADS: &str = "uploads/";
pub(crate) const BLOBS: &str = "blobs/";
pub(crate) const MANIFESTS: &str = "manifests/";
pub(crate) fn blob_prefix(name: &RepoName) -> String {
    format!("{BLOBS}{name}@")
}
pub(crate) fn manifest_prefix(name: &RepoName) -> String {
    format!("{MANIFESTS}{name}@")
}
/// The digest at the end of a `blobs/<name>@<digest>` or `manifests/<name>@<digest>` key.
pub(crate) fn digest_of_key(key: &str) -> Option<&str> {
    key.rsplit_once('@').map(|(_, d)| d)
}
pub(crate) fn upload_key(id: &str) -> String {
    format!("{UPLOADS}{id}")
}

/// A blob linked into a repository.
///
/// The `*_at` times (Unix seconds, from `RequestContext::now`) are what lifecycle rules read
/// (retention "pushed within N days", GC grace periods). Records written before they existed
/// read as 0: "long ago", which those rules treat as old.
#[derive(Serialize, Deserialize)]
pub(crate) struct BlobLink {
    pub size: u64,
    /// When the blob was last linked into the repository (pushed or mounted).
    #[serde(default)]
    pub linked_at: u64,
    /// Garbage collection found no manifest of the repository referencing it at this time (GC's
    /// clock). Still present; a manifest PUT that references it revives it (docs/gc.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condemned_at: Option<u64>,
    /// Garbage collection removed it: absent to every reader, never revived, overwritten by the
    /// next upload or mount of the digest into the repository.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead: bool,
}

impl BlobLink {
    pub(crate) fn live(size: u64, linked_at: u64) -> Self {
        BlobLink { size, linked_at, condemned_at: None, dead: false }
    }
}

/// A manifest stored in a repository; its bytes live in the blob store under its digest.
///
/// A deleted manifest keeps its record as a tombstone (`deleted`), and every write of the record
/// raises `generation`: the record is how a push and a delete of one manifest find out about each
/// other (see `manifests.rs`), and on stores whose version is a hash of the value (R2 and S3
/// etags) only a value that never repeats makes "unchanged since I read it" mean what it says.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// When the manifest was last pushed (a tombstone keeps the time of the last push).
    #[serde(default)]
    pub pushed_at: u64,
    /// When it was last pulled (GET), to within [`PULL_RECORD_SECS`]: retention's "pulled
    /// within". Kept across pushes. None: not pulled since pull times were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_at: Option<u64>,
    /// Garbage collection, on a retention policy's word, will delete it once this time (GC's
    /// clock) is a settle window old; still live until then, and an index PUT that lists it
    /// revives it (docs/gc.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condemned_at: Option<u64>,
}

/// A pull time is written at most once per manifest in this many seconds: pulls stay reads,
/// bar one write an hour per pulled manifest.
pub(crate) const PULL_RECORD_SECS: u64 = 3600;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A tag: the manifest it points at, and what a GET or HEAD by tag answers with, so that those
/// read this one record and nothing else (issue 19: one storage read per pull by tag).
///
/// Copying the manifest's media type, size and (when small) bytes here is safe because a
/// manifest is immutable per digest: its bytes are its digest, so no later write can make a copy
/// stale. The tag itself stays the one strongly consistent record a move or delete rewrites.
/// The media type is the one the tag's push stored (a later push of the same bytes by digest
/// with another Content-Type changes the manifest record, not the tags pushed before it).
///
/// Records written before these fields existed have only `digest` (and perhaps `tagged_at`);
/// readers then fall back to the manifest record and the blob store, as before. Older code
/// reading a new record ignores the fields it does not know, so a rollback keeps working.
#[derive(Serialize, Deserialize, Default)]
pub(crate) struct TagRecord {
    pub digest: String,
    /// When the tag was last pointed at a manifest (pushed or moved).
    #[serde(default)]
    pub tagged_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The manifest's exact bytes, when at most [`INLINE_MANIFEST_BYTES`] (manifests are JSON,
    /// so UTF-8 text; one that is not valid UTF-8 is not inlined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

/// Manifests up to this size ride in their tags' records. Image manifests are 0.5–4 KiB and
/// multi-platform indexes rarely pass 16 KiB, so nearly every pull by tag is one read; the bound
/// keeps a tag record a small object (a delete by digest reads every tag record of the
/// repository, and some metadata stores cap a value: DynamoDB at 400 KB). Bigger manifests keep
/// the media type and size in the tag (HEAD is still one read) and are read from the blob store.
pub(crate) const INLINE_MANIFEST_BYTES: usize = 64 * 1024;

/// Just the digest of a tag record, for scans that need no more (the inline bytes are skipped
/// unparsed instead of being unescaped into a string).
#[derive(Deserialize)]
pub(crate) struct TagDigest {
    pub digest: String,
}

impl TagRecord {
    /// The record of a tag pointing at a manifest with these bytes, pushed at `now`.
    pub(crate) fn new(digest: &Digest, media_type: &str, bytes: &[u8], now: u64) -> Self {
        let manifest = (bytes.len() <= INLINE_MANIFEST_BYTES)
            .then(|| std::str::from_utf8(bytes).ok().map(str::to_owned))
            .flatten();
        TagRecord {
            digest: digest.to_string(),
            tagged_at: now,
            media_type: Some(media_type.to_owned()),
            size: Some(bytes.len() as u64),
            manifest,
        }
    }
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    pub(crate) async fn get_record<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        Ok(self.get_versioned(key).await?.map(|(record, _)| record))
    }

    pub(crate) async fn get_versioned<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, String)>> {
        let Some(found) = self.meta.get(key).await? else {
            return Ok(None);
        };
        Ok(Some((Self::decode(key, &found.value)?, found.version)))
    }

    pub(crate) fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T> {
        serde_json::from_slice(value)
            .map_err(|e| crate::StorageError::new(format!("corrupt metadata record {key}: {e}")).into())
    }

    pub(crate) fn encode<T: Serialize>(key: &str, record: &T) -> Result<Bytes> {
        serde_json::to_vec(record)
            .map(Bytes::from)
            .map_err(|e| crate::StorageError::new(format!("cannot encode {key}: {e}")).into())
    }

    pub(crate) async fn put_record<T: Serialize>(
        &self,
        key: &str,
        record: &T,
        cond: Precondition,
    ) -> Result<PutOutcome> {
        let value = Self::encode(key, record)?;
        Ok(self.meta.put(key, value, cond).await?)
    }

    /// Makes a verified blob part of a repository (and the repository part of the catalog).
    pub(crate) async fn link_blob(&self, name: &RepoName, digest: &Digest, size: u64, now: u64) -> Result<()> {
        // Quotas first: a refused blob is never linked (docs/quotas.md). A plain put: it turns a
        // condemned or dead link (docs/gc.md) live again too.
        self.charge_quotas(name, digest, size, now).await?;
        self.put_record(&blob_key(name, digest), &BlobLink::live(size, now), Precondition::None).await?;
        self.ensure_repo(name).await
    }

    pub(crate) async fn blob_link(&self, name: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let key = blob_key(name, digest);
        let Some(found) = self.meta.get_small(&key).await? else { return Ok(None) };
        let link: BlobLink = Self::decode(&key, &found.value)?;
        // A dead link (garbage collection removed it) is no link.
        Ok(Some(link).filter(|l| !l.dead).map(|l| l.size))
    }

    pub(crate) async fn ensure_repo(&self, name: &RepoName) -> Result<()> {
        let key = repo_key(name);
        if self.meta.get(&key).await?.is_none() {
            // A conflict means another request created it first: fine either way.
            self.meta.put(&key, Bytes::from_static(b"{}"), Precondition::Absent).await?;
        }
        Ok(())
    }

    pub(crate) async fn repo_exists(&self, name: &RepoName) -> Result<bool> {
        Ok(self.meta.get(&repo_key(name)).await?.is_some())
    }

    /// Every key under `prefix`, page by page.
    pub(crate) async fn list_all(&self, prefix: &str) -> Result<Vec<String>> {
        const PAGE: usize = 1000;
        let mut keys = Vec::new();
        loop {
            let page = self.meta.list(prefix, keys.last().map(String::as_str), PAGE).await?;
            let done = page.len() < PAGE;
            keys.extend(page);
            if done {
                return Ok(keys);
            }
        }
    }
}
