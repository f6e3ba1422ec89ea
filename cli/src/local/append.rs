//! Appends an upload's bytes to its file, bypassing the page cache (O_DIRECT) for the aligned
//! middle of the stream.
//!
//! Why: a push costs one sha256 pass plus copying every byte into the page cache, and on these
//! machines the copy costs as much CPU as the hash (fresh page-cache pages are slow to fault in).
//! Direct I/O lets the disk read our one reused buffer instead. The unaligned head and tail of
//! each request go through an ordinary descriptor; the two never touch the same page. Where the
//! filesystem refuses O_DIRECT (tmpfs), everything goes the ordinary way.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Direct I/O wants offsets, lengths and memory aligned to the logical block size; 4 KiB covers
/// 512-byte and 4K-sector devices alike.
const ALIGN: usize = 4096;
/// One direct write per this many bytes: large enough to keep the disk streaming.
const DIRECT_CHUNK: usize = 2 * 1024 * 1024;

pub(super) struct Appender {
    buffered: File,
    direct: Option<File>,
    /// File offset of the first byte not yet written (and of `pending[0]`).
    pos: u64,
    pending: AlignedBuf,
}

impl Appender {
    /// `file` is open for writing and `pos` is where appending starts.
    pub(super) fn new(file: File, path: &Path, pos: u64) -> Self {
        let direct = open_direct(path).ok();
        let pending = AlignedBuf::new(DIRECT_CHUNK);
        // `align_offset` may in theory decline to align; then we simply stay buffered.
        let direct = direct.filter(|_| pending.is_aligned());
        Appender { buffered: file, direct, pos, pending }
    }

    pub(super) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        if self.direct.is_none() {
            self.buffered.write_all_at(data, self.pos)?;
            self.pos += data.len() as u64;
            return Ok(());
        }
        // Bring the file position to a block boundary through the page cache first.
        let misalignment = (self.pos % ALIGN as u64) as usize;
        if self.pending.is_empty() && misalignment != 0 {
            let head = data.len().min(ALIGN - misalignment);
            self.buffered.write_all_at(&data[..head], self.pos)?;
            self.pos += head as u64;
            data = &data[head..];
        }
        while !data.is_empty() {
            let taken = self.pending.fill_from(data);
            data = &data[taken..];
            if self.pending.is_full() {
                self.write_aligned()?;
            }
        }
        Ok(())
    }

    /// Writes what is left and returns the ordinary descriptor (for fsync).
    pub(super) fn finish(mut self) -> io::Result<File> {
        self.write_aligned()?;
        if !self.pending.is_empty() {
            self.buffered.write_all_at(self.pending.filled(), self.pos)?;
        }
        Ok(self.buffered)
    }

    /// Writes the whole blocks of `pending` at `pos` (which is aligned whenever `pending` holds
    /// bytes) and keeps the remainder.
    fn write_aligned(&mut self) -> io::Result<()> {
        let whole = self.pending.len / ALIGN * ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let blocks = &self.pending.filled()[..whole];
        let direct_result = match &self.direct {
            Some(direct) => direct.write_all_at(blocks, self.pos),
            None => self.buffered.write_all_at(blocks, self.pos),
        };
        if let Err(e) = direct_result {
            // A device with stricter alignment than ours: fall back for the rest of the upload.
            if self.direct.is_none() || e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
            tracing::debug!("direct I/O refused ({e}); writing through the page cache");
            self.direct = None;
            self.buffered.write_all_at(blocks, self.pos)?;
        }
        self.pos += whole as u64;
        self.pending.consume(whole);
        Ok(())
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
    capacity: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(capacity: usize) -> Self {
        let raw = vec![0u8; capacity + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, start, capacity, len: 0 }
    }

    fn is_aligned(&self) -> bool {
        self.start < ALIGN
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    fn filled(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn fill_from(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.capacity - self.len);
        let at = self.start + self.len;
        self.raw[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn consume(&mut self, n: usize) {
        let (from, to) = (self.start + n, self.start + self.len);
        self.raw.copy_within(from..to, self.start);
        self.len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the split of writes and the starting offset, the file holds exactly the bytes.
    #[test]
    fn appends_exact_bytes_across_alignments() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(5 * DIRECT_CHUNK + 12345)).map(|i| (i * 7 + i / 4099) as u8).collect();
        for (start, piece) in [(0usize, 65536usize), (1, 4096), (4095, 1 << 20), (10_000, 3), (4096, 777_777)] {
            let path = dir.path().join(format!("f{start}-{piece}"));
            std::fs::write(&path, &data[..start]).unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut appender = Appender::new(file, &path, start as u64);
            // Two requests' worth: finish, then resume where the first stopped.
            let middle = start + (data.len() - start) / 3;
            for chunk in data[start..middle].chunks(piece) {
                appender.write(chunk).unwrap();
            }
            appender.finish().unwrap().sync_all().unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut appender = Appender::new(file, &path, middle as u64);
            for chunk in data[middle..].chunks(piece) {
                appender.write(chunk).unwrap();
            }
            appender.finish().unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "start {start}, pieces of {piece}");
        }
    }
}
