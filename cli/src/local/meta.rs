//! Metadata in an embedded database (redb): ACID transactions give the conditional writes the
//! core needs, and a committed write survives a crash.
//!
//! After a failed write (a full disk, say) redb refuses everything with `PreviousIo` until the
//! database is closed and opened again. So on that error the store reopens the database (redb
//! repairs it on open) and tries the operation once more; if the reopen fails too (the disk is
//! still full) the request gets the error and the next operation tries again. No restart needed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use berth_core::storage::{precondition_holds, BatchOp, StorageResult};
use berth_core::{MetaStore, Precondition, PutOutcome, StorageError, Versioned};
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};

/// key -> (version, value). Versions come from one counter, so a key deleted and created again
/// never repeats a version a client may still hold.
const RECORDS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("records");
const COUNTER: TableDefinition<&str, u64> = TableDefinition::new("counter");

#[derive(Clone)]
pub struct RedbMeta {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Operations hold the read lock; a reopen takes the write lock, so the old handle is
    /// dropped only once no transaction uses it. None: the last reopen failed.
    handle: RwLock<Handle>,
}

struct Handle {
    db: Option<Database>,
    /// Counts reopens, so that several operations failing on one broken handle reopen it once.
    generation: u64,
}

fn err(e: impl std::fmt::Display) -> StorageError {
    let message = format!("metadata database: {e}");
    // redb wraps the I/O error in its own types; its text keeps the OS error (ENOSPC is 28).
    if message.contains("No space left on device") || message.contains("os error 28") {
        StorageError::full(message)
    } else {
        StorageError::new(message)
    }
}

/// redb's page cache. Its default (1 GiB) let the process grow with the database: `berth gc`
/// over 10,000 manifests peaked at 39 MiB with a 32 MiB database. `bash bench/gc.sh
/// 1000:10000 10000:100000` measured 15 -> 20 MiB with a 4 MiB cache, and 14 -> 42 MiB with
/// 16 MiB. Records are small and hot ones stay cached; the OS page cache holds the rest.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

fn open_db(path: &Path) -> Result<Database, redb::Error> {
    let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(RECORDS)?;
    txn.open_table(COUNTER)?;
    txn.commit()?;
    Ok(db)
}

impl RedbMeta {
    /// The store of a stopped `berth serve`'s data directory, for the offline admin commands
    /// (`berth webhooks`, `berth replicate`): a clear error when there is none, or when the
    /// server still holds it.
    pub fn open_offline(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join("meta.redb");
        if !path.exists() {
            return Err(format!("{} holds no berth data (no meta.redb)", data_dir.display()));
        }
        RedbMeta::open(&path)
            .map_err(|e| format!("cannot open {}: {e} (is `berth serve` running on it? stop it first)", data_dir.display()))
    }

    pub fn open(path: &Path) -> StorageResult<Self> {
        let db = open_db(path).map_err(err)?;
        let handle = RwLock::new(Handle { db: Some(db), generation: 0 });
        Ok(RedbMeta { inner: Arc::new(Inner { path: path.to_owned(), handle }) })
    }

    /// Runs `op` on the database, reopening it once if an earlier failed write has left the
    /// handle unusable.
    fn with_db<T>(&self, op: impl Fn(&Database) -> Result<T, redb::Error>) -> StorageResult<T> {
        let (result, generation) = self.run(&op);
        match result {
            Err(redb::Error::PreviousIo) => {
                self.reopen(generation)?;
                self.run(&op).0.map_err(err)
            }
            other => other.map_err(err),
        }
    }

    fn run<T>(&self, op: &impl Fn(&Database) -> Result<T, redb::Error>) -> (Result<T, redb::Error>, u64) {
        let handle = self.inner.handle.read().unwrap_or_else(PoisonError::into_inner);
        let result = match &handle.db {
            Some(db) => op(db),
            None => Err(redb::Error::PreviousIo),
        };
        (result, handle.generation)
    }

    /// Closes and reopens the database, unless another operation already did since `seen`.
    fn reopen(&self, seen: u64) -> StorageResult<()> {
        let mut handle = self.inner.handle.write().unwrap_or_else(PoisonError::into_inner);
        if handle.generation != seen && handle.db.is_some() {
            return Ok(());
        }
        // The old handle holds the file lock: drop it before opening again.
        handle.db = None;
        handle.generation += 1;
        let db = open_db(&self.inner.path).map_err(|e| err(format!("reopening after a failed write: {e}")))?;
        tracing::warn!(path = %self.inner.path.display(), "metadata database reopened after a failed write");
        handle.db = Some(db);
        Ok(())
    }

    fn put_blocking(&self, key: &str, value: &[u8], cond: &Precondition) -> StorageResult<PutOutcome> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            let outcome = {
                let mut records = txn.open_table(RECORDS)?;
                let mut counter = txn.open_table(COUNTER)?;
                if !holds(&records, key, cond)? {
                    return Ok(PutOutcome::Conflict);
                }
                let version = insert(&mut records, &mut counter, key, value)?;
                PutOutcome::Written { version: version.to_string() }
            };
            txn.commit()?;
            Ok(outcome)
        })
    }

    fn delete_blocking(&self, key: &str) -> StorageResult<()> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            txn.open_table(RECORDS)?.remove(key)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// All or nothing, in one commit.
    fn apply_blocking(&self, ops: &[BatchOp]) -> StorageResult<Vec<bool>> {
        self.with_db(|db| {
            let txn = db.begin_write()?;
            {
                let mut records = txn.open_table(RECORDS)?;
                let mut counter = txn.open_table(COUNTER)?;
                for op in ops {
                    let cond = match op {
                        BatchOp::Put { cond, .. } | BatchOp::Delete { cond, .. } => cond,
                    };
                    // Dropping the transaction uncommitted discards the ops already applied.
                    if !holds(&records, op.key(), cond)? {
                        return Ok(vec![false; ops.len()]);
                    }
                    match op {
                        BatchOp::Put { key, value, .. } => {
                            insert(&mut records, &mut counter, key, value)?;
                        }
                        BatchOp::Delete { key, .. } => {
                            records.remove(key.as_str())?;
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(vec![true; ops.len()])
        })
    }
}

fn holds(records: &Table<&str, (u64, &[u8])>, key: &str, cond: &Precondition) -> Result<bool, redb::Error> {
    let current = records.get(key)?.map(|v| v.value().0.to_string());
    Ok(precondition_holds(cond, current.as_deref()))
}

fn insert(
    records: &mut Table<&str, (u64, &[u8])>,
    counter: &mut Table<&str, u64>,
    key: &str,
    value: &[u8],
) -> Result<u64, redb::Error> {
    let version = counter.get("version")?.map(|v| v.value()).unwrap_or(0) + 1;
    counter.insert("version", version)?;
    records.insert(key, (version, value))?;
    Ok(version)
}

/// Writes wait for fsync: they run on the blocking pool, away from the request threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StorageResult<T> + Send + 'static) -> StorageResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(err)?
}

#[async_trait::async_trait]
impl MetaStore for RedbMeta {
    async fn get(&self, key: &str) -> StorageResult<Option<Versioned>> {
        // Reads are served from redb's page cache: fast enough to run in place.
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let records = txn.open_table(RECORDS)?;
            Ok(records.get(key)?.map(|guard| {
                let (version, value) = guard.value();
                Versioned { value: Bytes::copy_from_slice(value), version: version.to_string() }
            }))
        })
    }

    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> StorageResult<PutOutcome> {
        let (this, key) = (self.clone(), key.to_owned());
        blocking(move || this.put_blocking(&key, &value, &cond)).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let (this, key) = (self.clone(), key.to_owned());
        blocking(move || this.delete_blocking(&key)).await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        self.with_db(|db| {
            let txn = db.begin_read()?;
            let records = txn.open_table(RECORDS)?;
            let start = after.filter(|a| *a >= prefix).unwrap_or(prefix);
            let mut keys = Vec::new();
            for entry in records.range(start..)? {
                let (key, _) = entry?;
                let key = key.value();
                if !key.starts_with(prefix) || keys.len() >= limit {
                    break;
                }
                if Some(key) != after {
                    keys.push(key.to_owned());
                }
            }
            Ok(keys)
        })
    }

    async fn apply(&self, ops: Vec<BatchOp>) -> StorageResult<Vec<bool>> {
        let this = self.clone();
        blocking(move || this.apply_blocking(&ops)).await
    }
}

/// The tmpfs helper the full-disk integration tests use (a path relative to this file's folder).
#[cfg(test)]
#[path = "../../tests/support/small_fs.rs"]
mod small_fs;

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(key: &str, value: &'static [u8], cond: Precondition) -> BatchOp {
        BatchOp::Put { key: key.into(), value: Bytes::from_static(value), cond }
    }

    #[tokio::test]
    async fn a_batch_applies_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let meta = RedbMeta::open(&dir.path().join("meta.redb")).unwrap();
        let PutOutcome::Written { version: va } = meta.put("a", Bytes::from_static(b"1"), Precondition::None).await.unwrap() else {
            panic!("unconditional put conflicted")
        };
        meta.put("b", Bytes::from_static(b"2"), Precondition::None).await.unwrap();
        let failing = vec![
            BatchOp::Delete { key: "a".into(), cond: Precondition::Version(va.clone()) },
            put_op("c", b"3", Precondition::Absent),
            BatchOp::Delete { key: "b".into(), cond: Precondition::Version("no such version".into()) },
        ];
        assert_eq!(meta.apply(failing).await.unwrap(), [false, false, false]);
        assert!(meta.get("a").await.unwrap().is_some(), "a failed batch removed a record");
        assert!(meta.get("c").await.unwrap().is_none(), "a failed batch wrote a record");
        let good = vec![
            BatchOp::Delete { key: "a".into(), cond: Precondition::Version(va) },
            put_op("c", b"3", Precondition::Absent),
            BatchOp::Delete { key: "b".into(), cond: Precondition::None },
        ];
        assert_eq!(meta.apply(good).await.unwrap(), [true, true, true]);
        assert_eq!(meta.list("", None, 10).await.unwrap(), ["c"]);
    }

    use super::small_fs::SmallFs;

    /// After a write fails on a full disk, writes work again once space is freed, without
    /// reopening the store by hand (redb alone answers PreviousIo until it is reopened).
    #[tokio::test]
    async fn writes_recover_after_the_disk_was_full() {
        let Some(fs) = SmallFs::mount_or_skip("4m", "writes_recover_after_the_disk_was_full") else { return };
        let meta = RedbMeta::open(&fs.path().join("meta.redb")).unwrap();
        meta.put("before", Bytes::from_static(b"kept"), Precondition::None).await.unwrap();
        let filler = fs.fill();
        let value = Bytes::from(vec![7u8; 32 * 1024]);
        let mut failed = false;
        for i in 0..200 {
            if meta.put(&format!("fill-{i:04}"), value.clone(), Precondition::None).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "no write failed on a full filesystem");
        std::fs::remove_file(&filler).unwrap();
        let outcome = meta.put("after", Bytes::from_static(b"new"), Precondition::Absent).await;
        assert!(
            matches!(outcome, Ok(PutOutcome::Written { .. })),
            "a write after space was freed: {outcome:?}"
        );
        assert_eq!(meta.get("after").await.unwrap().unwrap().value, Bytes::from_static(b"new"));
        assert_eq!(meta.get("before").await.unwrap().unwrap().value, Bytes::from_static(b"kept"));
        meta.delete("after").await.unwrap();
        assert!(meta.get("after").await.unwrap().is_none());
    }
}
