//! Appends an upload's bytes to its file, bypassing the page cache (O_DIRECT) for the aligned
//! middle of the stream.
//!
//! Why: a push costs one sha256 pass plus copying every byte into the page cache, and on these
//! machines that copy costs as much CPU as the hash (fresh page-cache pages are slow to fault
//! in). With direct I/O the disk reads a few reused, block-aligned buffers instead. The request's
//! task copies each chunk into those buffers right after hashing it, while the bytes are still in
//! this core's cache; a blocking thread does the writes, so the disk overlaps with the network.
//! Each request's unaligned head and tail go through an ordinary descriptor (never the same page
//! as a direct write). Where the filesystem refuses O_DIRECT (tmpfs), everything goes that way.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use berth_core::storage::StorageResult;
use berth_core::{StorageError, UploadWriter};
use bytes::Bytes;
use tokio::sync::mpsc;

/// Direct I/O wants offsets, lengths and memory aligned to the logical block size; 4 KiB covers
/// 512-byte and 4K-sector devices alike.
const ALIGN: usize = 4096;
/// Bytes per direct write: large enough to keep the disk streaming.
const BLOCK_BUF: usize = 4 * 1024 * 1024;
/// Buffers per upload: one filling, the rest queued or being written. Bounds memory per upload.
const POOL: usize = 3;
/// Aligned buffers in the whole process (16 MiB): many concurrent (or stalled) uploads must not
/// add up past the memory target. An upload that finds none free writes through the page cache
/// instead of waiting, so one stalled client can never hold up another.
const GLOBAL_BUFFERS: usize = 4;
static BUFFERS_IN_USE: AtomicUsize = AtomicUsize::new(0);

/// Fences the writers of one upload file. Every write happens under the fence's lock, and a
/// writer whose fence is revoked fails instead of writing: the store revokes it before a new
/// writer truncates the file, and before the file is published or removed. So a request whose
/// claim lapsed while its body stalled can never write into a later writer's bytes or into a
/// published blob (the rename keeps the inode its descriptors point at).
#[derive(Default)]
pub(super) struct Fence {
    revoked: Mutex<bool>,
}

impl Fence {
    /// Waits for a write in progress to end, then refuses every later one.
    pub(super) fn revoke(&self) {
        *self.revoked.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    fn write(&self, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        if *revoked {
            return Err(io::Error::other(
                "this request's claim on the upload lapsed and another request took it over",
            ));
        }
        f()
    }
}

enum Job {
    /// Bytes at an unaligned position (or everything, without direct I/O).
    Buffered { at: u64, bytes: Bytes },
    /// A buffer starting at a block-aligned position; its whole blocks go direct.
    Aligned { at: u64, buf: AlignedBuf },
}

pub(super) struct FileAppender {
    jobs: mpsc::Sender<Job>,
    free: mpsc::UnboundedReceiver<AlignedBuf>,
    done: tokio::task::JoinHandle<io::Result<()>>,
    direct: bool,
    /// File offset of the next byte handed to `write`.
    pos: u64,
    filling: Option<AlignedBuf>,
    allocated: usize,
}

impl FileAppender {
    /// `file` is the upload, open for writing and already cut to `pos`; `path` is opened a
    /// second time with O_DIRECT when the filesystem allows it.
    pub(super) fn spawn(file: File, path: &Path, pos: u64, fsync: bool, fence: Arc<Fence>) -> Self {
        // `align_offset` may in theory decline to align a buffer; then we stay buffered.
        let direct = open_direct(path).ok().filter(|_| AlignedBuf::aligned_here());
        let use_direct = direct.is_some();
        let (jobs, rx) = mpsc::channel(POOL);
        let (free_tx, free) = mpsc::unbounded_channel();
        let done = tokio::task::spawn_blocking(move || {
            let mut disk = Disk { buffered: file, direct, fence };
            disk.run(rx, free_tx)?;
            // With fsync on, acknowledged bytes survive power loss, not just a process crash.
            if fsync { disk.buffered.sync_data() } else { Ok(()) }
        });
        FileAppender { jobs, free, done, direct: use_direct, pos, filling: None, allocated: 0 }
    }

    async fn send(&mut self, job: Job) -> StorageResult<()> {
        // A closed queue means the thread stopped on an I/O error, which `finish` reports.
        self.jobs.send(job).await.map_err(|_| StorageError::new("upload writer failed; see finish"))
    }

    /// A buffer to fill: a returned one, a new one while this upload's pool and the process's
    /// budget allow, else wait for one of ours; None when we have none and the budget is spent.
    async fn empty_buffer(&mut self) -> StorageResult<Option<AlignedBuf>> {
        if let Ok(buf) = self.free.try_recv() {
            return Ok(Some(buf));
        }
        if self.allocated < POOL {
            if let Some(buf) = AlignedBuf::from_budget() {
                self.allocated += 1;
                return Ok(Some(buf));
            }
        }
        if self.allocated == 0 {
            return Ok(None);
        }
        let buf = self.free.recv().await.ok_or_else(|| StorageError::new("upload writer failed; see finish"))?;
        Ok(Some(buf))
    }

    async fn ship_filling(&mut self) -> StorageResult<()> {
        if let Some(buf) = self.filling.take().filter(|b| !b.is_empty()) {
            let at = self.pos - buf.len as u64;
            self.send(Job::Aligned { at, buf }).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl UploadWriter for FileAppender {
    async fn write(&mut self, mut chunk: Bytes) -> StorageResult<()> {
        if !self.direct {
            let at = self.pos;
            self.pos += chunk.len() as u64;
            return self.send(Job::Buffered { at, bytes: chunk }).await;
        }
        // Bring the file position to a block boundary through the page cache first.
        let misalignment = (self.pos % ALIGN as u64) as usize;
        if self.filling.is_none() && misalignment != 0 {
            let head = chunk.split_to(chunk.len().min(ALIGN - misalignment));
            let at = self.pos;
            self.pos += head.len() as u64;
            self.send(Job::Buffered { at, bytes: head }).await?;
        }
        while !chunk.is_empty() {
            let mut buf = match self.filling.take() {
                Some(buf) => buf,
                None => match self.empty_buffer().await? {
                    Some(buf) => buf,
                    None => {
                        // The process's buffer budget is spent: this chunk takes the page cache.
                        let at = self.pos;
                        self.pos += chunk.len() as u64;
                        return self.send(Job::Buffered { at, bytes: chunk }).await;
                    }
                },
            };
            let taken = buf.fill_from(&chunk);
            let _ = chunk.split_to(taken);
            self.pos += taken as u64;
            let full = buf.is_full();
            self.filling = Some(buf);
            if full {
                self.ship_filling().await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> StorageResult<String> {
        self.ship_filling().await?;
        let FileAppender { jobs, done, .. } = *self;
        drop(jobs);
        match done.await {
            Ok(Ok(())) => Ok(String::new()),
            Ok(Err(e)) => Err(super::io_error("write upload", e)),
            Err(e) => Err(StorageError::new(format!("upload writer: {e}"))),
        }
    }
}

/// The blocking side: executes the writes in order and hands buffers back.
struct Disk {
    buffered: File,
    direct: Option<File>,
    fence: Arc<Fence>,
}

impl Disk {
    fn run(&mut self, mut jobs: mpsc::Receiver<Job>, free: mpsc::UnboundedSender<AlignedBuf>) -> io::Result<()> {
        while let Some(job) = jobs.blocking_recv() {
            let fence = self.fence.clone();
            match job {
                Job::Buffered { at, bytes } => fence.write(|| self.buffered.write_all_at(&bytes, at))?,
                Job::Aligned { at, buf } => {
                    let data = buf.filled();
                    let whole = data.len() / ALIGN * ALIGN;
                    fence.write(|| {
                        self.write_blocks(&data[..whole], at)?;
                        self.buffered.write_all_at(&data[whole..], at + whole as u64)
                    })?;
                    // The appender may have finished already; then the buffer is just freed.
                    let _ = free.send(buf.emptied());
                }
            }
        }
        Ok(())
    }

    fn write_blocks(&mut self, blocks: &[u8], at: u64) -> io::Result<()> {
        let Some(direct) = &self.direct else {
            return self.buffered.write_all_at(blocks, at);
        };
        match direct.write_all_at(blocks, at) {
            // A device with stricter alignment than ours: page cache for the rest of the upload.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("direct I/O refused ({e}); writing through the page cache");
                self.direct = None;
                self.buffered.write_all_at(blocks, at)
            }
            other => other,
        }
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path)
}

/// Elsewhere (macOS has F_NOCACHE instead) uploads simply go through the page cache.
#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> io::Result<File> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no O_DIRECT here"))
}

/// A fixed buffer whose start is block-aligned, carved out of a slightly larger Vec (safe code,
/// no custom allocator).
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer counted against the process's budget, or None when it is spent.
    fn from_budget() -> Option<Self> {
        let taken = BUFFERS_IN_USE.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < GLOBAL_BUFFERS).then_some(n + 1)
        });
        taken.ok()?;
        let raw = vec![0u8; BLOCK_BUF + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        Some(AlignedBuf { raw, start, len: 0 })
    }

    /// Whether `align_offset` aligns buffers on this platform (it may in theory decline).
    fn aligned_here() -> bool {
        let raw = [0u8; 2 * ALIGN];
        raw.as_ptr().align_offset(ALIGN) < ALIGN
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_full(&self) -> bool {
        self.len == BLOCK_BUF
    }

    fn filled(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn fill_from(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(BLOCK_BUF - self.len);
        let at = self.start + self.len;
        self.raw[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn emptied(mut self) -> Self {
        self.len = 0;
        self
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        BUFFERS_IN_USE.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the split of writes and the starting offset, the file holds exactly the bytes,
    /// also when an upload resumes where an earlier request stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_exact_bytes_across_alignments() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(5 * BLOCK_BUF + 12345)).map(|i| (i * 7 + i / 4099) as u8).collect();
        for (start, piece) in [(0usize, 65536usize), (1, 4096), (4095, 1 << 20), (10_000, 3), (4096, 777_777)] {
            let path = dir.path().join(format!("f{start}-{piece}"));
            std::fs::write(&path, &data[..start]).unwrap();
            let middle = start + (data.len() - start) / 3;
            for (from, to) in [(start, middle), (middle, data.len())] {
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                let mut appender: Box<dyn UploadWriter> =
                    Box::new(FileAppender::spawn(file, &path, from as u64, true, Arc::default()));
                for chunk in data[from..to].chunks(piece) {
                    appender.write(Bytes::copy_from_slice(chunk)).await.unwrap();
                }
                appender.finish().await.unwrap();
            }
            assert!(std::fs::read(&path).unwrap() == data, "start {start}, pieces of {piece}");
        }
    }

    /// A writer whose fence was revoked (its claim lapsed and the store moved on) writes nothing
    /// more, and its request fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoked_writer_writes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::write(&path, b"").unwrap();
        let fence = Arc::new(Fence::default());
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut appender: Box<dyn UploadWriter> = Box::new(FileAppender::spawn(file, &path, 0, false, fence.clone()));
        appender.write(Bytes::from(vec![1u8; 10_000])).await.unwrap();
        // Let the disk thread catch up, then take the writer's right away, as a new claim would.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        fence.revoke();
        let before = std::fs::read(&path).unwrap();
        let _ = appender.write(Bytes::from(vec![2u8; 5 * BLOCK_BUF])).await;
        let finished = appender.finish().await;
        assert!(finished.is_err(), "a fenced writer must fail");
        assert_eq!(std::fs::read(&path).unwrap(), before, "a fenced writer changed the file");
        assert!(before.iter().all(|b| *b == 1));
    }

    /// However many uploads write at once, the aligned buffers they hold stay within the
    /// process's budget, and every file still gets exactly its bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffers_stay_within_the_process_budget() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(2 * BLOCK_BUF + 999)).map(|i| (i % 251) as u8).collect();
        let mut open = Vec::new();
        for n in 0..(GLOBAL_BUFFERS + 4) {
            let path = dir.path().join(format!("u{n}"));
            std::fs::write(&path, b"").unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut appender: Box<dyn UploadWriter> =
                Box::new(FileAppender::spawn(file, &path, 0, false, Arc::default()));
            // Half a buffer each, then "stall": every upload holds what it took.
            appender.write(Bytes::copy_from_slice(&data[..BLOCK_BUF / 2])).await.unwrap();
            assert!(BUFFERS_IN_USE.load(Ordering::Acquire) <= GLOBAL_BUFFERS);
            open.push((path, appender));
        }
        for (path, mut appender) in open {
            appender.write(Bytes::copy_from_slice(&data[BLOCK_BUF / 2..])).await.unwrap();
            assert!(BUFFERS_IN_USE.load(Ordering::Acquire) <= GLOBAL_BUFFERS);
            appender.finish().await.unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "{}", path.display());
        }
    }
}
