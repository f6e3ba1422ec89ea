//! Metadata in an embedded database (redb): ACID transactions give the conditional writes the
//! core needs, and a committed write survives a crash.

use std::path::Path;
use std::sync::Arc;

use berth_core::storage::StorageResult;
use berth_core::{MetaStore, Precondition, PutOutcome, StorageError, Versioned};
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// key -> (version, value). Versions come from one counter, so a key deleted and created again
/// never repeats a version a client may still hold.
const RECORDS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("records");
const COUNTER: TableDefinition<&str, u64> = TableDefinition::new("counter");

#[derive(Clone)]
pub struct RedbMeta {
    db: Arc<Database>,
}

fn err(e: impl std::fmt::Display) -> StorageError {
    StorageError::new(format!("metadata database: {e}"))
}

impl RedbMeta {
    pub fn open(path: &Path) -> StorageResult<Self> {
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(RECORDS).map_err(err)?;
        txn.open_table(COUNTER).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(RedbMeta { db: Arc::new(db) })
    }

    fn put_blocking(&self, key: &str, value: &[u8], cond: Precondition) -> StorageResult<PutOutcome> {
        let txn = self.db.begin_write().map_err(err)?;
        let outcome = {
            let mut records = txn.open_table(RECORDS).map_err(err)?;
            let current = records.get(key).map_err(err)?.map(|v| v.value().0);
            let allowed = match (&cond, current) {
                (Precondition::None, _) => true,
                (Precondition::Absent, current) => current.is_none(),
                (Precondition::Version(v), Some(current)) => *v == current.to_string(),
                (Precondition::Version(_), None) => false,
            };
            if !allowed {
                return Ok(PutOutcome::Conflict);
            }
            let mut counter = txn.open_table(COUNTER).map_err(err)?;
            let version = counter.get("version").map_err(err)?.map(|v| v.value()).unwrap_or(0) + 1;
            counter.insert("version", version).map_err(err)?;
            records.insert(key, (version, value)).map_err(err)?;
            PutOutcome::Written { version: version.to_string() }
        };
        txn.commit().map_err(err)?;
        Ok(outcome)
    }

    fn delete_blocking(&self, key: &str) -> StorageResult<()> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(RECORDS).map_err(err)?.remove(key).map_err(err)?;
        txn.commit().map_err(err)
    }
}

/// Writes wait for fsync: they run on the blocking pool, away from the request threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> StorageResult<T> + Send + 'static) -> StorageResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(err)?
}

#[async_trait::async_trait]
impl MetaStore for RedbMeta {
    async fn get(&self, key: &str) -> StorageResult<Option<Versioned>> {
        // Reads are served from redb's page cache: fast enough to run in place.
        let txn = self.db.begin_read().map_err(err)?;
        let records = txn.open_table(RECORDS).map_err(err)?;
        Ok(records.get(key).map_err(err)?.map(|guard| {
            let (version, value) = guard.value();
            Versioned { value: Bytes::copy_from_slice(value), version: version.to_string() }
        }))
    }

    async fn put(&self, key: &str, value: Bytes, cond: Precondition) -> StorageResult<PutOutcome> {
        let (this, key) = (self.clone(), key.to_owned());
        blocking(move || this.put_blocking(&key, &value, cond)).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let (this, key) = (self.clone(), key.to_owned());
        blocking(move || this.delete_blocking(&key)).await
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<Vec<String>> {
        let txn = self.db.begin_read().map_err(err)?;
        let records = txn.open_table(RECORDS).map_err(err)?;
        let start = after.filter(|a| *a >= prefix).unwrap_or(prefix);
        let mut keys = Vec::new();
        for entry in records.range(start..).map_err(err)? {
            let (key, _) = entry.map_err(err)?;
            let key = key.value();
            if !key.starts_with(prefix) || keys.len() >= limit {
                break;
            }
            if Some(key) != after {
                keys.push(key.to_owned());
            }
        }
        Ok(keys)
    }
}
