//! What request paths do so that garbage collection running at the same time cannot break what
//! they answer 201 for (docs/gc.md, "Record states"). Two rules, both cheap:
//!
//! - a manifest PUT that references a *condemned* blob link revives it with a conditional put
//!   (no extra call for a live link: the PUT reads its links anyway);
//! - a request that writes content and is about to reference it (upload completion, small blob,
//!   manifest bytes) reads the content's mark once and acts on it.

use serde::{Deserialize, Serialize};

use crate::error::{oci, ErrorCode, RegistryError, Result};
use crate::names::{Digest, RepoName};
use crate::records::{blob_key, manifest_key, BlobLink, ManifestRecord};
use crate::storage::{BlobStore, MetaStore, Precondition, PutOutcome};
use crate::Registry;

/// Conditional writes lost to other writers before a request gives up with 429.
const ATTEMPTS: usize = 8;

pub(crate) const MARKS: &str = "gc/content/";

pub(crate) fn mark_key(digest: &str) -> String {
    format!("{MARKS}{digest}")
}

/// GC's record about one piece of content no link or manifest referenced (`gc/content/<digest>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum Mark {
    /// A full scan found no reference at `at` (GC's clock).
    Condemned { at: u64, size: u64 },
    /// A request referenced it after it was condemned; GC clears the mark when it sees the
    /// reference.
    Revived,
    /// GC decided to delete it (no revive can follow); the content is being deleted.
    Doomed { size: u64 },
    /// GC deleted the content at `at`; the mark stays for the settle window so that a request
    /// that wrote the content just before the delete learns it (see [`Registry::content_written`]).
    Gone { at: u64 },
}

/// What a request learns from the mark of content it has just written.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// Safe to reference: GC will see the reference before it could delete the content.
    Kept,
    /// GC deleted the content after this request wrote it: write it again (then it is kept), or
    /// fail.
    Lost,
}

pub(crate) fn being_collected(digest: &Digest) -> RegistryError {
    oci(
        ErrorCode::TooManyRequests,
        format!("{digest} is being garbage-collected at this moment; push it again in a few seconds"),
    )
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// A blob link a manifest may reference: present (live, or condemned and now revived).
    /// False when absent or dead. `now` is the PUT's time, the revived link's `linked_at`.
    pub(crate) async fn use_link(&self, name: &RepoName, digest: &Digest, now: u64) -> Result<bool> {
        let key = blob_key(name, digest);
        for _ in 0..ATTEMPTS {
            let Some((link, version)) = self.get_versioned::<BlobLink>(&key).await? else {
                return Ok(false);
            };
            if link.dead {
                return Ok(false);
            }
            if link.condemned_at.is_none() {
                return Ok(true);
            }
            // Exactly one of this put and GC's put of `dead` (same version) succeeds.
            let revived = BlobLink::live(link.size, now);
            if let PutOutcome::Written { .. } = self.put_record(&key, &revived, Precondition::Version(version)).await? {
                return Ok(true);
            }
        }
        Err(being_collected(digest))
    }

    /// A manifest an index may list: live (not a tombstone), and revived first if a policy
    /// condemned it. Exactly one of the revive and GC's tombstone (both conditional on the
    /// version read) succeeds.
    pub(crate) async fn use_manifest(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        let key = manifest_key(name, digest);
        for _ in 0..ATTEMPTS {
            let Some((record, version)) = self.get_versioned::<ManifestRecord>(&key).await? else {
                return Ok(false);
            };
            if record.deleted {
                return Ok(false);
            }
            if record.condemned_at.is_none() {
                return Ok(true);
            }
            let revived = ManifestRecord { condemned_at: None, generation: record.generation + 1, ..record };
            if let PutOutcome::Written { .. } = self.put_record(&key, &revived, Precondition::Version(version)).await? {
                return Ok(true);
            }
        }
        Err(being_collected(digest))
    }

    /// Called after this request wrote `digest`'s content and before it writes the link or
    /// record that references it. One `get` when nothing is being collected.
    pub(crate) async fn content_written(&self, digest: &Digest) -> Result<Written> {
        let key = mark_key(digest.as_ref());
        for _ in 0..ATTEMPTS {
            let Some((mark, version)) = self.get_versioned::<Mark>(&key).await? else {
                return Ok(Written::Kept);
            };
            match mark {
                Mark::Revived => return Ok(Written::Kept),
                Mark::Condemned { .. } => {
                    // Exactly one of this put and GC's put of `Doomed` (same version) succeeds.
                    let cond = Precondition::Version(version);
                    if let PutOutcome::Written { .. } = self.put_record(&key, &Mark::Revived, cond).await? {
                        return Ok(Written::Kept);
                    }
                }
                Mark::Doomed { .. } => return Err(being_collected(digest)),
                // Deleted before or after this request wrote it: the store says which.
                Mark::Gone { .. } => {
                    return Ok(if self.blobs.stat(digest).await?.is_some() { Written::Kept } else { Written::Lost })
                }
            }
        }
        Err(being_collected(digest))
    }
}
