//! The audit log: one structured `tracing` event (target `audit`) per token issued and per push
//! or delete, with who, what, when and from where. Secrets and tokens are never in it.

use http::{Method, StatusCode};

use crate::routes::Route;
use crate::{query_of, query_param, Request};

/// The client's address, added by the adapter as a request extension (`berth serve`: the TCP
/// peer; a Worker: `CF-Connecting-IP`; Lambda: the source IP of the event).
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

pub(crate) fn client_of<T>(req: &http::Request<T>) -> String {
    req.extensions().get::<ClientAddr>().map_or_else(|| "-".to_owned(), |c| c.0.clone())
}

/// A push or delete, recorded once its outcome is known.
pub(crate) struct Pending {
    action: &'static str,
    repository: String,
    reference: String,
    client: String,
    subject: String,
}

impl Pending {
    /// Manifest PUT, blob upload completion (PUT, monolithic POST, mount) and deletes.
    pub fn for_request(req: &Request) -> Option<Pending> {
        let method = req.method();
        // Reads and PATCHes (mid-upload chunks) are not audited; skip parsing for them.
        if ![Method::PUT, Method::POST, Method::DELETE].contains(method) {
            return None;
        }
        let route = Route::parse(req.uri().path())?;
        let query = query_of(req.uri().query());
        let (action, repository, reference) = match route {
            Route::Manifest { name, reference } if method == Method::PUT => ("push", name, reference),
            Route::Upload { name, .. } if method == Method::PUT => {
                ("push", name, query_param(&query, "digest").unwrap_or("-").to_owned())
            }
            Route::UploadStart { name } if method == Method::POST => {
                if let Some(digest) = query_param(&query, "mount") {
                    ("mount", name, digest.to_owned())
                } else {
                    ("push", name, query_param(&query, "digest")?.to_owned())
                }
            }
            Route::Manifest { name, reference } if method == Method::DELETE => ("delete", name, reference),
            Route::Blob { name, digest } if method == Method::DELETE => ("delete", name, digest),
            _ => return None,
        };
        Some(Pending { action, repository, reference, client: client_of(req), subject: String::new() })
    }

    pub fn by(mut self, subject: &str) -> Self {
        self.subject = subject.to_owned();
        self
    }

    pub fn record(self, status: StatusCode, now: u64) {
        let outcome = if status.is_success() { "ok" } else { "refused" };
        tracing::info!(
            target: "audit",
            event = self.action,
            subject = %self.subject,
            repository = %self.repository,
            reference = %self.reference,
            client = %self.client,
            status = status.as_u16(),
            outcome,
            at = now,
            "audit"
        );
    }
}

/// A token was issued (or refused) at the token endpoint.
pub(crate) struct TokenEvent<'a> {
    pub subject: &'a str,
    pub identity: Option<&'a str>,
    pub grant: &'a str,
    pub requested: String,
    pub granted: String,
    pub client: &'a str,
    pub jti: &'a str,
    pub expires_in: u64,
}

impl TokenEvent<'_> {
    pub fn record(&self, now: u64) {
        tracing::info!(
            target: "audit",
            event = "token",
            subject = %self.subject,
            identity = self.identity.unwrap_or("-"),
            grant = self.grant,
            requested = %self.requested,
            granted = %self.granted,
            client = %self.client,
            jti = %self.jti,
            expires_in = self.expires_in,
            at = now,
            "audit"
        );
    }
}

pub(crate) fn refused_login(subject: &str, grant: &str, client: &str, reason: &str, now: u64) {
    tracing::warn!(target: "audit", event = "token", subject = %subject, grant, client = %client, outcome = "refused", reason = %reason, at = now, "audit");
}
