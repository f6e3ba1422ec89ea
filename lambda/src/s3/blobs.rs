//! `BlobStore` on S3: verified blobs under `blobs/`, uploads under `uploads/`, GETs answered
//! with presigned URLs.

use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use berth_core::names::Digest;
use berth_core::storage::{is_after, stored_digest, StorageResult};
use berth_core::{BlobStore, ByteRange, ByteStream, DirectLimits, StorageError, StoredBlob, UploadWriter};
use bytes::Bytes;

use berth_core::parted::{self, data_key, PartStore, PartedUpload, PartedWriter};

use super::upload::{UploadState, MIN_PART_BYTES};
use super::{byte_stream, status_of, storage_error, Bucket};
use crate::config::Settings;

/// Metadata of a pointer object: where the blob's bytes are, and how many.
pub(super) const META_DATA_KEY: &str = "berth-data";
pub(super) const META_SIZE: &str = "berth-size";

pub struct S3BlobStore {
    pub(super) bucket: Bucket,
    /// In a region other than the home region of a multi-region deployment: the home region's
    /// bucket, which every push through the global URL writes to. Content that replication has
    /// not brought here yet is read from there (docs/deploy-consistency.md).
    home: Option<Bucket>,
    redirect_expiry: Duration,
    pub(super) part_url_expiry: Duration,
}

/// Where a verified blob's bytes are.
struct Location {
    key: String,
    size: u64,
    /// In the home region's bucket rather than this region's.
    at_home: bool,
}

/// Signed for the request's time, not the clock's: the core owns time.
pub(super) fn presigning(now: u64, expiry: Duration) -> StorageResult<PresigningConfig> {
    PresigningConfig::builder()
        .start_time(UNIX_EPOCH + Duration::from_secs(now))
        .expires_in(expiry)
        .build()
        .map_err(|e| StorageError::new(format!("presigning config: {e}")))
}

/// Where `digest`'s bytes are in `bucket`: a pointer's target, or the object itself.
async fn locate_in(bucket: &Bucket, digest: &Digest, at_home: bool) -> StorageResult<Option<Location>> {
    let key = blob_key(digest);
    let head = bucket.client.head_object().bucket(&bucket.name).key(&key).send().await;
    let out = match head {
        Ok(out) => out,
        Err(e) if status_of(&e) == Some(404) => return Ok(None),
        Err(e) => return Err(storage_error("HEAD blob", e)),
    };
    let meta = out.metadata();
    let pointed = meta.and_then(|m| m.get(META_DATA_KEY)).cloned();
    let size = meta.and_then(|m| m.get(META_SIZE)).and_then(|s| s.parse::<u64>().ok());
    Ok(Some(match (pointed, size) {
        (Some(data), Some(size)) => Location { key: data, size, at_home },
        _ => Location { key, size: out.content_length.unwrap_or(0).max(0) as u64, at_home },
    }))
}

pub(super) fn blob_key(digest: &Digest) -> String {
    // `sha256:abc` -> `blobs/sha256/abc`
    format!("blobs/{}", digest.to_string().replacen(':', "/", 1))
}

impl S3BlobStore {
    pub fn new(sdk: &aws_config::SdkConfig, settings: &Settings) -> Self {
        S3BlobStore {
            bucket: Bucket { client: settings.s3_client(sdk, None), name: settings.bucket.clone() },
            home: settings
                .home_bucket
                .as_ref()
                .map(|name| Bucket { client: settings.home_client(sdk), name: name.clone() }),
            redirect_expiry: settings.redirect_expiry,
            part_url_expiry: settings.part_url_expiry,
        }
    }

    /// This region's copy first, then the home region's.
    async fn locate(&self, digest: &Digest) -> StorageResult<Option<Location>> {
        let Some(home) = &self.home else {
            return locate_in(&self.bucket, digest, false).await;
        };
        if let Some(location) = locate_in(&self.bucket, digest, false).await? {
            // Replication copies a pointer and the data it names independently: outside the
            // home region, trust a local pointer only once its data is here too.
            if location.key == blob_key(digest) || self.exists_here(&location.key).await? {
                return Ok(Some(location));
            }
        }
        locate_in(home, digest, true).await
    }

    async fn exists_here(&self, key: &str) -> StorageResult<bool> {
        match self.bucket.client.head_object().bucket(&self.bucket.name).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(storage_error("HEAD replicated data", e)),
        }
    }

    /// A whole blob in as few requests as it takes: `blobs/<digest>` is the content itself (a
    /// manifest, a small blob) or a pointer, whose target is read next. One GET for small
    /// content instead of a HEAD and a GET. In the home region's bucket only: elsewhere a local
    /// pointer is trusted only once its data is here too (`locate`).
    async fn read_whole(&self, digest: &Digest) -> StorageResult<Option<ByteStream>> {
        let bucket = &self.bucket;
        let key = blob_key(digest);
        let got = bucket.client.get_object().bucket(&bucket.name).key(&key).send().await;
        let out = match got {
            Ok(out) => out,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(storage_error("GET blob", e)),
        };
        let Some(data) = out.metadata().and_then(|m| m.get(META_DATA_KEY)).cloned() else {
            return Ok(Some(byte_stream(out.body)));
        };
        let got = bucket.client.get_object().bucket(&bucket.name).key(&data).send().await;
        match got {
            Ok(out) => Ok(Some(byte_stream(out.body))),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(storage_error("GET blob data", e)),
        }
    }

    fn bucket_of(&self, location: &Location) -> &Bucket {
        match (&self.home, location.at_home) {
            (Some(home), true) => home,
            _ => &self.bucket,
        }
    }

    async fn presign_get(&self, location: &Location, now: u64) -> StorageResult<String> {
        let bucket = self.bucket_of(location);
        let presigned = bucket
            .client
            .get_object()
            .bucket(&bucket.name)
            .key(&location.key)
            .presigned(presigning(now, self.redirect_expiry)?)
            .await
            .map_err(|e| storage_error("presign GET", e))?;
        Ok(presigned.uri().to_owned())
    }
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        Ok(self.locate(digest).await?.map(|l| l.size))
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> StorageResult<Option<ByteStream>> {
        if range.is_none() && self.home.is_none() {
            return self.read_whole(digest).await;
        }
        let Some(location) = self.locate(digest).await? else {
            return Ok(None);
        };
        if location.size == 0 || range.is_some_and(|r| r.start >= r.end) {
            return Ok(Some(Box::pin(futures_util::stream::empty())));
        }
        let bucket = self.bucket_of(&location);
        let got = bucket
            .client
            .get_object()
            .bucket(&bucket.name)
            .key(&location.key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.start, r.end - 1)))
            .send()
            .await;
        match got {
            Ok(out) => Ok(Some(byte_stream(out.body))),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(storage_error("GET blob", e)),
        }
    }

    async fn put_verified(&self, digest: &Digest, content: Bytes) -> StorageResult<()> {
        self.bucket
            .client
            .put_object()
            .bucket(&self.bucket.name)
            .key(blob_key(digest))
            .body(S3Body::from(content))
            .send()
            .await
            .map_err(|e| storage_error("PUT blob", e))?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<()> {
        // This region's copy only: the home region's is the home region's to delete.
        if let Some(location) = locate_in(&self.bucket, digest, false).await? {
            PartStore::delete(&self.bucket, &location.key).await?;
        }
        PartStore::delete(&self.bucket, &blob_key(digest)).await
    }

    /// This region's bucket only (each bucket is collected on its own). Keys `blobs/<alg>/<hex>`
    /// list in digest order (`/` and `:` compare alike for sha256 and sha512). An empty object
    /// may be a pointer to an upload's data (ListObjectsV2 carries no metadata): those are
    /// HEADed for their size.
    async fn list_blobs(&self, after: Option<&Digest>, limit: usize) -> StorageResult<Vec<StoredBlob>> {
        const LIST_PAGE: usize = 1000;
        let mut found = Vec::new();
        let mut start_after = after.map(blob_key);
        while found.len() < limit {
            let out = self
                .bucket
                .client
                .list_objects_v2()
                .bucket(&self.bucket.name)
                .prefix("blobs/")
                .set_start_after(start_after.clone())
                .max_keys((limit - found.len()).min(LIST_PAGE) as i32)
                .send()
                .await
                .map_err(|e| storage_error("LIST blobs", e))?;
            for object in out.contents() {
                let Some(key) = object.key() else { continue };
                start_after = Some(key.to_owned());
                let name = key.strip_prefix("blobs/").unwrap_or_default().replacen('/', ":", 1);
                let Some(digest) = stored_digest(&name).filter(|_| is_after(&name, after)) else { continue };
                let size = match object.size().unwrap_or(0) {
                    0 => match locate_in(&self.bucket, &digest, false).await? {
                        Some(location) => location.size,
                        None => continue, // deleted since the listing
                    },
                    size => size as u64,
                };
                found.push(StoredBlob { digest, size });
            }
            if !out.is_truncated().unwrap_or(false) || out.contents().is_empty() {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Every blob GET is a presigned redirect: the function's response could not carry a layer.
    fn redirects(&self) -> bool {
        true
    }

    async fn redirect_url(&self, digest: &Digest, now: u64) -> StorageResult<Option<String>> {
        let Some(location) = self.locate(digest).await? else {
            return Ok(None);
        };
        self.presign_get(&location, now).await.map(Some)
    }

    async fn upload_start(&self, _id: &str) -> StorageResult<String> {
        // The multipart upload starts with the first full part: most uploads through the
        // function (configs, small layers) never need one.
        Ok(UploadState { upload: PartedUpload::new(MIN_PART_BYTES as u64), ..Default::default() }.encode())
    }

    async fn upload_writer(&self, id: &str, backend: &str, offset: u64) -> StorageResult<Box<dyn UploadWriter>> {
        let state = UploadState::parse(backend)?;
        if state.direct {
            return Err(StorageError::new(format!("upload {id} is a direct upload: its parts go to S3")));
        }
        Ok(Box::new(PartedWriter::open(self.bucket.clone(), id, state.upload, offset)?))
    }

    async fn upload_read(&self, id: &str, backend: &str) -> StorageResult<ByteStream> {
        let state = UploadState::parse(backend)?;
        let key = if state.direct {
            // Completed by `direct_complete`: the whole object is in place.
            Some(data_key(id))
        } else {
            parted::readable(&self.bucket, id, &state.upload).await?
        };
        let Some(key) = key else {
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        let got = self
            .bucket
            .client
            .get_object()
            .bucket(&self.bucket.name)
            .key(key)
            .send()
            .await
            .map_err(|e| storage_error("GET upload", e))?;
        Ok(byte_stream(got.body))
    }

    async fn upload_commit(&self, id: &str, backend: &str, digest: &Digest, size: u64) -> StorageResult<()> {
        let state = UploadState::parse(backend)?;
        if state.direct {
            // Assembled by `direct_complete` already; parts went to storage, nothing was staged.
            return parted::publish(&self.bucket, id, digest, size).await;
        }
        parted::commit(&self.bucket, id, &state.upload, digest, size).await
    }

    async fn upload_abort(&self, id: &str, backend: &str) -> StorageResult<()> {
        let state = UploadState::parse(backend)?;
        let open = state.upload.multipart.as_deref().filter(|_| !state.complete);
        parted::abort(&self.bucket, id, open).await
    }

    fn direct_limits(&self) -> Option<DirectLimits> {
        Some(super::direct::LIMITS)
    }

    async fn direct_start(&self, id: &str, backend: &str) -> StorageResult<String> {
        self.start_direct(id, backend).await
    }

    async fn direct_part_urls(
        &self,
        id: &str,
        backend: &str,
        first: u32,
        count: u32,
        now: u64,
    ) -> StorageResult<(Vec<String>, u64)> {
        self.presign_parts(id, backend, first, count, now).await
    }

    async fn direct_complete(&self, id: &str, backend: &str) -> StorageResult<(String, u64)> {
        self.finish_direct(id, backend).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(expiry: u64) -> S3BlobStore {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new("AKID", "SECRET", None, None, "test"))
            .endpoint_url("http://127.0.0.1:1")
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        S3BlobStore {
            bucket: Bucket { client: client.clone(), name: "b".into() },
            home: Some(Bucket { client, name: "home".into() }),
            redirect_expiry: Duration::from_secs(expiry),
            part_url_expiry: Duration::from_secs(expiry),
        }
    }

    #[tokio::test]
    async fn content_still_at_home_is_presigned_from_the_home_bucket() {
        let store = store(120);
        let here = Location { key: "data/1".into(), size: 1, at_home: false };
        let home = Location { key: "data/1".into(), size: 1, at_home: true };
        assert!(store.presign_get(&here, 1_000_000_000).await.unwrap().starts_with("http://127.0.0.1:1/b/data/1?"));
        assert!(store.presign_get(&home, 1_000_000_000).await.unwrap().starts_with("http://127.0.0.1:1/home/data/1?"));
    }

    #[tokio::test]
    async fn presigned_urls_use_the_time_passed_in() {
        // 2001-09-09T01:46:40Z
        let url = store(120)
            .presign_get(&Location { key: "blobs/sha256/ab".into(), size: 0, at_home: false }, 1_000_000_000)
            .await
            .unwrap();
        assert!(url.starts_with("http://127.0.0.1:1/b/blobs/sha256/ab?"), "{url}");
        assert!(url.contains("X-Amz-Date=20010909T014640Z"), "{url}");
        assert!(url.contains("X-Amz-Expires=120"), "{url}");
        let later = store(120)
            .presign_get(&Location { key: "blobs/sha256/ab".into(), size: 0, at_home: false }, 1_000_000_060)
            .await
            .unwrap();
        assert!(later.contains("X-Amz-Date=20010909T014740Z"), "{later}");
    }

    /// The storage contract (berth_core::contract) on S3, when BERTH_CONTRACT_S3 is set and the
    /// function's settings (BERTH_BUCKET, BERTH_S3_ENDPOINT, BERTH_META_BUCKET,
    /// BERTH_META_S3_ENDPOINT, BERTH_UPLOAD_SECRET) name a local S3: tests/lambda/run.sh
    /// (step `contract`) runs it against s3s-fs (blobs) and moto (metadata).
    #[tokio::test]
    async fn s3_stores_keep_the_storage_contract() {
        if std::env::var_os("BERTH_CONTRACT_S3").is_none() {
            eprintln!("skipped: BERTH_CONTRACT_S3 is not set");
            return;
        }
        let settings = crate::config::Settings::from_env().expect("settings from the environment");
        let sdk = settings.sdk_config().await;
        let blobs = S3BlobStore::new(&sdk, &settings);
        berth_core::contract::blob_store_contract(&blobs).await.unwrap();
        // A blob published as a pointer (what a multipart upload leaves) lists with its size.
        let content = Bytes::from_static(b"berth contract: content behind a pointer");
        let digest: Digest = berth_core::hash::sha256_of(&content).parse().unwrap();
        let bucket = &blobs.bucket;
        let put = bucket.client.put_object().bucket(&bucket.name).key(data_key("contractptr"));
        put.body(S3Body::from(content.clone())).send().await.unwrap();
        assert!(bucket.link(&digest, &data_key("contractptr"), content.len() as u64).await.unwrap());
        // Create-only: a second pointer for the same digest is refused.
        assert!(!bucket.link(&digest, &data_key("other"), 1).await.unwrap());
        let before = format!("sha256:{}", "0".repeat(64)).parse::<Digest>().ok();
        let listed = blobs.list_blobs(before.as_ref(), 1000).await.unwrap();
        let entry = listed.iter().find(|b| b.digest == digest).expect("the pointer's blob is listed");
        assert_eq!(entry.size, content.len() as u64);
        blobs.delete(&digest).await.unwrap();
        assert!(blobs.stat(&digest).await.unwrap().is_none());
        let meta = crate::s3::S3Meta::new(&sdk, &settings);
        berth_core::contract::meta_store_contract(&meta).await.unwrap();
    }
}
