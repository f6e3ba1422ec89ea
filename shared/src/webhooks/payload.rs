//! What a webhook receives: the event as the outbox keeps it ([`HookEvent`]), its body in the
//! endpoint's [`Format`], and the signature header.

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{Format, HookKind};

/// The header that carries the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub const SIGNATURE_HEADER: &str = "berth-signature";
/// The event's id, the same on every attempt: receivers deduplicate on it.
pub const EVENT_ID_HEADER: &str = "berth-event-id";
/// The event kind (`push`, `tag_moved`...), so a receiver can route before parsing.
pub const EVENT_KIND_HEADER: &str = "berth-event";

pub const DISTRIBUTION_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
pub const CLOUDEVENTS_MEDIA_TYPE: &str = "application/cloudevents+json";
pub const CLOUDEVENTS_BATCH_MEDIA_TYPE: &str = "application/cloudevents-batch+json";

/// The request that caused an event (Distribution's `request` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// One event as the outbox stores it: everything a body in either format is made from, so
/// an entry can be rendered again for any attempt (and for an endpoint whose format changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookEvent {
    /// Unique per event; the same for every endpoint and attempt.
    pub id: String,
    pub kind: HookKind,
    /// Unix seconds.
    pub at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `tag_moved`: the digest the tag pointed at before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_digest: Option<String>,
    /// Who: the token's subject, `anonymous`, or `-` without auth.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestInfo>,
    /// Kind-specific facts (the quota refused, a GC run's counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// The action Distribution's receivers know, for our kinds.
fn distribution_action(kind: HookKind) -> &'static str {
    match kind {
        HookKind::Push | HookKind::Tag | HookKind::TagMoved => "push",
        HookKind::Pull => "pull",
        HookKind::Delete => "delete",
        HookKind::QuotaExceeded => "quota_exceeded",
        HookKind::GcFinished => "gc_finished",
        HookKind::ReplicationDone => "replication_done",
        HookKind::ReplicationFailed => "replication_failed",
    }
}

/// RFC 3339 in UTC, as both formats want their time. (chrono's RFC 3339 writer, which the
/// token endpoint already uses: `format("%Y...")` would bring its strftime parser into the
/// Worker's bundle.)
fn rfc3339(at: u64) -> String {
    chrono::DateTime::from_timestamp(at as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

impl HookEvent {
    fn target(&self, registry_url: &str) -> Value {
        let mut t = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            t.insert(k.to_owned(), v);
        };
        if let Some(m) = &self.media_type {
            put("mediaType", json!(m));
        }
        if let Some(d) = &self.digest {
            put("digest", json!(d));
        }
        if let Some(s) = self.size {
            put("size", json!(s));
            put("length", json!(s));
        }
        if let Some(r) = &self.repository {
            put("repository", json!(r));
            let reference = self.digest.as_deref().or(self.tag.as_deref());
            if let (Some(reference), false) = (reference, registry_url.is_empty()) {
                put("url", json!(format!("{registry_url}/v2/{r}/manifests/{reference}")));
            }
        }
        if let Some(tag) = &self.tag {
            put("tag", json!(tag));
        }
        Value::Object(t)
    }

    /// The body for `format`. `registry_url` (`https://registry.example`, no trailing slash,
    /// may be empty) makes the target's `url` and the event's `source`.
    pub fn body(&self, format: Format, registry_url: &str) -> Vec<u8> {
        body_of(&[self], format, registry_url)
    }

    /// The event as `format` puts it: Distribution's entry of `events`, or a CloudEvent.
    fn value(&self, format: Format, registry_url: &str) -> Value {
        match format {
            Format::Distribution => {
                let mut event = json!({
                    "id": self.id,
                    "timestamp": rfc3339(self.at),
                    "action": distribution_action(self.kind),
                    "target": self.target(registry_url),
                    "actor": { "name": self.actor },
                    "source": { "addr": registry_url },
                    "berth": { "kind": self.kind, "previousDigest": self.previous_digest, "detail": self.detail },
                });
                if let Some(r) = &self.request {
                    event["request"] = json!(r);
                }
                event
            }
            Format::Cloudevents => json!({
                "specversion": "1.0",
                "id": self.id,
                "source": if registry_url.is_empty() { "berth".to_owned() } else { registry_url.to_owned() },
                "type": format!("io.berth.registry.{}", self.kind.as_str()),
                "subject": self.repository.as_ref().map(|r| match (&self.tag, &self.digest) {
                    (Some(t), _) => format!("{r}:{t}"),
                    (None, Some(d)) => format!("{r}@{d}"),
                    _ => r.clone(),
                }),
                "time": rfc3339(self.at),
                "datacontenttype": "application/json",
                "data": {
                    "target": self.target(registry_url),
                    "actor": self.actor,
                    "request": self.request,
                    "previousDigest": self.previous_digest,
                    "detail": self.detail,
                },
            }),
        }
    }
}

/// The body of one delivery of `events` (one, or a batch of pulls): Distribution's envelope
/// holds them all in `events`, as its receivers expect; CloudEvents sends one event in
/// structured mode and several in batched mode (a JSON array, the HTTP binding's batch format).
pub fn body_of(events: &[&HookEvent], format: Format, registry_url: &str) -> Vec<u8> {
    let mut values: Vec<Value> = events.iter().map(|e| e.value(format, registry_url)).collect();
    let value = match format {
        Format::Distribution => json!({ "events": values }),
        Format::Cloudevents if values.len() == 1 => values.remove(0),
        Format::Cloudevents => Value::Array(values),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

pub fn content_type(format: Format) -> &'static str {
    content_type_of(format, 1)
}

/// The content type of a delivery of `n` events (see [`body_of`]).
pub fn content_type_of(format: Format, n: usize) -> &'static str {
    match format {
        Format::Distribution => DISTRIBUTION_MEDIA_TYPE,
        Format::Cloudevents if n > 1 => CLOUDEVENTS_BATCH_MEDIA_TYPE,
        Format::Cloudevents => CLOUDEVENTS_MEDIA_TYPE,
    }
}

/// The signature header's value for `body` sent at `now`: the timestamp is signed with the
/// body, so a receiver that refuses old timestamps cannot be fed a recorded delivery again.
pub fn sign(secret: &[u8], now: u64, body: &[u8]) -> String {
    format!("t={now},v1={}", hex::encode(mac(secret, now, body)))
}

/// HMAC-SHA256 of `"<t>.<body>"`.
fn mac(secret: &[u8], t: u64, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: new_from_slice cannot fail; an empty MAC never verifies.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else { return Vec::new() };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// A receiver's check, here for the tests and as the reference the docs describe.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, tolerance_secs: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if t.abs_diff(now) > tolerance_secs {
        return false;
    }
    let Ok(given) = hex::decode(v1) else { return false };
    let expected = mac(secret, t, body);
    // Constant time: a receiver must not leak how much of a forged signature was right.
    !expected.is_empty() && given.len() == expected.len() && given.iter().zip(&expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
