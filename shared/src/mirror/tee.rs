//! A first pull that answers while it stores (docs/mirror.md, "First pull"): the upstream's
//! bytes go to the client as they arrive and, through a bounded channel (futures-channel's mpsc), into the same
//! monolithic upload a fetch-then-serve takes, which hashes them and links the blob only if
//! the digest and length check out.
//!
//! No runtime task is spawned (the core has none): the response body drives the storing
//! future itself, in its own `poll_next`. So the client's pace and the store's are one pace
//! (the channel holds at most [`PIPE_CHUNKS`] chunks: memory stays flat). The body holds back its
//! last chunk until the store has verified and linked the blob: an HTTP server stops polling a
//! body once its Content-Length is sent, so the store must be done before that. A store that
//! fails (wrong digest, short body, storage error) ends the body with an error instead of that
//! last chunk, so the client sees a failed transfer, never a whole body of wrong bytes. A client that hangs up drops the
//! body and with it the unfinished upload: nothing is linked, as when a pushing client hangs up.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::Stream;

use crate::error::{Result, StorageError};
use crate::storage::ByteStream;

/// Chunks handed to the store and not yet taken by it (the channel's buffer, plus the one
/// slot its single sender has).
pub(crate) const PIPE_CHUNKS: usize = 4;

/// The store's side of the work: takes the pipe's stream, ends when the blob is linked or not.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type Storing = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;
#[cfg(target_arch = "wasm32")]
pub(crate) type Storing = Pin<Box<dyn Future<Output = Result<()>> + 'static>>;

type Chunk = std::result::Result<Bytes, StorageError>;

/// Splits `upstream` into the response body and the stream `start_storing` consumes.
pub(crate) fn tee(upstream: ByteStream, start_storing: impl FnOnce(ByteStream) -> Storing) -> ByteStream {
    let (to_store, piped) = mpsc::channel::<Chunk>(PIPE_CHUNKS - 1);
    let storing = start_storing(Box::pin(piped));
    Box::pin(Tee {
        upstream,
        to_store: Some(to_store),
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
    /// None once the upstream has ended (the store then sees the end), or the store stopped
    /// reading (it finished or failed: nothing more is passed on).
    to_store: Option<mpsc::Sender<Chunk>>,
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
    /// Passes a chunk on; a store that stopped reading gets nothing more. Call after
    /// `poll_ready` said there is room.
    fn pass_on(&mut self, chunk: Chunk) {
        if let Some(to_store) = self.to_store.as_mut() {
            if to_store.start_send(chunk).is_err() {
                self.to_store = None;
            }
        }
    }
}

impl Stream for Tee {
    type Item = Chunk;

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
            // Room for one more chunk; full: the store wakes the body when it takes one.
            if let Some(to_store) = this.to_store.as_mut() {
                match to_store.poll_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => this.to_store = None,
                }
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
                    this.to_store = None;
                    this.upstream_done = true;
                    this.upstream_error = Some(e);
                }
                Poll::Ready(None) => {
                    this.to_store = None;
                    this.upstream_done = true;
                }
            }
        }
    }
}
