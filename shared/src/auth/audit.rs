//! The audit log: one structured `tracing` event (target `audit`) per token issued or refused,
//! per push, mount, delete and upload cancel, and per refused request of any kind (reads,
//! upload starts, chunks), with who, what, when and from where. Successful reads are not
//! audited (volume). Secrets and tokens are never in it.
//!
//! Registry requests reach it as the core's events ([`AuditLog`] is an [`EventSink`] every
//! `Registry` has); token requests are recorded here directly by the token endpoint.
//!
//! Every value that comes from a request goes through [`Safe`], so no username, scope,
//! reference or address can end a log line, start a forged one or pose as another field, in
//! the text format (tracing-subscriber prints `%` fields raw) as in JSON.

use std::fmt;

use crate::events::{Event, EventAction, EventSink, TargetKind};

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

impl Volume {
    /// No catch-all: a new action must say how much of it the audit log keeps.
    fn of(action: EventAction) -> Volume {
        match action {
            EventAction::Push
            | EventAction::Mount
            | EventAction::Delete
            | EventAction::Cancel
            | EventAction::UploadParts => Volume::Always,
            EventAction::UploadStart | EventAction::UploadChunk => Volume::Unsuccessful,
            EventAction::Pull | EventAction::Catalog | EventAction::UploadStatus => Volume::Denied,
        }
    }

    fn logs(self, status: u16) -> bool {
        match self {
            Volume::Always => true,
            Volume::Unsuccessful => !(200..300).contains(&status),
            Volume::Denied => status == 401 || status == 403,
        }
    }
}

/// The audit log as a consumer of the core's events: one line per push, mount, delete and
/// upload cancel, and per refused request of any kind. Every [`crate::Registry`] has it.
pub(crate) struct AuditLog;

impl AuditLog {
    /// The line's `reference`: what the request named, as the log has always shown it.
    fn reference(event: &Event) -> &str {
        match event.target.kind {
            TargetKind::Tags => "tags",
            _ => event.target.reference.as_deref().unwrap_or("-"),
        }
    }
}

impl EventSink for AuditLog {
    fn emit(&self, event: &Event) {
        if !Volume::of(event.action).logs(event.status) {
            return;
        }
        tracing::info!(
            target: "audit",
            event = event.action.as_str(),
            subject = %Safe(&event.subject),
            repository = %Safe(event.repository.as_deref().unwrap_or("-")),
            reference = %Safe(Self::reference(event)),
            from = %Safe(event.from.as_deref().unwrap_or("-")),
            client = %Safe(&event.client),
            status = event.status,
            outcome = event.outcome.as_str(),
            at = event.at,
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

/// Garbage collection deleted something on a policy's word (`event=retention-delete`): a tag
/// retention let go (`outcome=deleted`), a manifest it condemned (`outcome=condemned`: it goes
/// a settle window later), and that manifest's delete (`outcome=deleted`). `rule` is the
/// retention rule's number in the config, `reason` why (docs/policies.md). A dry run writes
/// none: nothing is deleted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn policy_delete(
    repository: &str,
    kind: &str,
    reference: &str,
    digest: &str,
    rule: Option<usize>,
    reason: &str,
    outcome: &str,
    now: u64,
) {
    tracing::info!(
        target: "audit",
        event = "retention-delete",
        subject = "gc",
        repository = %Safe(repository),
        kind,
        reference = %Safe(reference),
        digest = %Safe(digest),
        rule = %rule.map_or_else(|| "-".to_owned(), |r| r.to_string()),
        reason = %Safe(reason),
        outcome,
        at = now,
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::events::Draft;
    use crate::routes::Endpoint;
    use http::StatusCode;

    fn event(method: &str, uri: &str, status: StatusCode) -> Option<crate::events::Event> {
        let req = http::Request::builder().method(method).uri(uri).body(crate::body::empty_stream()).unwrap();
        let endpoint = Endpoint::of(req.method(), req.uri().path()).unwrap();
        Some(Draft::of(&endpoint, &req)?.finish("-", status, 0, None))
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
        use Volume::*;
        let kind = |m: &str, u: &str| {
            event(m, u, StatusCode::OK).map(|e| (e.action.as_str(), Volume::of(e.action), AuditLog::reference(&e).to_owned()))
        };
        let k = |a: &'static str, v: Volume, r: &str| Some((a, v, r.to_owned()));
        assert_eq!(kind("GET", "/v2/"), None);
        assert_eq!(kind("GET", "/v2/a/manifests/v1"), k("pull", Denied, "v1"));
        assert_eq!(kind("HEAD", "/v2/a/blobs/sha256:x"), k("pull", Denied, "sha256:x"));
        assert_eq!(kind("GET", "/v2/a/tags/list"), k("pull", Denied, "tags"));
        assert_eq!(kind("GET", "/v2/_catalog"), k("catalog", Denied, "-"));
        assert_eq!(kind("POST", "/v2/a/blobs/uploads/"), k("upload-start", Unsuccessful, "-"));
        assert_eq!(kind("PATCH", "/v2/a/blobs/uploads/id"), k("upload-chunk", Unsuccessful, "id"));
        assert_eq!(kind("DELETE", "/v2/a/blobs/uploads/id"), k("cancel", Always, "id"));
        assert_eq!(kind("POST", "/v2/a/blobs/uploads/id/parts"), k("upload-parts", Always, "id"));
        assert_eq!(kind("PUT", "/v2/a/blobs/uploads/id?digest=sha256:x"), k("push", Always, "sha256:x"));
        assert_eq!(kind("PUT", "/v2/a/blobs/uploads/id"), k("push", Always, "-"));
        assert_eq!(kind("POST", "/v2/a/blobs/uploads/?digest=sha256:x"), k("push", Always, "sha256:x"));
        let mount = |status| event("POST", "/v2/a/blobs/uploads/?mount=sha256:x&from=b/c", status).unwrap();
        let created = mount(StatusCode::CREATED);
        assert_eq!((created.action.as_str(), created.from.as_deref()), ("mount", Some("b/c")));
        assert_eq!(created.outcome.as_str(), "ok");
        assert_eq!(mount(StatusCode::ACCEPTED).outcome.as_str(), "not-mounted");
        let logged = |m: &str, u: &str, status: StatusCode| {
            let e = event(m, u, status).unwrap();
            Volume::of(e.action).logs(e.status).then_some(e.outcome.as_str())
        };
        assert_eq!(logged("GET", "/v2/a/manifests/v1", StatusCode::OK), None);
        assert_eq!(logged("GET", "/v2/a/manifests/v1", StatusCode::NOT_FOUND), None);
        assert_eq!(logged("GET", "/v2/a/manifests/v1", StatusCode::UNAUTHORIZED), Some("refused"));
        assert_eq!(logged("POST", "/v2/a/blobs/uploads/", StatusCode::ACCEPTED), None);
        assert_eq!(logged("POST", "/v2/a/blobs/uploads/", StatusCode::FORBIDDEN), Some("refused"));
        assert_eq!(logged("POST", "/v2/a/blobs/uploads/", StatusCode::INTERNAL_SERVER_ERROR), Some("error"));
    }
}
