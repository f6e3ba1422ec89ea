//! Blobs as files: `blobs/<algorithm>/<first two hex>/<hex>`. Uploads are written aside under
//! `uploads/` and renamed into place after the core has verified the digest, so a crash or a
//! killed client never leaves a partial blob visible.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use berth_core::names::Digest;
use berth_core::storage::{is_after, stored_digest, StorageResult};
use berth_core::{BlobStore, ByteRange, ByteStream, StorageError, StoredBlob, UploadWriter};
use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::append::{Fence, FileAppender};
use super::io_error;

/// Read and write in pieces this size: large enough for throughput, small enough that memory
/// stays flat however big the blob is.
const IO_CHUNK: usize = 256 * 1024;

pub struct FsBlobStore {
    root: PathBuf,
    /// fsync blob data before acknowledging it (survives power loss, costs disk bandwidth).
    fsync: bool,
    /// The fence of each upload's current writer (see `append::Fence`). Weak: an entry dies
    /// with its writer, and dead ones are pruned as new writers come.
    fences: Mutex<HashMap<String, Weak<Fence>>>,
}

fn err(context: &str, e: std::io::Error) -> StorageError {
    io_error(context, e)
}

impl FsBlobStore {
    pub async fn open(root: &Path, fsync: bool) -> StorageResult<Self> {
        for dir in ["blobs", "uploads"] {
            fs::create_dir_all(root.join(dir)).await.map_err(|e| err("create data directory", e))?;
        }
        Ok(FsBlobStore { root: root.to_owned(), fsync, fences: Mutex::default() })
    }

    /// Stops whoever still writes upload `id` (a request whose claim lapsed) before the file
    /// is cut, published or removed; returns once no write of theirs is in progress.
    fn fence_off(&self, id: &str) {
        let old = self.fences.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(fence) = old.and_then(|weak| weak.upgrade()) {
            fence.revoke();
        }
    }

    /// A fence for a new writer of upload `id`, after fencing off the previous one.
    fn new_fence(&self, id: &str) -> Arc<Fence> {
        self.fence_off(id);
        let fence = Arc::new(Fence::default());
        let mut fences = self.fences.lock().unwrap_or_else(|e| e.into_inner());
        fences.retain(|_, weak| weak.strong_count() > 0);
        fences.insert(id.to_owned(), Arc::downgrade(&fence));
        fence
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.digest();
        self.root.join("blobs").join(digest.algorithm().as_ref()).join(&hex[..2]).join(hex)
    }

    fn upload_path(&self, id: &str) -> StorageResult<PathBuf> {
        // The core only passes ids it minted and signed; refuse anything path-like regardless.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') || id.contains("..") {
            return Err(StorageError::new(format!("refusing upload id {id:?}")));
        }
        Ok(self.root.join("uploads").join(id))
    }

    /// Renames a finished file into the blob tree and makes the rename durable.
    async fn publish(&self, from: &Path, digest: &Digest) -> StorageResult<()> {
        let to = self.blob_path(digest);
        let dir = to.parent().unwrap_or(&self.root).to_owned();
        fs::create_dir_all(&dir).await.map_err(|e| err("create blob directory", e))?;
        fs::rename(from, &to).await.map_err(|e| err("publish blob", e))?;
        if !self.fsync {
            return Ok(());
        }
        File::open(&dir).await.map_err(|e| err("open blob directory", e))?.sync_all().await.map_err(|e| err("sync blob directory", e))
    }
}

/// The names in `dir`, sorted; none when it does not exist.
fn sorted_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        // Names that are not UTF-8 are not content.
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// `blobs/<algorithm>/<xx>/<hex>` in digest order (`<algorithm>:<hex>`), from after `after`,
/// reading only the directories that can hold later digests. Anything that does not parse back
/// into a digest at its place (a stray file, a half-written name) is skipped.
fn walk_blobs(root: &Path, after: Option<&Digest>, limit: usize) -> std::io::Result<Vec<StoredBlob>> {
    let mut found = Vec::new();
    let after_str = after.map(|d| d.to_string());
    let (after_alg, after_hex) = match after_str.as_deref().and_then(|a| a.split_once(':')) {
        Some((alg, hex)) => (Some(format!("{alg}:")), hex),
        None => (None, ""),
    };
    let mut algorithms = sorted_names(root)?;
    // Digest order compares `sha256:` with `sha512:`, colon included.
    algorithms.sort_by_key(|alg| format!("{alg}:"));
    for alg in algorithms {
        let key = format!("{alg}:");
        // Within the cursor's algorithm, skip the fan-out directories before its hex.
        let from_hex = match after_alg.as_deref() {
            Some(a) if key.as_str() < a => continue,
            Some(a) if key.as_str() == a => after_hex,
            _ => "",
        };
        for fan in sorted_names(&root.join(&alg))? {
            if fan.len() != 2 || fan.as_str() < &from_hex[..from_hex.len().min(2)] {
                continue;
            }
            let dir = root.join(&alg).join(&fan);
            for hex in sorted_names(&dir)? {
                if found.len() >= limit {
                    return Ok(found);
                }
                let name = format!("{alg}:{hex}");
                let Some(digest) = stored_digest(&name).filter(|_| hex.starts_with(&fan)) else { continue };
                if !is_after(&name, after) {
                    continue;
                }
                match std::fs::metadata(dir.join(&hex)) {
                    Ok(m) if m.is_file() => found.push(StoredBlob { digest, size: m.len() }),
                    // Deleted since the directory was read, or not a file: not content.
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(found)
}

fn stream_file(file: File, len: u64) -> ByteStream {
    Box::pin(ReaderStream::with_capacity(file.take(len), IO_CHUNK).map_err(|e| err("read blob", e)))
}

#[async_trait::async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        match fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("stat blob", e)),
        }
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> StorageResult<Option<ByteStream>> {
        let mut file = match File::open(self.blob_path(digest)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err("open blob", e)),
        };
        let len = match range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.start)).await.map_err(|e| err("seek blob", e))?;
                r.end - r.start
            }
            None => file.metadata().await.map_err(|e| err("stat blob", e))?.len(),
        };
        Ok(Some(stream_file(file, len)))
    }

    async fn put_verified(&self, digest: &Digest, content: Bytes) -> StorageResult<()> {
        // A file already there is trusted only when it holds exactly these bytes: one left
        // empty or short by a full disk (or changed on disk) is replaced, not kept for ever.
        let path = self.blob_path(digest);
        if fs::metadata(&path).await.is_ok_and(|m| m.len() == content.len() as u64)
            && fs::read(&path).await.is_ok_and(|existing| existing == content)
        {
            return Ok(());
        }
        // Unique per write, so two requests storing the same manifest never share a file.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("uploads").join(format!("put-{}-{}-{n}", digest.digest(), std::process::id()));
        // Plain blocking writes: every error (a full disk above all) is seen here, and the
        // bytes are on disk before the rename makes them visible.
        let (file_path, written) = (tmp.clone(), content.clone());
        let wrote = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&file_path)?;
            file.write_all(&written)?;
            file.sync_all()
        })
        .await
        .map_err(|e| StorageError::new(format!("write blob: {e}")))?;
        if let Err(e) = wrote.map_err(|e| err("write blob", e)) {
            let _ = fs::remove_file(&tmp).await;
            return Err(e);
        }
        match self.publish(&tmp, digest).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<()> {
        match fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err("delete blob", e)),
            _ => Ok(()),
        }
    }

    async fn list_blobs(&self, after: Option<&Digest>, limit: usize) -> StorageResult<Vec<StoredBlob>> {
        let (root, after) = (self.root.join("blobs"), after.cloned());
        tokio::task::spawn_blocking(move || walk_blobs(&root, after.as_ref(), limit))
            .await
            .map_err(|e| StorageError::new(format!("list blobs: {e}")))?
            .map_err(|e| err("list blobs", e))
    }

    async fn upload_start(&self, id: &str) -> StorageResult<String> {
        File::create(self.upload_path(id)?).await.map_err(|e| err("start upload", e))?;
        Ok(String::new())
    }

    async fn upload_writer(&self, id: &str, _backend: &str, offset: u64) -> StorageResult<Box<dyn UploadWriter>> {
        let path = self.upload_path(id)?;
        // Before cutting the file: an earlier writer whose claim lapsed must not write again.
        let fence = self.new_fence(id);
        let mut file = OpenOptions::new().write(true).open(&path).await.map_err(|e| err("open upload", e))?;
        // Drop whatever an interrupted request wrote past the acknowledged length.
        file.set_len(offset).await.map_err(|e| err("truncate upload", e))?;
        file.seek(SeekFrom::Start(offset)).await.map_err(|e| err("seek upload", e))?;
        Ok(Box::new(FileAppender::spawn(file.into_std().await, &path, offset, self.fsync, fence)))
    }

    async fn upload_read(&self, id: &str, _backend: &str) -> StorageResult<ByteStream> {
        let file = File::open(self.upload_path(id)?).await.map_err(|e| err("open upload", e))?;
        let len = file.metadata().await.map_err(|e| err("stat upload", e))?.len();
        Ok(stream_file(file, len))
    }

    async fn upload_commit(&self, id: &str, _backend: &str, digest: &Digest, size: u64) -> StorageResult<()> {
        let path = self.upload_path(id)?;
        // Published content is immutable: nobody writes this file once it is renamed.
        self.fence_off(id);
        // The verified hash covers `size` bytes; a file of any other length is not that blob.
        let on_disk = fs::metadata(&path).await.map_err(|e| err("stat upload", e))?.len();
        if on_disk != size {
            return Err(StorageError::new(format!("upload {id} holds {on_disk} bytes, not the {size} that were verified")));
        }
        self.publish(&path, digest).await
    }

    async fn upload_abort(&self, id: &str, _backend: &str) -> StorageResult<()> {
        self.fence_off(id);
        match fs::remove_file(self.upload_path(id)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err("remove upload", e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The storage contract (berth_core::contract) on the local stores, in a temp directory.
    #[tokio::test]
    async fn local_stores_keep_the_storage_contract() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobStore::open(dir.path(), false).await.unwrap();
        berth_core::contract::blob_store_contract(&blobs).await.unwrap();
        let meta = super::super::RedbMeta::open(&dir.path().join("meta.redb")).unwrap();
        berth_core::contract::meta_store_contract(&meta).await.unwrap();
    }

    /// Stray files in the blob tree are not content, and the walk starts after the cursor.
    #[tokio::test]
    async fn enumeration_skips_what_is_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobStore::open(dir.path(), false).await.unwrap();
        let content = Bytes::from_static(b"listed");
        let digest: Digest = berth_core::hash::sha256_of(&content).parse().unwrap();
        blobs.put_verified(&digest, content).await.unwrap();
        let tree = dir.path().join("blobs/sha256");
        std::fs::write(tree.join(format!("{}/stray", &digest.digest()[..2])), b"x").unwrap();
        std::fs::create_dir_all(tree.join("zz")).unwrap();
        std::fs::write(tree.join("zz").join("f".repeat(64)), b"wrong fan-out").unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/md5/ab")).unwrap();
        std::fs::write(dir.path().join("blobs/md5/ab").join("ab".repeat(16)), b"no").unwrap();
        let listed = blobs.list_blobs(None, 10).await.unwrap();
        assert_eq!(listed, [StoredBlob { digest: digest.clone(), size: 6 }]);
        assert!(blobs.list_blobs(Some(&digest), 10).await.unwrap().is_empty());
    }
}
