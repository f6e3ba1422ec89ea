//! A seam for CPU-heavy work (Argon2 password checks, tens of milliseconds each). The core has
//! no threads: an adapter with a thread pool (berth serve: tokio's blocking pool) supplies a
//! [`CpuPool`] so a burst of logins cannot stall the async workers serving everything else.
//! Without one (the Worker, Lambda: one request per isolate or instance at a time) the work
//! runs inline.

use crate::storage::MaybeSendSync;

/// One password check: true when the password matches.
pub type CpuJob = Box<dyn FnOnce() -> bool + Send + 'static>;

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait CpuPool: MaybeSendSync {
    /// Runs `job` off the request's executor and returns its answer. A job that cannot run
    /// (the pool is shut down, the job panicked) counts as a failed check: false.
    async fn run(&self, job: CpuJob) -> bool;
}

/// Runs `job` on the pool if there is one, else here.
pub(crate) async fn run(pool: Option<&dyn CpuPool>, job: CpuJob) -> bool {
    match pool {
        Some(pool) => pool.run(job).await,
        None => job(),
    }
}
