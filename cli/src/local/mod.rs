//! The embedded default storage of `berth serve`: blob files plus a redb metadata database,
//! all under one data directory.

mod append;
mod blobs;
mod meta;

pub use blobs::FsBlobStore;
pub use meta::RedbMeta;
