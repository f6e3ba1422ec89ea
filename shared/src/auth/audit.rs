//! The audit log: one structured `tracing` event (target `audit`) per token issued or refused,
//! per push, mount, delete and upload cancel, and per refused request of any kind (reads,
//! upload starts, chunks), with who, what, when and from where. Successful reads are not
//! audited (volume). Secrets and tokens are never in it.
//!
//! Every value that comes from a request goes through [`Safe`], so no username, scope,
//! reference or address can end a log line, start a forged one or pose as another field, in
//! the text format (tracing-subscriber prints `%` fields raw) as in JSON.

use std::fmt;

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

/// An untrusted value as a log field. Plain values (printable ASCII without quotes,
/// backslashes or `=`) print as they are, so `subject=user:alice` stays greppable; anything
/// else prints quoted and escaped (Rust's `Debug`: `\n`, `\"`, `\u{1b}`, `\u{2028}`), so it
/// stays inside its own field on its own line.
pub(crate) struct Safe<'a>(pub &'a str);

impl fmt::Display for Safe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self.0.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// Which outcomes of an event are worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Volume {
    /// Writes, deletes, mounts, cancels: every outcome.
    Always,
    /// Upload starts and chunks: only when they fail (a push makes many).
    Unsuccessful,
    /// Reads: only when refused by auth (401/403); a 404 is a push's normal probe.
    Denied,
}

/// An audited request, recorded once its outcome is known.
pub(crate) struct Pending {
    action: &'static str,
    repository: String,
    reference: String,
    /// The source repository of a mount.
    from: Option<String>,
    client: String,
    subject: String,
    volume: Volume,
}

impl Pending {
    /// Every registry endpoint but `/v2/` itself (which every client calls first without a
    /// token: its 401 is the login flow, not an event).
    pub fn for_request(req: &Request) -> Option<Pending> {
        use Volume::*;
        let method = req.method();
        let read = method == Method::GET || method == Method::HEAD;
        let route = Route::parse(req.uri().path())?;
        let query = query_of(req.uri().query());
        let param = |k: &str| query_param(&query, k).map(str::to_owned);
        let mut from = None;
        let (action, repository, reference, volume) = match route {
            Route::Manifest { name, reference } if method == Method::PUT => ("push", name, reference, Always),
            Route::Manifest { name, reference } if method == Method::DELETE => ("delete", name, reference, Always),
            Route::Manifest { name, reference } if read => ("pull", name, reference, Denied),
            Route::Blob { name, digest } if method == Method::DELETE => ("delete", name, digest, Always),
            Route::Blob { name, digest } if read => ("pull", name, digest, Denied),
            Route::Tags { name } if read => ("pull", name, "tags".to_owned(), Denied),
            Route::Referrers { name, digest } if read => ("pull", name, digest, Denied),
            Route::Catalog if read => ("catalog", "-".to_owned(), "-".to_owned(), Denied),
            Route::UploadStart { name } if method == Method::POST => match (param("mount"), param("digest")) {
                (Some(digest), _) => {
                    from = Some(param("from").unwrap_or_else(|| "-".to_owned()));
                    ("mount", name, digest, Always)
                }
                (None, Some(digest)) => ("push", name, digest, Always),
                (None, None) => ("upload-start", name, "-".to_owned(), Unsuccessful),
            },
            Route::Upload { name, .. } if method == Method::PUT => {
                ("push", name, param("digest").unwrap_or_else(|| "-".to_owned()), Always)
            }
            Route::Upload { name, id } if method == Method::PATCH => ("upload-chunk", name, id, Unsuccessful),
            Route::Upload { name, id } if method == Method::DELETE => ("cancel", name, id, Always),
            Route::Upload { name, id } if read => ("upload-status", name, id, Denied),
            Route::UploadParts { name, id } if method == Method::POST => ("upload-parts", name, id, Always),
            _ => return None,
        };
        Some(Pending { action, repository, reference, from, client: client_of(req), subject: String::new(), volume })
    }

    pub fn by(mut self, subject: &str) -> Self {
        self.subject = subject.to_owned();
        self
    }

    /// What the log says happened; None when this outcome is not logged (see [`Volume`]).
    fn outcome(&self, status: StatusCode) -> Option<&'static str> {
        let logged = match self.volume {
            Volume::Always => true,
            Volume::Unsuccessful => !status.is_success(),
            Volume::Denied => status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
        };
        if !logged {
            return None;
        }
        Some(match status {
            // The spec's fallback: no mount (unknown blob, or the source is not readable), a
            // plain upload session instead.
            StatusCode::ACCEPTED if self.action == "mount" => "not-mounted",
            s if s.is_success() => "ok",
            s if s.is_server_error() => "error",
            _ => "refused",
        })
    }

    pub fn record(self, status: StatusCode, now: u64) {
        let Some(outcome) = self.outcome(status) else {
            return;
        };
        tracing::info!(
            target: "audit",
            event = self.action,
            subject = %Safe(&self.subject),
            repository = %Safe(&self.repository),
            reference = %Safe(&self.reference),
            from = %Safe(self.from.as_deref().unwrap_or("-")),
            client = %Safe(&self.client),
            status = status.as_u16(),
            outcome,
            at = now,
            "audit"
        );
    }
}

/// A token was issued at the token endpoint.
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
            subject = %Safe(self.subject),
            identity = %Safe(self.identity.unwrap_or("-")),
            grant = self.grant,
            requested = %Safe(&self.requested),
            granted = %Safe(&self.granted),
            client = %Safe(self.client),
            jti = %Safe(self.jti),
            expires_in = self.expires_in,
            at = now,
            "audit"
        );
    }
}

/// A refused token request; `subject` is the username as sent, so it is untrusted too.
pub(crate) fn refused_login(subject: &str, grant: &str, client: &str, reason: &str, now: u64) {
    tracing::warn!(
        target: "audit",
        event = "token",
        subject = %Safe(subject),
        grant,
        client = %Safe(client),
        outcome = "refused",
        reason = %Safe(reason),
        at = now,
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(method: &str, uri: &str) -> Option<Pending> {
        let req = http::Request::builder().method(method).uri(uri).body(crate::body::empty_stream()).unwrap();
        Pending::for_request(&req)
    }

    #[test]
    fn untrusted_values_stay_on_their_line() {
        assert_eq!(Safe("user:alice").to_string(), "user:alice");
        assert_eq!(Safe("repository:a/b:pull,push").to_string(), "repository:a/b:pull,push");
        for evil in ["x\naudit event=\"push\"", "x\r\n", "a\u{1b}[2J", "a b=c", "q\"", "\u{2028}x", "\u{85}", ""] {
            let shown = Safe(evil).to_string();
            assert!(!shown.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{85}'), "{shown:?}");
            assert!(shown.starts_with('"') && shown.ends_with('"'), "{shown:?}");
            // Quoted and escaped: nothing ends the quotes early.
            assert_eq!(shown[1..shown.len() - 1].replace("\\\"", "").find('"'), None, "{shown:?}");
        }
    }

    #[test]
    fn what_is_audited() {
        let kind = |m: &str, u: &str| pending(m, u).map(|p| (p.action, p.volume));
        use Volume::*;
        assert_eq!(kind("GET", "/v2/"), None);
        assert_eq!(kind("GET", "/v2/a/manifests/v1"), Some(("pull", Denied)));
        assert_eq!(kind("HEAD", "/v2/a/blobs/sha256:x"), Some(("pull", Denied)));
        assert_eq!(kind("GET", "/v2/a/tags/list"), Some(("pull", Denied)));
        assert_eq!(kind("GET", "/v2/_catalog"), Some(("catalog", Denied)));
        assert_eq!(kind("POST", "/v2/a/blobs/uploads/"), Some(("upload-start", Unsuccessful)));
        assert_eq!(kind("PATCH", "/v2/a/blobs/uploads/id"), Some(("upload-chunk", Unsuccessful)));
        assert_eq!(kind("DELETE", "/v2/a/blobs/uploads/id"), Some(("cancel", Always)));
        assert_eq!(kind("POST", "/v2/a/blobs/uploads/id/parts"), Some(("upload-parts", Always)));
        assert_eq!(kind("PUT", "/v2/a/blobs/uploads/id?digest=sha256:x"), Some(("push", Always)));
        let mount = pending("POST", "/v2/a/blobs/uploads/?mount=sha256:x&from=b/c").unwrap();
        assert_eq!((mount.action, mount.from.as_deref()), ("mount", Some("b/c")));
        assert_eq!(mount.outcome(StatusCode::CREATED), Some("ok"));
        assert_eq!(mount.outcome(StatusCode::ACCEPTED), Some("not-mounted"));
        let read = pending("GET", "/v2/a/manifests/v1").unwrap();
        assert_eq!(read.outcome(StatusCode::OK), None);
        assert_eq!(read.outcome(StatusCode::NOT_FOUND), None);
        assert_eq!(read.outcome(StatusCode::UNAUTHORIZED), Some("refused"));
        let start = pending("POST", "/v2/a/blobs/uploads/").unwrap();
        assert_eq!(start.outcome(StatusCode::ACCEPTED), None);
        assert_eq!(start.outcome(StatusCode::FORBIDDEN), Some("refused"));
        assert_eq!(start.outcome(StatusCode::INTERNAL_SERVER_ERROR), Some("error"));
    }
}
