//! S3 implementations of berth-core's storage traits.
//!
//! Bucket layout (blob bucket):
//! - `blobs/<algorithm>/<hex>`: a verified blob, as an empty pointer object whose metadata names
//!   the upload's object (written create-only; nothing is copied at the end), or the bytes
//!   themselves for content stored whole (manifests).
//! - `data/<id>`: an upload's object, assembled by the core's parted-upload engine
//!   (`berth_core::parted`); `uploads/<id>/tail-<end>`: bytes not yet big enough for a part
//!   (S3 parts but the last must be >= 5 MiB). Lifecycle rules may expire `uploads/` only.
//!
//! Metadata bucket (may be the same bucket): `meta/<key>`, written with conditional PUTs.

mod blobs;
mod direct;
mod meta;
mod upload;

pub use blobs::S3BlobStore;
pub use meta::S3Meta;

use aws_sdk_s3::error::SdkError;
use berth_core::StorageError;

/// The HTTP status S3 answered with, when the request got that far.
fn status_of<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn storage_error<E: std::error::Error + 'static>(
    what: &str,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError {
    StorageError::new(format!("S3 {what}: {}", aws_sdk_s3::error::DisplayErrorContext(&err)))
}

/// An S3 body as the core's byte stream.
fn byte_stream(body: aws_sdk_s3::primitives::ByteStream) -> berth_core::ByteStream {
    Box::pin(futures_util::stream::unfold(body, |mut body| async move {
        match body.next().await {
            Some(Ok(chunk)) => Some((Ok(chunk), body)),
            Some(Err(e)) => Some((Err(StorageError::new(format!("S3 read: {e}"))), body)),
            None => None,
        }
    }))
}

/// A client and the bucket it works on.
#[derive(Clone)]
pub struct Bucket {
    pub client: aws_sdk_s3::Client,
    pub name: String,
}
