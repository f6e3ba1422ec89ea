//! A first pull that answers while it stores (docs/mirror.md, "First pull"): the upstream's
//! bytes go to the client as they arrive and, through a small bounded pipe, into the same
//! monolithic upload a fetch-then-serve takes, which hashes them and links the blob only if
//! the digest and length check out.
//!
//! No runtime task is spawned (the core has none): the response body drives the storing
//! future itself, in its own `poll_next`. So the client's pace and the store's are one pace
//! (the pipe holds at most [`PIPE_CHUNKS`] chunks: memory stays flat). The body holds back its
//! last chunk until the store has verified and linked the blob: an HTTP server stops polling a
//! body once its Content-Length is sent, so the store must be done before that. A store that
//! fails (wrong digest, short body, storage error) ends the body with an error instead of that
//! last chunk, so the client sees a failed transfer, never a whole body of wrong bytes. A client that hangs up drops the
//! body and with it the unfinished upload: nothing is linked, as when a pushing client hangs up.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::Stream;

use crate::error::{Result, StorageError};
use crate::storage::ByteStream;

/// Chunks handed to the store and not yet taken by it.
pub(crate) const PIPE_CHUNKS: usize = 4;

/// The store's side of the work: takes the pipe's stream, ends when the blob is linked or not.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type Storing = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;
#[cfg(target_arch = "wasm32")]
pub(crate) type Storing = Pin<Box<dyn Future<Output = Result<()>> + 'static>>;

#[derive(Default)]
struct Pipe {
    chunks: VecDeque<std::result::Result<Bytes, StorageError>>,
    closed: bool,
    /// The store, waiting for a chunk.
    reader: Option<Waker>,
    /// The body, waiting for room.
    writer: Option<Waker>,
}

fn lock(pipe: &Mutex<Pipe>) -> std::sync::MutexGuard<'_, Pipe> {
    // Only this module touches the pipe and nothing in it panics while holding the lock.
    pipe.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the store reads: the chunks the body passed on, then the end.
struct PipeReader(Arc<Mutex<Pipe>>);

impl Stream for PipeReader {
    type Item = std::result::Result<Bytes, StorageError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut pipe = lock(&self.0);
        if let Some(chunk) = pipe.chunks.pop_front() {
            if let Some(writer) = pipe.writer.take() {
                writer.wake();
            }
            return Poll::Ready(Some(chunk));
        }
        if pipe.closed {
            return Poll::Ready(None);
        }
        pipe.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for PipeReader {
    /// A store that stopped reading (it failed) must not leave the body waiting for room.
    fn drop(&mut self) {
        let mut pipe = lock(&self.0);
        pipe.closed = true;
        pipe.chunks.clear();
        if let Some(writer) = pipe.writer.take() {
            writer.wake();
        }
    }
}

/// Splits `upstream` into the response body and the stream `start_storing` consumes.
pub(crate) fn tee(upstream: ByteStream, start_storing: impl FnOnce(ByteStream) -> Storing) -> ByteStream {
    let pipe = Arc::new(Mutex::new(Pipe::default()));
    let storing = start_storing(Box::pin(PipeReader(pipe.clone())));
    Box::pin(Tee {
        upstream,
        pipe,
        storing: Some(storing),
        outcome: None,
        held: None,
        upstream_error: None,
        upstream_done: false,
        ended: false,
    })
}

struct Tee {
    upstream: ByteStream,
    pipe: Arc<Mutex<Pipe>>,
    /// None once it has finished, with `outcome`.
    storing: Option<Storing>,
    outcome: Option<Result<()>>,
    /// The last chunk read from the upstream, given to the client when the next one comes, or
    /// after the store's verdict.
    held: Option<Bytes>,
    /// The upstream failed mid-body: said to the client once the store has given up too.
    upstream_error: Option<StorageError>,
    upstream_done: bool,
    ended: bool,
}

impl Tee {
    fn close(&self) {
        let mut pipe = lock(&self.pipe);
        pipe.closed = true;
        if let Some(reader) = pipe.reader.take() {
            reader.wake();
        }
    }

    /// Room for one more chunk (or the store stopped reading: nothing more is passed on);
    /// None: full, and the store wakes the body when it takes one.
    fn room(&self, cx: &Context<'_>) -> Option<()> {
        let mut pipe = lock(&self.pipe);
        if pipe.closed || pipe.chunks.len() < PIPE_CHUNKS {
            return Some(());
        }
        pipe.writer = Some(cx.waker().clone());
        None
    }

    fn pass_on(&self, chunk: std::result::Result<Bytes, StorageError>) {
        let mut pipe = lock(&self.pipe);
        if pipe.closed {
            return;
        }
        pipe.chunks.push_back(chunk);
        if let Some(reader) = pipe.reader.take() {
            reader.wake();
        }
    }
}

impl Stream for Tee {
    type Item = std::result::Result<Bytes, StorageError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            if let Some(storing) = this.storing.as_mut() {
                if let Poll::Ready(outcome) = storing.as_mut().poll(cx) {
                    this.storing = None;
                    this.outcome = Some(outcome);
                }
            }
            if let Some(outcome) = this.outcome.as_ref().filter(|o| o.is_err() || this.upstream_done) {
                // Ends after the held chunk, if any (`ended` makes the next poll the end).
                this.ended = true;
                // The upstream's own failure says more than the upload's view of it.
                let failure = match (this.upstream_error.take(), outcome) {
                    (Some(upstream), _) => upstream.message,
                    (None, Err(e)) => e.message.clone(),
                    (None, Ok(())) => {
                        return Poll::Ready(this.held.take().map(Ok));
                    }
                };
                tracing::warn!(error = %failure, "a first pull through the cache failed; its client's transfer is cut");
                return Poll::Ready(Some(Err(StorageError::new(failure))));
            }
            if this.upstream_done {
                // The store is verifying and linking what it read; its waker is set.
                return Poll::Pending;
            }
            if this.room(cx).is_none() {
                return Poll::Pending;
            }
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.pass_on(Ok(chunk.clone()));
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // The store must see the failure (and abort its upload) before the client does.
                    this.pass_on(Err(StorageError::new(&e.message)));
                    this.close();
                    this.upstream_done = true;
                    this.upstream_error = Some(e);
                }
                Poll::Ready(None) => {
                    this.close();
                    this.upstream_done = true;
                }
            }
        }
    }
}
