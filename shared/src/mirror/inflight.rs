//! One upstream fetch per blob at a time in one process (or Worker isolate): when many clients
//! pull the same new image at once (a rollout across nodes), the first fetches each layer and
//! the others wait for it, then read what it stored. Runtime-agnostic: a mutex and wakers, no
//! timer and no task. Across processes or isolates each may still fetch once; the store keeps
//! one copy either way.
//!
//! The lead counts the bytes it has read ([`Lead::progress`]). A first pull answered while it
//! is stored goes at its client's pace, so a client that reads slowly (or an attacker that
//! does) would hold every waiter; a waiter that sees less than [`MIN_PROGRESS`] bytes in
//! [`STALL_SECS`] stops waiting and fetches alone (`Registry::mirror_blob`). Sharing is only a
//! saving: a waiter that fetches alone costs one more upstream read, nothing else.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::RegistryError;

/// How a finished fetch ended, for those who waited on it.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// Stored (or the upstream has no such blob): look in the store.
    Done,
    /// Failed: the waiters answer with the same error instead of each trying again (a hung
    /// upstream would otherwise cost each of them the whole timeout, one after the other).
    Failed(RegistryError),
    /// The fetching request went away (its client hung up): a waiter fetches itself.
    Abandoned,
}

/// How long a waiter watches the lead before judging its pace.
pub(crate) const STALL_SECS: u64 = 10;
/// Bytes the lead must read in [`STALL_SECS`] to keep its waiters (100 KB/s).
pub(crate) const MIN_PROGRESS: u64 = 1_000_000;

#[derive(Default)]
struct Signal {
    state: Mutex<(Option<Outcome>, Vec<Waker>)>,
    /// Bytes the lead has read from the upstream.
    read: AtomicU64,
}

/// Where the lead counts what it reads.
#[derive(Clone)]
pub(crate) struct Progress(Arc<Signal>);

impl Progress {
    pub(crate) fn add(&self, bytes: usize) {
        self.0.read.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct InFlight {
    fetches: Mutex<HashMap<String, Arc<Signal>>>,
}

/// Whose turn it is to fetch.
pub(crate) enum Turn {
    /// Fetch, then [`Lead::finish`]; dropping the lead unfinished counts as abandoned.
    Lead(Lead),
    /// Another request is fetching: await this.
    Follow(Wait),
}

/// Owns its table, so a lead can live in a response body that outlives the request (the tee).
pub(crate) struct Lead {
    owner: Arc<InFlight>,
    key: String,
    signal: Arc<Signal>,
    outcome: Option<Outcome>,
}

impl InFlight {
    pub(crate) fn turn(self: &Arc<Self>, key: &str) -> Turn {
        let Ok(mut fetches) = self.fetches.lock() else {
            // A poisoned lock only loses the sharing: fetch alone.
            return Turn::Lead(self.alone());
        };
        if let Some(signal) = fetches.get(key) {
            return Turn::Follow(Wait(signal.clone()));
        }
        let signal = Arc::new(Signal::default());
        fetches.insert(key.to_owned(), signal.clone());
        Turn::Lead(Lead { owner: self.clone(), key: key.to_owned(), signal, outcome: None })
    }
}

impl InFlight {
    /// A lead no one waits for (not in the table): a waiter that gave up on a slow lead.
    pub(crate) fn alone(self: &Arc<Self>) -> Lead {
        Lead { owner: self.clone(), key: String::new(), signal: Arc::default(), outcome: None }
    }
}

impl Lead {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }

    pub(crate) fn progress(&self) -> Progress {
        Progress(self.signal.clone())
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if let Ok(mut fetches) = self.owner.fetches.lock() {
            if fetches.get(&self.key).is_some_and(|s| Arc::ptr_eq(s, &self.signal)) {
                fetches.remove(&self.key);
            }
        }
        let wakers = match self.signal.state.lock() {
            Ok(mut state) => {
                state.0 = Some(self.outcome.take().unwrap_or(Outcome::Abandoned));
                std::mem::take(&mut state.1)
            }
            Err(_) => Vec::new(),
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Resolves when the leading fetch has finished.
pub(crate) struct Wait(Arc<Signal>);

impl Wait {
    /// Bytes the lead has read so far.
    pub(crate) fn read(&self) -> u64 {
        self.0.read.load(Ordering::Relaxed)
    }
}

impl Future for Wait {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let Ok(mut state) = self.0.state.lock() else { return Poll::Ready(Outcome::Abandoned) };
        if let Some(outcome) = &state.0 {
            return Poll::Ready(outcome.clone());
        }
        if !state.1.iter().any(|w| w.will_wake(cx.waker())) {
            state.1.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
