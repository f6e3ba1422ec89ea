//! Blobs as files: `blobs/<algorithm>/<first two hex>/<hex>`. Uploads are written aside under
//! `uploads/` and renamed into place after the core has verified the digest, so a crash or a
//! killed client never leaves a partial blob visible.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_core::names::Digest;
use berth_core::storage::StorageResult;
use berth_core::{BlobStore, ByteRange, ByteStream, StorageError, UploadWriter};
use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::append::FileAppender;

/// Read and write in pieces this size: large enough for throughput, small enough that memory
/// stays flat however big the blob is.
const IO_CHUNK: usize = 256 * 1024;

pub struct FsBlobStore {
    root: PathBuf,
    /// fsync blob data before acknowledging it (survives power loss, costs disk bandwidth).
    fsync: bool,
}

fn err(context: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::new(format!("{context}: {e}"))
}

impl FsBlobStore {
    pub async fn open(root: &Path, fsync: bool) -> StorageResult<Self> {
        for dir in ["blobs", "uploads"] {
            fs::create_dir_all(root.join(dir)).await.map_err(|e| err("create data directory", e))?;
        }
        Ok(FsBlobStore { root: root.to_owned(), fsync })
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
        if self.stat(digest).await?.is_some() {
            return Ok(());
        }
        // Unique per write, so two requests storing the same manifest never share a file.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("uploads").join(format!("put-{}-{}-{n}", digest.digest(), std::process::id()));
        let mut file = File::create(&tmp).await.map_err(|e| err("write blob", e))?;
        file.write_all(&content).await.map_err(|e| err("write blob", e))?;
        if self.fsync {
            file.sync_all().await.map_err(|e| err("sync blob", e))?;
        }
        self.publish(&tmp, digest).await
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<()> {
        match fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err("delete blob", e)),
            _ => Ok(()),
        }
    }

    async fn upload_start(&self, id: &str) -> StorageResult<String> {
        File::create(self.upload_path(id)?).await.map_err(|e| err("start upload", e))?;
        Ok(String::new())
    }

    async fn upload_writer(&self, id: &str, _backend: &str, offset: u64) -> StorageResult<Box<dyn UploadWriter>> {
        let path = self.upload_path(id)?;
        let mut file = OpenOptions::new().write(true).open(&path).await.map_err(|e| err("open upload", e))?;
        // Drop whatever an interrupted request wrote past the acknowledged length.
        file.set_len(offset).await.map_err(|e| err("truncate upload", e))?;
        file.seek(SeekFrom::Start(offset)).await.map_err(|e| err("seek upload", e))?;
        Ok(Box::new(FileAppender::spawn(file.into_std().await, &path, offset, self.fsync)))
    }

    async fn upload_read(&self, id: &str, _backend: &str) -> StorageResult<ByteStream> {
        let file = File::open(self.upload_path(id)?).await.map_err(|e| err("open upload", e))?;
        let len = file.metadata().await.map_err(|e| err("stat upload", e))?.len();
        Ok(stream_file(file, len))
    }

    async fn upload_commit(&self, id: &str, _backend: &str, digest: &Digest, _size: u64) -> StorageResult<()> {
        self.publish(&self.upload_path(id)?, digest).await
    }

    async fn upload_abort(&self, id: &str, _backend: &str) -> StorageResult<()> {
        match fs::remove_file(self.upload_path(id)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err("remove upload", e)),
            _ => Ok(()),
        }
    }
}
