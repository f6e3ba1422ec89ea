//! Auth for `berth serve`: reads the auth config file, resolves key files, and gives the core
//! an HTTP client for OIDC issuers' keys. Every rule of auth itself lives in berth-core.

use std::path::{Path, PathBuf};

use berth_core::auth::{Auth, AuthConfig};
use berth_core::native::ReqwestFetch;

/// Loads and checks the auth config; a bad file stops start-up with the reason.
pub fn load(path: &Path) -> Result<Auth, String> {
    let config = read_config(path)?;
    let auth = Auth::new(&config)?.with_default_scheme("http");
    // Only OIDC trust needs outbound HTTPS (and the system's CA certificates).
    if config.oidc.is_empty() {
        return Ok(auth);
    }
    Ok(auth.with_fetcher(Box::new(ReqwestFetch::new()?)))
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
