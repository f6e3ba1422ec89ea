//! TLS for `berth serve` (rustls): a certificate and key from PEM files, served with ALPN
//! (HTTP/2 and HTTP/1.1), and reloaded without a restart when the files change or on SIGHUP, so
//! certificates can be renewed (certbot, cert-manager) with no downtime. A reload that fails (a
//! half-written file, a key that does not match) keeps the certificate in use and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are checked for a change (besides SIGHUP).
const POLL: Duration = Duration::from_secs(10);

pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    cert: Arc<ReloadingCert>,
}

impl Tls {
    /// Loads the pair once (a bad pair stops start-up with the reason).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = load_pair(cert, key, &provider)?;
        let cert = Arc::new(ReloadingCert {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            provider: provider.clone(),
            current: RwLock::new(current),
            stamps: Mutex::new(stamps(cert, key)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Ok(Arc::new(Tls { acceptor, cert }))
    }

    /// Reloads on SIGHUP and when either file's modification time changes.
    pub fn watch(self: &Arc<Self>) {
        let cert = self.cert.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let forced = match hup.as_mut() {
                    Some(hup) => tokio::select! { _ = hup.recv() => true, _ = tokio::time::sleep(POLL) => false },
                    None => {
                        tokio::time::sleep(POLL).await;
                        false
                    }
                };
                #[cfg(not(unix))]
                let forced = {
                    tokio::time::sleep(POLL).await;
                    false
                };
                let cert = cert.clone();
                let _ = tokio::task::spawn_blocking(move || cert.reload_if_changed(forced)).await;
            }
        });
    }
}

/// The certificate in use, swapped whole on reload; every handshake takes the current one.
#[derive(Debug)]
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    fn reload_if_changed(&self, forced: bool) {
        let now = stamps(&self.cert_path, &self.key_path);
        let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if !forced && *seen == now {
            return;
        }
        match load_pair(&self.cert_path, &self.key_path, &self.provider) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = pair;
                *seen = now;
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            // Keep serving the old pair; try again at the next change or SIGHUP.
            Err(e) => tracing::warn!("TLS certificate not reloaded, the one in use stays: {e}"),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("TLS certificate {}: no CERTIFICATE block in it", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| format!("TLS key {} does not match certificate {}: {e}", key.display(), cert.display()))?;
    Ok(Arc::new(pair))
}
