//! Lambda event in, core request; core response out, Lambda response. Nothing else: the
//! protocol is berth-core's.


use berth_core::{BlobStore, Body, MetaStore, Registry};
use futures_util::StreamExt;
use lambda_http::{Body as EventBody, Request as Event, RequestExt as _, Response as EventResponse};

use crate::config::MAX_EVENT_BYTES;
use crate::s3::{S3BlobStore, S3Meta};

pub type LambdaRegistry = Registry<S3BlobStore, S3Meta>;

/// Generic over the stores so the event translation is tested on the memory stores.
pub async fn handle<B: BlobStore, M: MetaStore>(
    registry: &Registry<B, M>,
    emf: Option<&crate::emf::Emf>,
    wake: Option<&crate::wake::Wake>,
    event: Event,
) -> Result<EventResponse<EventBody>, lambda_http::Error> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    crate::calls::start();
    let client = client_addr(&event);
    let (mut parts, body) = event.into_parts();
    if let Some(client) = client {
        parts.extensions.insert(client);
    }
    let (method, uri) = (parts.method.clone(), parts.uri.clone());
    let ctx = berth_core::native::request_context();
    // The id the core puts on the response, on every log line of the request (audit included).
    let request_id = berth_core::observe::request_id(&parts.headers, &ctx);
    let span = tracing::info_span!("request", id = %request_id);
    let mut bytes_in = 0;
    // The web interface (docs/ui.md): the core decides which paths are its own.
    let accept = parts.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let page = berth_core::ui::respond(&parts.method, parts.uri.path(), accept);
    let response = if let Some(page) = page {
        page
    } else if event_size(&parts, &body) > MAX_EVENT_BYTES {
        // Lambda itself refuses such an event before the function runs; local emulators do not,
        // so the cap is enforced here too and tests see what production does.
        let mut response = berth_core::body_too_large(crate::config::MAX_BODY_BYTES);
        berth_core::observe::stamp_request_id(&mut response, &request_id);
        response
    } else {
        let bytes = match body {
            EventBody::Empty => bytes::Bytes::new(),
            EventBody::Text(text) => bytes::Bytes::from(text),
            EventBody::Binary(data) => bytes::Bytes::from(data),
            // Only WebSocket events carry other variants.
            _ => bytes::Bytes::new(),
        };
        bytes_in = bytes.len() as u64;
        let stream: berth_core::ByteStream = if bytes.is_empty() {
            Box::pin(futures_util::stream::empty())
        } else {
            Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
        };
        registry.handle(http::Request::from_parts(parts, stream), ctx).instrument(span.clone()).await
    };
    // The webhook wake-up, when the request wrote outbox entries: it must finish before the
    // invocation returns, so it is one bounded call that never fails the response.
    if let (Some(wake), Some(n)) = (wake, crate::wake::entries(&response)) {
        wake.send(n).await;
    }
    let (mut head, body) = response.into_parts();
    fold_repeated_headers(&mut head.headers);
    if let Some(calls) = crate::calls::summary().and_then(|c| http::HeaderValue::from_str(&c).ok()) {
        head.headers.insert("berth-backend-calls", calls);
    }
    let body = match body {
        Body::Empty => EventBody::Empty,
        Body::Full(bytes) => EventBody::Binary(bytes.to_vec()),
        // Blob content is redirected to S3, so streams here are small (manifests, errors).
        Body::Stream(mut stream) => {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.map_err(|e| format!("{e:?}"))?);
            }
            EventBody::Binary(out)
        }
    };
    let body = if matches!(&body, EventBody::Binary(b) if b.is_empty()) { EventBody::Empty } else { body };
    let elapsed = started.elapsed().as_secs_f64();
    let _entered = span.enter();
    tracing::info!(%method, uri = %uri, status = head.status.as_u16(), ms = elapsed * 1000.0, "request");
    if let Some(emf) = emf {
        let bytes_out = match (&body, method == http::Method::HEAD) {
            (EventBody::Binary(b), false) => b.len() as u64,
            _ => 0,
        };
        let now_ms = crate::emf::now_ms();
        let exchange = berth_core::metrics::Exchange {
            method: &method,
            path: uri.path(),
            status: head.status,
            response_headers: &head.headers,
            seconds: elapsed,
            bytes_in,
            bytes_out,
        };
        emf.emit(&exchange, &request_id, now_ms);
    }
    Ok(EventResponse::from_parts(head, body))
}

/// A function URL (payload 2.0) response has one value per header name, so a second
/// `OCI-Tag` would be lost: repeated fields become one comma-separated line, which HTTP defines
/// as the same thing (RFC 9110 5.3). `Set-Cookie` cannot be folded, and Berth never sends it.
fn fold_repeated_headers(headers: &mut http::HeaderMap) {
    let repeated: Vec<http::HeaderName> =
        headers.keys().filter(|name| headers.get_all(*name).iter().nth(1).is_some()).cloned().collect();
    for name in repeated {
        let joined = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
        if let Ok(value) = http::HeaderValue::from_str(&joined) {
            headers.insert(name, value);
        }
    }
}

/// Who sent the request, for the audit log: the source address AWS's front puts in the event
/// (function URL, API Gateway). Behind CloudFront that is the address of CloudFront's edge,
/// not the viewer's.
fn client_addr(event: &Event) -> Option<berth_core::auth::ClientAddr> {
    use lambda_http::request::RequestContext;
    let ip = match event.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.clone(),
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.source_ip.clone(),
        _ => None,
    }?;
    Some(berth_core::auth::ClientAddr(ip))
}

/// What the event this request arrived in weighs, as Lambda counts it: binary bodies are
/// base64-encoded in the event JSON.
fn event_size(parts: &http::request::Parts, body: &EventBody) -> u64 {
    let body = match body {
        EventBody::Empty => 0,
        EventBody::Text(t) => t.len() as u64,
        EventBody::Binary(b) => (b.len() as u64).div_ceil(3) * 4,
        _ => 0,
    };
    let headers: u64 =
        parts.headers.iter().map(|(k, v)| (k.as_str().len() + v.len() + 8) as u64).sum();
    body + headers + parts.uri.to_string().len() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_headers_fold_into_one_line() {
        let mut headers = http::HeaderMap::new();
        headers.append("oci-tag", "a".parse().unwrap());
        headers.append("oci-tag", "b.1".parse().unwrap());
        headers.insert("location", "/v2/x".parse().unwrap());
        super::fold_repeated_headers(&mut headers);
        assert_eq!(headers.get_all("oci-tag").iter().collect::<Vec<_>>(), ["a, b.1"]);
        assert_eq!(headers.get("location").unwrap(), "/v2/x");
    }
}
