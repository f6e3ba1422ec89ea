//! Requests the relay does not take apart (blob and manifest reads, manifest PUTs, tags,
//! referrers, deletes, the catalog) go upstream as they came: method, path, query, headers and a
//! streamed body, with the relay's token instead of the client's credentials. The answer comes
//! back streamed; redirects to storage are the client's to follow.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Body as _;
use hyper::body::Incoming;

use super::{upstream_failed, Relay, Response};

/// Bodies up to this size (manifests) are read whole and sent with their length; bigger or
/// unsized ones are streamed.
const BUFFERED_BODY: u64 = 8 * 1024 * 1024;

/// Headers that belong to one connection, not to the request (RFC 9110 7.6.1), plus the ones
/// the relay sets itself.
fn keep_request_header(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-authenticate" | "proxy-authorization" | "te" | "trailer"
            | "transfer-encoding" | "upgrade" | "host" | "authorization" | "content-length"
    )
}

fn keep_response_header(name: &http::HeaderName) -> bool {
    // The upstream's challenge would send the client to log in there itself; the relay holds the
    // credentials, so a 401 here means the relay's account may not do this.
    !matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-authenticate" | "te" | "trailer" | "transfer-encoding" | "upgrade"
            | "www-authenticate"
    )
}

/// The request body as a stream, failing when the client sends nothing for `idle`.
pub(super) fn client_stream(
    body: Incoming,
    idle: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let data = axum::body::Body::new(body).into_data_stream();
    futures_util::stream::unfold(Some(data), move |state| async move {
        let mut data = state?;
        match tokio::time::timeout(idle, data.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(data))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(format!("client body: {e}"))), None)),
            Ok(None) => None,
            Err(_) => Some((Err(std::io::Error::other(format!("client body: nothing for {} s", idle.as_secs()))), None)),
        }
    })
}

pub(super) async fn forward(relay: &Relay, repo: Option<&str>, req: hyper::Request<Incoming>) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{}", relay.base, path);
    let method = parts.method.clone();
    let builder = match repo {
        Some(name) => match relay.repo(name).await {
            Ok(registry) => registry.request(method.clone(), &url).await,
            Err(e) => Err(e),
        },
        None => Ok(relay.http.request(method.clone(), &url)),
    };
    let mut builder = match builder {
        Ok(b) => b,
        Err(e) => return upstream_failed(&format!("logging in upstream: {e}")),
    };
    for (name, value) in &parts.headers {
        if keep_request_header(name) {
            builder = builder.header(name, value);
        }
    }
    let length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !body.is_end_stream() {
        builder = match length {
            Some(n) if n <= BUFFERED_BODY => {
                let mut whole = Vec::with_capacity(n as usize);
                let mut stream = std::pin::pin!(client_stream(body, relay.idle));
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(c) if (whole.len() + c.len()) as u64 <= BUFFERED_BODY => whole.extend_from_slice(&c),
                        Ok(_) => return super::oci_error(http::StatusCode::BAD_REQUEST, "SIZE_INVALID", "body longer than its Content-Length"),
                        Err(e) => return super::oci_error(http::StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", &e.to_string()),
                    }
                }
                builder.body(whole)
            }
            _ => builder.body(reqwest::Body::wrap_stream(client_stream(body, relay.idle))),
        };
    }
    let resp = match builder.send().await {
        Ok(r) => r,
        Err(e) => return upstream_failed(&crate::upstream::explain(method.as_str(), &e)),
    };
    relay_response(relay, resp, method == http::Method::HEAD)
}

/// The upstream's answer for the client: its status, its headers (Locations on the upstream
/// made relative, so the client comes back through the relay) and its body, streamed.
pub(super) fn relay_response(relay: &Relay, resp: reqwest::Response, head: bool) -> Response {
    let status = resp.status();
    let mut headers = http::HeaderMap::new();
    for (name, value) in resp.headers() {
        if !keep_response_header(name) {
            continue;
        }
        let value = match name.as_str() {
            "location" | "link" => rewrite(&relay.base, value),
            _ => value.clone(),
        };
        headers.append(name.clone(), value);
    }
    let body = if head {
        axum::body::Body::empty()
    } else {
        axum::body::Body::from_stream(resp.bytes_stream())
    };
    let mut out = http::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// `https://upstream/v2/…` → `/v2/…`; URLs elsewhere (presigned storage) stay as they are.
fn rewrite(base: &str, value: &http::HeaderValue) -> http::HeaderValue {
    let prefix = format!("{base}/");
    match value.to_str() {
        Ok(text) if text.contains(&prefix) => {
            http::HeaderValue::from_str(&text.replace(&prefix, "/")).unwrap_or_else(|_| value.clone())
        }
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn locations() {
        let v = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(rewrite("http://u:1", &v("http://u:1/v2/a/blobs/x")), v("/v2/a/blobs/x"));
        assert_eq!(rewrite("http://u:1", &v("/v2/a/blobs/x")), v("/v2/a/blobs/x"));
        assert_eq!(rewrite("http://u:1", &v("https://s3/bucket/k?X-Amz=1")), v("https://s3/bucket/k?X-Amz=1"));
        assert_eq!(rewrite("http://u:1", &v("<http://u:1/v2/a/tags/list?n=1>; rel=\"next\"")), v("</v2/a/tags/list?n=1>; rel=\"next\""));
    }
}
