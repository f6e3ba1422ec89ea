//! Request and response bodies as the core sees them: a stream in, bytes or a stream out.

use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::{oci, ErrorCode, Result};
use crate::storage::ByteStream;

/// A response body. Adapters turn it into their runtime's body type.
pub enum Body {
    Empty,
    Full(Bytes),
    Stream(ByteStream),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Full(b) => write!(f, "Body::Full({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

/// An empty request body, for requests built without one.
pub fn empty_stream() -> ByteStream {
    Box::pin(futures_util::stream::empty())
}

/// Reads a small body (a manifest) whole, refusing more than `limit` bytes with 413.
pub async fn read_limited(mut body: ByteStream, limit: usize) -> Result<Bytes> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            oci(ErrorCode::ManifestInvalid, format!("could not read the request body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(oci(
                ErrorCode::SizeInvalid,
                format!("manifest is larger than the {limit} bytes this registry accepts"),
            )
            .with_status(http::StatusCode::PAYLOAD_TOO_LARGE));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
