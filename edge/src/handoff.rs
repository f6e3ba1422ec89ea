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
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{stream, StreamExt};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::web_sys::{ReadableStream, ReadableStreamDefaultReader};

/// One per request: at most one body is parked at a time.
#[derive(Clone, Default)]
pub struct BodyHandoff(
    Rc<RefCell<Option<ReadableStream>>>,
    Rc<std::cell::Cell<bool>>,
);

impl BodyHandoff {
    /// Marks the parked body as served from the Workers cache (reported as `X-Berth-Cache: hit`).
    pub fn mark_cache_hit(&self) {
        self.1.set(true);
    }

    pub fn cache_hit(&self) -> bool {
        self.1.get()
    }

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
///
/// Reads through its own reader instead of `wasm_streams`, which cancels the stream when dropped
/// from a task that runs after the response went out: a request body the core did not read to
/// the end (a 404 or a 413) then throws "Can't read from request stream after response has been
/// sent" in workerd. This reader is taken only on the first poll and released, synchronously,
/// on drop; the runtime discards whatever was not read.
pub fn from_js(raw: ReadableStream) -> ByteStream {
    Box::pin(JsBytes {
        stream: raw,
        reader: None,
        pending: None,
        done: false,
    })
}

struct JsBytes {
    stream: ReadableStream,
    reader: Option<ReadableStreamDefaultReader>,
    pending: Option<JsFuture>,
    done: bool,
}

impl futures_util::Stream for JsBytes {
    type Item = Result<Bytes, StorageError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.reader.is_none() {
            match this
                .stream
                .get_reader()
                .dyn_into::<ReadableStreamDefaultReader>()
            {
                Ok(reader) => this.reader = Some(reader),
                Err(_) => return this.fail("stream: no default reader".into()),
            }
        }
        let Some(reader) = this.reader.as_ref() else {
            return Poll::Ready(None);
        };
        let pending = this
            .pending
            .get_or_insert_with(|| JsFuture::from(reader.read()));
        let result = match Pin::new(pending).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        this.pending = None;
        let chunk = match result {
            Ok(chunk) => chunk,
            Err(e) => {
                return this.fail(format!(
                    "stream: {}",
                    e.as_string().unwrap_or_else(|| format!("{e:?}"))
                ))
            }
        };
        let done = js_sys::Reflect::get(&chunk, &"done".into())
            .map(|d| d.is_truthy())
            .unwrap_or(true);
        if done {
            this.done = true;
            return Poll::Ready(None);
        }
        match js_sys::Reflect::get(&chunk, &"value".into())
            .map(|v| v.dyn_into::<js_sys::Uint8Array>())
        {
            Ok(Ok(bytes)) => Poll::Ready(Some(Ok(Bytes::from(bytes.to_vec())))),
            _ => this.fail("stream: a chunk that is not bytes".into()),
        }
    }
}

impl JsBytes {
    fn fail(&mut self, message: String) -> Poll<Option<Result<Bytes, StorageError>>> {
        self.done = true;
        Poll::Ready(Some(Err(StorageError::new(message))))
    }
}

impl Drop for JsBytes {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.release_lock();
        }
    }
}
