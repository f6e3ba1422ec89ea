//! The storage contract: what the core relies on from a [`BlobStore`] and a [`MetaStore`],
//! as checks every store runs (feature `contract`; production builds do not carry it).
//!
//! Each function drives one store through the operations the core uses and returns the first
//! broken expectation as a message. Runs on: the memory stores (`memory::tests`), the local
//! stores (cli `local::blobs::tests`), S3 (lambda `s3::blobs::tests`, when a local S3 is
//! named; `tests/lambda/run.sh` step `contract`), and R2 inside workerd (`tests/edge/run.sh`
//! step `contract`, through the Worker's `/__berth/contract` route). The checks only touch their own keys (`contract` prefix, upload ids `contract…`, the
//! digests of their own contents) and clean up before and after, so they may run against a store
//! that holds other data, and again after an interrupted run. Content is small: stores whose
//! uploads change behaviour past a size (S3's 5 MiB parts) are not exercised past it here;
//! docs/protocol.md ("Runtime differences") lists where stores knowingly differ.

use bytes::Bytes;
use futures_util::StreamExt;

use crate::hash::digest_of;
use crate::names::{Digest, DigestAlgorithm};
use crate::storage::{
    BatchOp, BlobStore, ByteRange, ByteStream, MetaStore, Precondition, PutOutcome, StoredBlob,
};

type Checked<T = ()> = Result<T, String>;

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The result of a store call, or what failed.
fn ok<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> Checked<T> {
    result.map_err(|e| format!("{what}: {e}"))
}

async fn collect(what: &str, mut stream: ByteStream) -> Checked<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&ok(what, chunk)?);
    }
    Ok(out)
}

fn digest(algorithm: DigestAlgorithm, content: &[u8]) -> Digest {
    // A digest just computed always parses.
    digest_of(&algorithm, content).parse().unwrap_or_else(|_| unreachable!("computed digest"))
}

fn sha256(content: &[u8]) -> Digest {
    digest(DigestAlgorithm::Sha256, content)
}

async fn read_blob<B: BlobStore>(store: &B, d: &Digest, range: Option<ByteRange>) -> Checked<Option<Vec<u8>>> {
    match ok("read", store.read(d, range).await)? {
        Some(stream) => Ok(Some(collect("read body", stream).await?)),
        None => Ok(None),
    }
}

/// Every stored blob, page by page (`page` entries a call).
async fn list_all_blobs<B: BlobStore>(store: &B, page: usize) -> Checked<Vec<StoredBlob>> {
    let mut all: Vec<StoredBlob> = Vec::new();
    for _ in 0..100_000 {
        let got = ok("list_blobs", store.list_blobs(all.last().map(|b| &b.digest), page).await)?;
        check!(got.len() <= page, "list_blobs returned {} entries for a limit of {page}", got.len());
        let done = got.len() < page;
        all.extend(got);
        if done {
            return Ok(all);
        }
    }
    Err("list_blobs never returned a short page".into())
}

const UPLOAD_IDS: [&str; 3] = ["contract1", "contract2", "contract3"];

/// What the core relies on from a blob store: stat/read/range/put_verified/delete, uploads
/// resumed by several writers at the acknowledged offset, `upload_read`, atomic commit, abort,
/// and enumeration in digest order with paging.
pub async fn blob_store_contract<B: BlobStore>(store: &B) -> Result<(), String> {
    let a = Bytes::from_static(b"berth contract: blob a, stored verified");
    let b = Bytes::from_static(b"berth contract: blob b");
    let c512 = Bytes::from_static(b"berth contract: blob c, sha512");
    let uploaded = b"berth contract: uploaded in three writers".to_vec();
    let abandoned = Bytes::from_static(b"berth contract: an upload that is aborted");
    let (da, db, dc) = (sha256(&a), sha256(&b), digest(DigestAlgorithm::Sha512, &c512));
    let (du, dx, dempty) = (sha256(&uploaded), sha256(&abandoned), sha256(b""));
    let ours = [&da, &db, &dc, &du, &dx, &dempty];
    // Leftovers of an interrupted run.
    for d in ours {
        ok("delete (cleanup)", store.delete(d).await)?;
    }

    // Verified content: stat, read, ranges, idempotent put, delete.
    check!(ok("stat", store.stat(&da).await)?.is_none(), "stat of absent content is not None");
    check!(read_blob(store, &da, None).await?.is_none(), "read of absent content is not None");
    ok("put_verified", store.put_verified(&da, a.clone()).await)?;
    ok("put_verified (again)", store.put_verified(&da, a.clone()).await)?;
    check!(ok("stat", store.stat(&da).await)? == Some(a.len() as u64), "stat after put_verified is not the size");
    check!(read_blob(store, &da, None).await?.as_deref() == Some(&a[..]), "read does not return what was put");
    let manifest = match ok("read_manifest", store.read_manifest(&da).await)? {
        Some(stream) => Some(collect("read_manifest", stream).await?),
        None => None,
    };
    check!(manifest.as_deref() == Some(&a[..]), "read_manifest does not return what was put");
    let range = ByteRange { start: 3, end: 11 };
    check!(
        read_blob(store, &da, Some(range)).await?.as_deref() == Some(&a[3..11]),
        "a range read does not return bytes [3, 11)"
    );
    let tail = ByteRange { start: a.len() as u64 - 5, end: a.len() as u64 };
    check!(
        read_blob(store, &da, Some(tail)).await?.as_deref() == Some(&a[a.len() - 5..]),
        "a range read of the last bytes does not return them"
    );
    ok("delete", store.delete(&da).await)?;
    check!(ok("stat", store.stat(&da).await)?.is_none(), "stat after delete is not None");
    check!(read_blob(store, &da, None).await?.is_none(), "read after delete is not None");
    // A store that caches manifests must drop the copy with the content.
    check!(ok("read_manifest", store.read_manifest(&da).await)?.is_none(), "read_manifest after delete is not None");
    ok("delete (absent)", store.delete(&da).await).map_err(|e| format!("deleting absent content fails: {e}"))?;

    // An upload through three writers, the second one's bytes never acknowledged.
    for id in UPLOAD_IDS {
        ok("upload_abort (cleanup)", store.upload_abort(id, "").await).ok();
    }
    let id = UPLOAD_IDS[0];
    let backend = ok("upload_start", store.upload_start(id).await)?;
    let (first, rest) = uploaded.split_at(20);
    let mut w = ok("upload_writer at 0", store.upload_writer(id, &backend, 0).await)?;
    ok("write", w.write(Bytes::copy_from_slice(&first[..7])).await)?;
    ok("write", w.write(Bytes::copy_from_slice(&first[7..])).await)?;
    let acknowledged = ok("finish", w.finish().await)?;
    // A request that wrote and finished but whose session was never saved (it died before).
    let mut lost = ok("upload_writer (lost)", store.upload_writer(id, &acknowledged, 20).await)?;
    ok("write (lost)", lost.write(Bytes::from_static(b"NEVER ACKNOWLEDGED")).await)?;
    ok("finish (lost)", lost.finish().await)?;
    let mut w = ok("upload_writer at the acknowledged offset", store.upload_writer(id, &acknowledged, 20).await)?;
    ok("write", w.write(Bytes::copy_from_slice(rest)).await)?;
    let backend = ok("finish", w.finish().await)?;
    // A writer that writes nothing changes nothing.
    let w = ok("upload_writer (empty)", store.upload_writer(id, &backend, uploaded.len() as u64).await)?;
    let backend = ok("finish (empty)", w.finish().await)?;
    check!(ok("stat", store.stat(&du).await)?.is_none(), "an upload's content is visible before commit");
    let read_back = collect("upload_read body", ok("upload_read", store.upload_read(id, &backend).await)?).await?;
    check!(
        read_back == uploaded,
        "upload_read returned {:?}, not the acknowledged bytes (a resumed writer must drop what an unacknowledged one wrote past its offset)",
        String::from_utf8_lossy(&read_back)
    );
    ok("upload_commit", store.upload_commit(id, &backend, &du, uploaded.len() as u64).await)?;
    check!(ok("stat", store.stat(&du).await)? == Some(uploaded.len() as u64), "stat after commit is not the size");
    check!(read_blob(store, &du, None).await?.as_deref() == Some(&uploaded[..]), "read after commit differs");
    check!(
        read_blob(store, &du, Some(ByteRange { start: 5, end: 25 })).await?.as_deref() == Some(&uploaded[5..25]),
        "a range read of committed upload content differs"
    );

    // Abort: nothing becomes visible, and aborting twice is fine.
    let id = UPLOAD_IDS[1];
    let backend = ok("upload_start", store.upload_start(id).await)?;
    let mut w = ok("upload_writer", store.upload_writer(id, &backend, 0).await)?;
    ok("write", w.write(abandoned.clone()).await)?;
    let backend = ok("finish", w.finish().await)?;
    ok("upload_abort", store.upload_abort(id, &backend).await)?;
    ok("upload_abort (again)", store.upload_abort(id, &backend).await)?;
    check!(ok("stat", store.stat(&dx).await)?.is_none(), "aborted upload content is visible");

    // The empty blob, committed from an upload nothing was written to.
    let id = UPLOAD_IDS[2];
    let backend = ok("upload_start", store.upload_start(id).await)?;
    ok("upload_commit (empty)", store.upload_commit(id, &backend, &dempty, 0).await)?;
    check!(ok("stat", store.stat(&dempty).await)? == Some(0), "the empty blob's size is not 0");
    check!(read_blob(store, &dempty, None).await?.as_deref() == Some(&[][..]), "the empty blob does not read empty");

    // Enumeration: digest order across algorithms, paging, `after`, sizes as stat has them.
    ok("put_verified", store.put_verified(&db, b.clone()).await)?;
    ok("put_verified", store.put_verified(&dc, c512.clone()).await)?;
    ok("put_verified", store.put_verified(&da, a.clone()).await)?;
    let all = list_all_blobs(store, 1000).await?;
    for pair in all.windows(2) {
        check!(
            pair[0].digest.to_string() < pair[1].digest.to_string(),
            "list_blobs is not in strictly increasing digest order: {} then {}",
            pair[0].digest,
            pair[1].digest
        );
    }
    let expected = [(&da, a.len()), (&db, b.len()), (&dc, c512.len()), (&du, uploaded.len()), (&dempty, 0)];
    for (d, size) in expected {
        let found = all.iter().find(|s| &s.digest == d);
        check!(
            found.map(|s| s.size) == Some(size as u64),
            "list_blobs reports {d} as {:?}, expected size {size}",
            found.map(|s| s.size)
        );
    }
    check!(!all.iter().any(|s| s.digest == dx), "list_blobs lists aborted upload content");
    let paged = list_all_blobs(store, 2).await?;
    check!(paged == all, "listing by pages of 2 differs from one page");
    let after = ok("list_blobs after", store.list_blobs(Some(&db), 1000).await)?;
    let expected_after: Vec<_> = all.iter().filter(|s| s.digest.to_string() > db.to_string()).cloned().collect();
    check!(after == expected_after, "list_blobs after {db} is not the rest of the listing");
    check!(ok("list_blobs limit 0", store.list_blobs(None, 0).await)?.is_empty(), "a limit of 0 returned entries");

    for d in ours {
        ok("delete", store.delete(d).await)?;
    }
    let left = list_all_blobs(store, 1000).await?;
    check!(!left.iter().any(|s| ours.contains(&&s.digest)), "list_blobs still lists deleted content");
    Ok(())
}

const PREFIX: &str = "contract";

fn written(what: &str, outcome: PutOutcome) -> Checked<String> {
    match outcome {
        PutOutcome::Written { version } => Ok(version),
        PutOutcome::Conflict => Err(format!("{what}: conflict where the write should succeed")),
    }
}

fn put(key: &str, value: &'static str, cond: Precondition) -> BatchOp {
    BatchOp::Put { key: key.into(), value: Bytes::from_static(value.as_bytes()), cond }
}

async fn value_of<M: MetaStore>(store: &M, key: &str) -> Checked<Option<Bytes>> {
    Ok(ok("get", store.get(key).await)?.map(|v| v.value))
}

/// What the core relies on from a metadata store: conditional puts (`Absent`, `Version`,
/// conflicts; a version never seen again after delete and re-create with another value),
/// listing by prefix in byte order with `after` and `limit`, and `apply` batches (all or
/// nothing, or op by op in order, each on its own condition: see [`MetaStore::apply`]).
pub async fn meta_store_contract<M: MetaStore>(store: &M) -> Result<(), String> {
    let cleanup = || async {
        for key in ok("list (cleanup)", store.list(PREFIX, None, 1000).await)? {
            ok("delete (cleanup)", store.delete(&key).await)?;
        }
        Checked::Ok(())
    };
    cleanup().await?;
    let k = "contract/k";

    // Conditional puts.
    check!(ok("get", store.get(k).await)?.is_none(), "get of an absent key is not None");
    check!(
        ok("put Version on absent", store.put(k, Bytes::from_static(b"0"), Precondition::Version("1".into())).await)?
            == PutOutcome::Conflict,
        "a Version put on an absent key was written"
    );
    let v1 = written("put Absent", ok("put", store.put(k, Bytes::from_static(b"one"), Precondition::Absent).await)?)?;
    let got = ok("get", store.get(k).await)?.ok_or("get after put is None")?;
    check!(got.value == "one" && got.version == v1, "get does not return the value and version put");
    check!(
        ok("put", store.put(k, Bytes::from_static(b"x"), Precondition::Absent).await)? == PutOutcome::Conflict,
        "an Absent put on a present key was written"
    );
    let v2 = written("put Version", ok("put", store.put(k, Bytes::from_static(b"two"), Precondition::Version(v1.clone())).await)?)?;
    check!(v2 != v1, "a new value kept the version {v1}");
    check!(
        ok("put", store.put(k, Bytes::from_static(b"x"), Precondition::Version(v1.clone())).await)? == PutOutcome::Conflict,
        "a put on a stale version was written"
    );
    check!(value_of(store, k).await?.as_deref() == Some(&b"two"[..]), "a conflicting put changed the value");
    let v3 = written("put None", ok("put", store.put(k, Bytes::from_static(b"three"), Precondition::None).await)?)?;
    ok("delete", store.delete(k).await)?;
    ok("delete (absent)", store.delete(k).await)?;
    check!(ok("get", store.get(k).await)?.is_none(), "get after delete is not None");
    check!(
        ok("put", store.put(k, Bytes::from_static(b"x"), Precondition::Version(v3.clone())).await)? == PutOutcome::Conflict,
        "a Version put after delete was written"
    );
    let v4 = written("put Absent after delete", ok("put", store.put(k, Bytes::from_static(b"four"), Precondition::Absent).await)?)?;
    check!(![&v1, &v2, &v3].contains(&&v4), "a re-created key repeated an earlier version ({v4})");

    // get_small: what get answers, for a small record and a big one, after a rewrite and a delete.
    let small = "contract/small";
    let big = Bytes::from("b".repeat(4096));
    for value in [Bytes::from_static(b"{\"size\":1}"), Bytes::from_static(b"{\"size\":2}"), big.clone()] {
        let version = written("put", ok("put", store.put(small, value.clone(), Precondition::None).await)?)?;
        let got = ok("get_small", store.get_small(small).await)?.ok_or("get_small after put is None")?;
        check!(got.value == value && got.version == version, "get_small does not return the value and version put");
    }
    ok("delete", store.delete(small).await)?;
    check!(ok("get_small", store.get_small(small).await)?.is_none(), "get_small after delete is not None");

    // Listing: byte order, prefix, after, limit.
    for key in ["contract/b", "contract/a", "contract/B", "contract/b/x", "contract/c", "contract@", "contractz"] {
        ok("put", store.put(key, Bytes::from_static(b"{}"), Precondition::None).await)?;
    }
    let list = |prefix: &'static str, after: Option<&'static str>, limit: usize| async move {
        ok("list", store.list(prefix, after, limit).await)
    };
    let all = ["contract/B", "contract/a", "contract/b", "contract/b/x", "contract/c", "contract/k"];
    check!(list("contract/", None, 100).await? == all, "list is not the prefix's keys in byte order");
    check!(list("contract/", None, 2).await? == all[..2], "list does not stop at the limit");
    check!(list("contract/", Some("contract/b"), 100).await? == all[3..], "list after a key is not what follows it");
    check!(list("contract/", Some("contract/b"), 1).await? == all[3..4], "list after + limit");
    check!(list("contract/", Some("contract/bb"), 100).await? == all[4..], "list after an absent key");
    check!(list("contract/", Some("contract"), 100).await? == all, "list after a key before the prefix");
    check!(list("contract/", Some("contract/k"), 100).await?.is_empty(), "list after the last key is not empty");
    check!(list("contract/b", None, 100).await? == all[2..4], "list of a narrower prefix");
    check!(list("contract/", None, 0).await?.is_empty(), "list with limit 0 returned keys");

    // apply: every condition holds.
    let vk = ok("get", store.get(k).await)?.ok_or("contract/k vanished")?.version;
    let ops = vec![
        put("contract/n", "new", Precondition::Absent),
        put("contract/a", "over", Precondition::None),
        BatchOp::Delete { key: k.into(), cond: Precondition::Version(vk) },
        BatchOp::Delete { key: "contract/none".into(), cond: Precondition::Absent },
        BatchOp::Delete { key: "contract/none2".into(), cond: Precondition::None },
    ];
    check!(ok("apply", store.apply(ops).await)? == [true; 5], "a batch whose conditions all hold was not applied");
    check!(value_of(store, "contract/n").await?.as_deref() == Some(&b"new"[..]), "apply: put Absent not visible");
    check!(value_of(store, "contract/a").await?.as_deref() == Some(&b"over"[..]), "apply: put None not visible");
    check!(value_of(store, k).await?.is_none(), "apply: conditional delete not applied");

    // apply: a condition fails. Atomic stores apply nothing; the others apply the ops whose own
    // conditions hold, in order. Either way a false op had no effect and a true one did.
    let ops = vec![
        put("contract/m", "m", Precondition::Absent),
        BatchOp::Delete { key: "contract/c".into(), cond: Precondition::Version("no such version".into()) },
        BatchOp::Delete { key: "contract/b".into(), cond: Precondition::Absent },
    ];
    let applied = ok("apply", store.apply(ops).await)?;
    check!(applied.len() == 3, "apply returned {} results for 3 ops", applied.len());
    check!(!applied[1] && !applied[2], "apply reported ops whose condition fails as applied: {applied:?}");
    check!(value_of(store, "contract/c").await?.is_some(), "apply removed a key whose Version condition failed");
    check!(value_of(store, "contract/b").await?.is_some(), "apply removed a present key on an Absent condition");
    let m = value_of(store, "contract/m").await?;
    check!(applied[0] == m.is_some(), "apply reported {} for a put, but the key is {:?}", applied[0], m);

    // apply: a later op sees an earlier one's write.
    let ops = vec![put("contract/seq", "1", Precondition::Absent), put("contract/seq", "2", Precondition::Absent)];
    let applied = ok("apply", store.apply(ops).await)?;
    check!(!applied[1], "apply wrote an Absent put over a key the same batch had just written");
    let seq = value_of(store, "contract/seq").await?;
    check!(
        seq.as_deref() == applied[0].then_some(&b"1"[..]),
        "apply reported {applied:?} but contract/seq is {seq:?}"
    );

    cleanup().await?;
    check!(list("contract", None, 100).await?.is_empty(), "keys remain after cleanup");
    Ok(())
}
