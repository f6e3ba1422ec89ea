//! Limits on failed logins, per client address and per account, checked before any password
//! work (Argon2). Counts live in memory in this [`super::Auth`]: per process for berth serve,
//! per isolate for a Worker, per instance for Lambda; not global. Time is the request's `now`.
//!
//! Fixed windows: the first failure opens a window of `window_secs`; once a key has
//! `max_failures_*` failures in it, every attempt for that key is answered 429 with
//! `Retry-After` until the window closes. An attempt counts when it starts (so a burst of
//! concurrent guesses cannot all slip in before the first one fails) and is given back when
//! the credentials turn out right.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::Digest as _;

use super::config::LoginConfig;

/// Keys remembered at most. When full, closed windows go first, then the oldest half, so
/// memory stays bounded whatever names and addresses are sent.
const MAX_TRACKED: usize = 16 * 1024;

pub(crate) struct LoginLimits {
    per_client: u32,
    per_account: u32,
    window_secs: u64,
    /// sha256 of the key ("client" or "account", then the value): fixed size whatever is sent.
    windows: Mutex<HashMap<[u8; 32], Window>>,
}

#[derive(Clone, Copy)]
struct Window {
    start: u64,
    count: u32,
}

impl LoginLimits {
    pub fn new(config: &LoginConfig) -> Self {
        LoginLimits {
            per_client: config.max_failures_per_client,
            per_account: config.max_failures_per_account,
            window_secs: config.window_secs.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn keys(&self, client: &str, account: &str) -> Vec<([u8; 32], u32)> {
        let key = |kind: &str, value: &str| -> [u8; 32] {
            let mut h = sha2::Sha256::new();
            h.update(kind.as_bytes());
            h.update([0]);
            h.update(value.as_bytes());
            h.finalize().into()
        };
        let mut keys = Vec::with_capacity(2);
        // Without an address (an adapter that supplies none) every client would share one key.
        if self.per_client > 0 && client != "-" {
            keys.push((key("client", client), self.per_client));
        }
        if self.per_account > 0 {
            keys.push((key("account", account), self.per_account));
        }
        keys
    }

    /// Counts a login attempt, or refuses it: Err(seconds until the client or the account may
    /// try again).
    pub fn attempt(&self, client: &str, account: &str, now: u64) -> Result<(), u64> {
        let keys = self.keys(client, account);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let open = |w: &Window| now < w.start.saturating_add(self.window_secs);
        let wait = keys
            .iter()
            .filter_map(|(key, limit)| windows.get(key).filter(|w| open(w) && w.count >= *limit))
            .map(|w| w.start.saturating_add(self.window_secs).saturating_sub(now).max(1))
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if windows.len() + keys.len() > MAX_TRACKED {
            windows.retain(|_, w| open(w));
            if windows.len() + keys.len() > MAX_TRACKED {
                let mut starts: Vec<u64> = windows.values().map(|w| w.start).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                windows.retain(|_, w| w.start > cut);
            }
        }
        for (key, _) in keys {
            let w = windows.entry(key).or_insert(Window { start: now, count: 0 });
            if !open(w) {
                *w = Window { start: now, count: 0 };
            }
            w.count = w.count.saturating_add(1);
        }
        Ok(())
    }

    /// The attempt had the right credentials: it does not count as a failure.
    pub fn succeeded(&self, client: &str, account: &str) {
        let keys = self.keys(client, account);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        for (key, _) in keys {
            if let Some(w) = windows.get_mut(&key) {
                w.count = w.count.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(client: u32, account: u32) -> LoginLimits {
        LoginLimits::new(&LoginConfig { max_failures_per_client: client, max_failures_per_account: account, window_secs: 60 })
    }

    #[test]
    fn per_client_and_per_account_windows() {
        let l = limits(3, 5);
        for _ in 0..3 {
            assert!(l.attempt("10.0.0.1", "alice", 1000).is_ok());
        }
        // The client is over its limit, whatever account it tries next.
        assert_eq!(l.attempt("10.0.0.1", "bob", 1010), Err(50));
        // Another client may still try alice: 2 more attempts on her account, then 429.
        assert!(l.attempt("10.0.0.2", "alice", 1010).is_ok());
        assert!(l.attempt("10.0.0.3", "alice", 1010).is_ok());
        assert_eq!(l.attempt("10.0.0.4", "alice", 1030), Err(30));
        // Right credentials give the attempt back.
        let l = limits(3, 5);
        for _ in 0..10 {
            assert!(l.attempt("10.0.0.1", "alice", 1000).is_ok());
            l.succeeded("10.0.0.1", "alice");
        }
        // Windows close.
        let l = limits(1, 0);
        assert!(l.attempt("c", "a", 1000).is_ok());
        assert_eq!(l.attempt("c", "a", 1059), Err(1));
        assert!(l.attempt("c", "a", 1060).is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = limits(1, 1);
        for i in 0..(MAX_TRACKED as u64 + 100) {
            let _ = l.attempt("-", &format!("user{i}"), 1000 + i / 1000);
        }
        assert!(l.windows.lock().unwrap().len() <= MAX_TRACKED);
    }
}
