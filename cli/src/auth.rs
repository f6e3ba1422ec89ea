//! Auth for `berth serve`: reads the auth config file, resolves key files, and gives the core
//! an HTTP client for OIDC issuers' keys. Every rule of auth itself lives in berth-core.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use berth_core::auth::{Auth, AuthConfig, CpuJob, CpuPool};
use berth_core::native::ReqwestFetch;
use berth_core::policy::Policies;

/// Loads and checks the auth config; a bad file stops start-up with the reason. Returns the
/// config too: its `[policies]` apply (see `policies`).
pub fn load(path: &Path, scheme: &'static str) -> Result<(Auth, AuthConfig), String> {
    let config = read_config(path)?;
    let auth = Auth::new(&config)?.with_default_scheme(scheme).with_cpu_pool(Box::new(BlockingPool::new()));
    // Only OIDC trust needs outbound HTTPS (and the system's CA certificates).
    if config.oidc.is_empty() {
        return Ok((auth, config));
    }
    Ok((auth.with_fetcher(Box::new(ReqwestFetch::new()?)), config))
}

/// The tag and retention policies: the auth config's `[policies]`, or a policies-only file
/// (`--policy-config`, for a registry without auth). A bad file stops start-up.
pub fn policies(auth: Option<&AuthConfig>, policy_file: Option<&Path>) -> Result<Policies, String> {
    let text = match policy_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?),
        None => None,
    };
    let at = |e: String| match policy_file {
        Some(path) => format!("{}: {e}", path.display()),
        None => e,
    };
    Policies::from_settings(auth, text.as_deref()).map_err(at)
}

/// Password checks (Argon2, tens of ms each) on tokio's blocking threads, at most one per core
/// at a time: a burst of logins waits its turn there instead of stalling the async workers
/// that serve every other request.
pub struct BlockingPool {
    permits: Arc<tokio::sync::Semaphore>,
}

impl BlockingPool {
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        BlockingPool { permits: Arc::new(tokio::sync::Semaphore::new(cores)) }
    }
}

#[async_trait::async_trait]
impl CpuPool for BlockingPool {
    async fn run(&self, job: CpuJob) -> bool {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(job).await.unwrap_or(false)
    }
}

/// The config with `private_key_file` entries read (paths relative to the config file).
pub fn read_config(path: &Path) -> Result<AuthConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut config = AuthConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for key in &mut config.token.keys {
        if let (None, Some(file)) = (&key.private_key, &key.private_key_file) {
            let file = relative_to(path, file);
            let secret = std::fs::read_to_string(&file)
                .map_err(|e| format!("key {:?}: cannot read {}: {e}", key.kid, file.display()))?;
            key.private_key = Some(secret.trim().to_owned());
        }
    }
    Ok(config)
}

pub fn relative_to(config: &Path, file: &str) -> PathBuf {
    let file = Path::new(file);
    if file.is_absolute() {
        return file.to_path_buf();
    }
    config.parent().unwrap_or(Path::new(".")).join(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// With one async worker, a password check on the pool must not stop other tasks: before
    /// the pool, Argon2 ran on the worker and everything else waited for it.
    #[test]
    fn password_checks_leave_the_async_workers_free() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let pool = BlockingPool::new();
            let start = Instant::now();
            let slow = tokio::spawn(async move {
                pool.run(Box::new(|| {
                    std::thread::sleep(Duration::from_millis(400));
                    true
                }))
                .await
            });
            let quick = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                start.elapsed()
            });
            let quick = quick.await.unwrap();
            assert!(slow.await.unwrap());
            assert!(quick < Duration::from_millis(300), "a 10 ms task took {quick:?}");
        });
    }
}
