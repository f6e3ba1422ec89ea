//! Lets a blob's R2 body reach the client without passing through Rust.
//!
//! The core returns blob and manifest content as a Rust `ByteStream`. Pumping every chunk from
//! JavaScript into wasm and back costs Worker CPU time (what Workers bill) for no gain, so the
//! store parks the raw R2 `ReadableStream` here and returns a stream that would only read it if
//! polled. The response translation takes the parked stream and hands it to the runtime as is.
//! If nobody takes it, the returned stream still works: it reads the parked body itself.

use std::cell::RefCell;
use std::rc::Rc;

use berth_core::{ByteStream, StorageError};
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use worker::web_sys::ReadableStream;

/// One per request: at most one body is parked at a time.
#[derive(Clone, Default)]
pub struct BodyHandoff(Rc<RefCell<Option<ReadableStream>>>);

impl BodyHandoff {
    /// Parks `raw` and returns a stream over it for callers that do read it in Rust.
    pub fn park(&self, raw: ReadableStream) -> ByteStream {
        *self.0.borrow_mut() = Some(raw);
        let slot = self.clone();
        let lazy = stream::once(async move { slot.take() })
            .map(|raw| match raw {
                Some(raw) => from_js(raw),
                // Already handed to the runtime: this stream is not the response body any more.
                None => Box::pin(stream::empty()) as ByteStream,
            })
            .flatten();
        Box::pin(lazy)
    }

    /// The parked body, if the store parked one for this request and nobody read it yet.
    pub fn take(&self) -> Option<ReadableStream> {
        self.0.borrow_mut().take()
    }
}

/// A JavaScript byte stream as the core's `ByteStream`.
pub fn from_js(raw: ReadableStream) -> ByteStream {
    Box::pin(
        worker::ByteStream::from(raw)
            .map_ok(Bytes::from)
            .map_err(|e| StorageError::new(format!("stream: {e}"))),
    )
}
