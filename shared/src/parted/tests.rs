//! The engine on a fake part store that checks what R2 checks: every part but the last of one
//! size, at least a minimum, numbered from 1.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::*;

const PART: u64 = 8;

#[derive(Default)]
struct Inner {
    objects: BTreeMap<String, Bytes>,
    /// Open multipart uploads: key and parts by number.
    multiparts: HashMap<String, (String, BTreeMap<u16, Bytes>)>,
    pointers: BTreeMap<String, (String, u64)>,
    next: u64,
}

#[derive(Clone, Default)]
struct FakeParts(Arc<Mutex<Inner>>);

impl FakeParts {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap()
    }
    fn object(&self, key: &str) -> Option<Bytes> {
        self.inner().objects.get(key).cloned()
    }
    fn keys(&self, prefix: &str) -> Vec<String> {
        self.inner().objects.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }
    /// The content published for `digest`, through its pointer.
    fn content(&self, digest: &Digest) -> Bytes {
        let (object, size) = self.inner().pointers.get(&digest.to_string()).cloned().expect("linked");
        let bytes = self.object(&object).expect("pointed-to object");
        assert_eq!(bytes.len() as u64, size);
        bytes
    }
}

fn etag(bytes: &[u8]) -> String {
    crate::hash::sha256_of(bytes)
}

#[async_trait::async_trait]
impl PartStore for FakeParts {
    async fn create_multipart(&self, key: &str) -> StorageResult<String> {
        let mut inner = self.inner();
        inner.next += 1;
        let id = format!("mpu-{}", inner.next);
        inner.multiparts.insert(id.clone(), (key.to_owned(), BTreeMap::new()));
        Ok(id)
    }
    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, part: Bytes) -> StorageResult<String> {
        let mut inner = self.inner();
        let (k, parts) = inner.multiparts.get_mut(upload_id).ok_or_else(|| StorageError::new("no such upload"))?;
        assert_eq!(k, key);
        assert!(number >= 1);
        let tag = etag(&part);
        parts.insert(number, part);
        Ok(tag)
    }
    async fn complete_multipart(&self, key: &str, upload_id: &str, etags: &[String]) -> StorageResult<()> {
        let mut inner = self.inner();
        let (k, parts) = inner.multiparts.remove(upload_id).ok_or_else(|| StorageError::new("no such upload"))?;
        assert_eq!(k, key);
        let mut whole = Vec::new();
        for (i, tag) in etags.iter().enumerate() {
            let part = parts.get(&(i as u16 + 1)).expect("every listed part uploaded");
            assert_eq!(&etag(part), tag, "part {} etag", i + 1);
            if i + 1 < etags.len() {
                assert_eq!(part.len() as u64, PART, "every part but the last has the part size");
            }
            whole.extend_from_slice(part);
        }
        inner.objects.insert(key.to_owned(), Bytes::from(whole));
        Ok(())
    }
    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> StorageResult<()> {
        self.inner().multiparts.remove(upload_id);
        Ok(())
    }
    async fn put_small(&self, key: &str, bytes: Bytes) -> StorageResult<()> {
        self.inner().objects.insert(key.to_owned(), bytes);
        Ok(())
    }
    async fn get_small(&self, key: &str) -> StorageResult<Bytes> {
        self.object(key).ok_or_else(|| StorageError::new(format!("{key} is missing")))
    }
    async fn size_of(&self, key: &str) -> StorageResult<Option<u64>> {
        Ok(self.object(key).map(|b| b.len() as u64))
    }
    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner().objects.remove(key);
        Ok(())
    }
    async fn delete_prefix(&self, prefix: &str) -> StorageResult<()> {
        self.inner().objects.retain(|k, _| !k.starts_with(prefix));
        Ok(())
    }
    async fn link(&self, digest: &Digest, object: &str, size: u64) -> StorageResult<bool> {
        let mut inner = self.inner();
        if inner.pointers.contains_key(&digest.to_string()) {
            return Ok(false);
        }
        inner.pointers.insert(digest.to_string(), (object.to_owned(), size));
        Ok(true)
    }
}

/// One request: opens the saved state, writes `chunks`, returns the state to save.
async fn request(store: &FakeParts, state: &PartedUpload, chunks: &[&[u8]]) -> PartedUpload {
    let mut writer = PartedWriter::open(store.clone(), "u1", state.clone(), state.len()).unwrap();
    for chunk in chunks {
        writer.write_chunk(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    writer.finish_state().await.unwrap()
}

fn digest_of(bytes: &[u8]) -> Digest {
    crate::hash::sha256_of(bytes).parse().unwrap()
}

#[tokio::test]
async fn bytes_are_cut_into_parts_of_the_part_size_as_they_flow() {
    let store = FakeParts::default();
    let data: Vec<u8> = (0..29u8).collect();
    // Chunk sizes that never line up with parts.
    let state = request(&store, &PartedUpload::new(PART), &[&data[..3], &data[3..20], &data[20..]]).await;
    assert_eq!(state.parts.len(), 3, "three full parts of 8");
    assert_eq!(state.tail.as_ref().map(|t| t.len), Some(5));
    assert_eq!(state.len(), 29);
    let parts = store.inner().multiparts.values().next().unwrap().1.clone();
    assert!(parts.values().all(|p| p.len() as u64 == PART));
    commit(&store, "u1", &state, &digest_of(&data), 29).await.unwrap();
    assert_eq!(store.content(&digest_of(&data)), Bytes::from(data));
    assert!(store.keys("uploads/").is_empty(), "staging removed");
}

#[tokio::test]
async fn the_tail_carries_over_to_the_next_request() {
    let store = FakeParts::default();
    let data: Vec<u8> = (100..125u8).collect();
    let s1 = request(&store, &PartedUpload::new(PART), &[&data[..5]]).await;
    assert!(s1.multipart.is_none() && s1.parts.is_empty(), "under a part: no multipart upload yet");
    assert_eq!(s1.tail, Some(Tail { key: "uploads/u1/tail-5".into(), len: 5 }));
    let s2 = request(&store, &s1, &[&data[5..7]]).await;
    assert_eq!(s2.tail.as_ref().map(|t| t.len), Some(7));
    let s3 = request(&store, &s2, &[&data[7..25]]).await;
    assert_eq!((s3.parts.len(), s3.tail.as_ref().map(|t| t.len)), (3, Some(1)));
    // A request that brings nothing (the final empty PUT) leaves the state as it is.
    let store_before = store.keys("");
    let s4 = request(&store, &s3, &[]).await;
    assert_eq!(s4, s3);
    assert_eq!(store.keys(""), store_before);
    commit(&store, "u1", &s4, &digest_of(&data), 25).await.unwrap();
    assert_eq!(store.content(&digest_of(&data)), Bytes::from(data));
    // Completion deletes the current tail and those it superseded, by key (no listing).
    assert_eq!(s4.superseded, vec!["uploads/u1/tail-5".to_owned(), "uploads/u1/tail-7".to_owned()]);
    assert!(store.keys("uploads/").is_empty(), "staging removed: {:?}", store.keys("uploads/"));
}

#[tokio::test]
async fn an_upload_of_many_unaligned_chunks_still_leaves_no_staging() {
    let store = FakeParts::default();
    let data: Vec<u8> = (0..=255u8).cycle().take(3 * (MAX_SUPERSEDED + 4)).collect();
    let mut state = PartedUpload::new(PART);
    for piece in data.chunks(3) {
        state = request(&store, &state, &[piece]).await;
    }
    assert!(state.superseded_overflow && state.superseded.len() == MAX_SUPERSEDED, "{state:?}");
    commit(&store, "u1", &state, &digest_of(&data), data.len() as u64).await.unwrap();
    assert_eq!(store.content(&digest_of(&data)), Bytes::from(data));
    assert!(store.keys("uploads/").is_empty(), "staging removed");
}

#[tokio::test]
async fn a_killed_request_never_spoils_the_saved_state() {
    let store = FakeParts::default();
    let saved = request(&store, &PartedUpload::new(PART), &[b"abc"]).await;
    let saved_tail = saved.tail.clone().unwrap();
    // A request that uploads a part and stages a new tail, but whose state is never saved
    // (killed before the core saved the session).
    let lost = request(&store, &saved, &[b"xxxxxxxxxxxx"]).await;
    assert_eq!(lost.len(), 15);
    assert_eq!(store.object(&saved_tail.key), Some(Bytes::from_static(b"abc")), "the saved tail is intact");
    // One killed mid-body: bytes written, never finished.
    let mut killed = PartedWriter::open(store.clone(), "u1", saved.clone(), 3).unwrap();
    killed.write_chunk(Bytes::from_static(b"zzzzzzzzzzzzzzzzzzzz")).await.unwrap();
    drop(killed);
    // The client retries from the saved offset with other bytes: its parts replace the lost ones.
    let retried = request(&store, &saved, &[b"0123456789"]).await;
    let data = b"abc0123456789";
    commit(&store, "u1", &retried, &digest_of(data), 13).await.unwrap();
    assert_eq!(store.content(&digest_of(data)), Bytes::from_static(data));
}

#[tokio::test]
async fn completion_with_a_tail_only_parts_only_or_nothing() {
    for data in [&b"small"[..], &b"exactly two parts 16"[..16], &b""[..], &b"one part and a tail"[..]] {
        let store = FakeParts::default();
        let state = request(&store, &PartedUpload::new(PART), &[data]).await;
        assert_eq!(state.tail.is_none(), (data.len() as u64).is_multiple_of(PART), "{data:?}");
        let digest = digest_of(data);
        commit(&store, "u1", &state, &digest, data.len() as u64).await.unwrap();
        assert_eq!(store.content(&digest), Bytes::copy_from_slice(data), "{data:?}");
        assert_eq!(store.keys(""), vec!["data/u1".to_owned()], "only the content stays ({data:?})");
        assert!(store.inner().multiparts.is_empty());
    }
}

#[tokio::test]
async fn reading_back_before_the_commit_is_idempotent() {
    let store = FakeParts::default();
    let data = b"read back, then commit: 27";
    let state = request(&store, &PartedUpload::new(PART), &[data]).await;
    let key = readable(&store, "u1", &state).await.unwrap().unwrap();
    assert_eq!(store.object(&key), Some(Bytes::from_static(data)));
    commit(&store, "u1", &state, &digest_of(data), data.len() as u64).await.unwrap();
    assert_eq!(store.content(&digest_of(data)), Bytes::from_static(data));
    // Under a part, the tail itself is read; nothing is uploaded: nothing to read.
    let small = request(&store, &PartedUpload::new(PART), &[b"tiny"]).await;
    assert_eq!(readable(&store, "u1", &small).await.unwrap(), small.tail.map(|t| t.key));
    assert_eq!(readable(&store, "u1", &PartedUpload::new(PART)).await.unwrap(), None);
}

#[tokio::test]
async fn content_already_stored_stays_and_the_new_copy_goes() {
    let store = FakeParts::default();
    let data = b"same content twice";
    let first = request(&store, &PartedUpload::new(PART), &[data]).await;
    commit(&store, "u1", &first, &digest_of(data), 18).await.unwrap();
    store.inner().pointers.insert(digest_of(data).to_string(), ("data/older".into(), 18));
    let second = request(&store, &PartedUpload::new(PART), &[data]).await;
    commit(&store, "u1", &second, &digest_of(data), 18).await.unwrap();
    assert!(store.object("data/u1").is_none(), "the new copy is removed");
}

#[tokio::test]
async fn abort_removes_everything_and_mismatches_are_refused() {
    let store = FakeParts::default();
    let state = request(&store, &PartedUpload::new(PART), &[b"twenty bytes of data"]).await;
    assert!(PartedWriter::open(store.clone(), "u1", state.clone(), 3).is_err(), "offset the state does not hold");
    let err = commit(&store, "u1", &state, &digest_of(b"x"), 21).await.unwrap_err();
    assert!(err.to_string().contains("stored 20 bytes"), "{err}");
    abort(&store, "u1", state.multipart.as_deref()).await.unwrap();
    assert_eq!(store.keys(""), Vec::<String>::new());
    assert!(store.inner().multiparts.is_empty());
}

#[test]
fn the_state_keeps_the_format_r2_sessions_were_saved_in() {
    let old = r#"{"part_size":8,"multipart":"m","parts":["a"],"tail":{"key":"uploads/u/tail-9","len":1}}"#;
    let state: PartedUpload = decode(old).unwrap();
    assert_eq!(state.len(), 9);
    assert_eq!(encode(&state), old);
    assert!(decode::<PartedUpload>("not json").is_err());
}
