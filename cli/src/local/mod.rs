//! The embedded default storage of `berth serve`: blob files plus a redb metadata database,
//! all under one data directory.

mod append;
mod blobs;
mod meta;

pub use blobs::FsBlobStore;
pub use meta::RedbMeta;

/// An I/O error as a storage error: out of space (ENOSPC, EDQUOT) becomes the core's "storage is
/// full" (507), everything else a backend failure.
pub(crate) fn io_error(context: &str, e: std::io::Error) -> berth_core::StorageError {
    let full = matches!(e.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
        || e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded;
    if full {
        berth_core::StorageError::full(format!("{context}: {e}"))
    } else {
        berth_core::StorageError::new(format!("{context}: {e}"))
    }
}
