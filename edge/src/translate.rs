//! Between the Workers runtime's request/response and the core's `http` types.

use berth_core::body::empty_stream;
use berth_core::{Body, ByteStream};
use worker::web_sys;
use worker::{FixedLengthStream, Headers, Response, ResponseBuilder};

use crate::handoff::BodyHandoff;

/// The Worker's request as the core's `http::Request<ByteStream>`. The body stays a stream,
/// parked in `parked` until the core reads it or the store takes it whole (`upload_native`).
///
/// Straight from the runtime's `Request`, reading only what the core uses: the method, the URL
/// (parsed once, by `http`) and the headers. `worker::Request` would also materialize the
/// `cf` object (a JSON parse in the runtime) and parse the URL again, on every request.
pub fn request(req: &web_sys::Request, parked: &BodyHandoff) -> Result<berth_core::Request, String> {
    // The whole URL, scheme included: auth's token realm says http or https as the client came.
    let url = req.url();
    let mut builder = http::Request::builder().method(req.method().as_str()).uri(url.as_str());
    for (name, value) in &worker::Headers(req.headers()) {
        builder = builder.header(name, value);
    }
    // Cloudflare sets it to the client's address (wrangler dev to the local one): "from where"
    // in the audit log.
    let client = builder
        .headers_ref()
        .and_then(|h| h.get("cf-connecting-ip"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(ip) = client {
        builder = builder.extension(berth_core::auth::ClientAddr(ip));
    }
    let body: ByteStream = match req.body() {
        Some(raw) => parked.park(raw),
        None => empty_stream(),
    };
    builder.body(body).map_err(|e| format!("request head: {e}"))
}

/// `scheme://host[:port]` of the request: the zone the Worker serves it in (the runtime gives
/// the URL serialized, default ports omitted, so this is the URL's origin).
pub fn origin(req: &berth_core::Request) -> Option<String> {
    let uri = req.uri();
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// The core's response as the Worker's. A blob body the store parked goes to the runtime as the
/// raw R2 stream (see `handoff`); other streams are pumped through Rust.
pub fn response(resp: berth_core::Response, handoff: &BodyHandoff) -> worker::Result<Response> {
    let (parts, body) = resp.into_parts();
    let headers = Headers::new();
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            headers.append(name.as_str(), value)?;
        }
    }
    if handoff.cache_hit() {
        headers.set("x-berth-cache", "hit")?;
    }
    if let Some(calls) = crate::calls::summary() {
        headers.set("berth-backend-calls", &calls)?;
    }
    let builder = ResponseBuilder::new()
        .with_status(parts.status.as_u16())
        .with_headers(headers);
    Ok(match body {
        Body::Empty => builder.empty(),
        Body::Full(bytes) => builder.fixed(bytes.to_vec()),
        Body::Stream(stream) => match handoff.take() {
            Some(raw) => builder.stream(raw),
            None => {
                let chunks =
                    futures_util::TryStreamExt::map_ok(stream, |b| b.to_vec()).map_err_into();
                match content_length(&parts.headers) {
                    // A FixedLengthStream keeps Content-Length on the response (a plain stream
                    // would go out chunked).
                    Some(len) => {
                        let fixed: worker::worker_sys::FixedLengthStream =
                            FixedLengthStream::wrap(chunks, len).into();
                        builder.stream(fixed.readable())
                    }
                    None => builder.from_stream(chunks)?,
                }
            }
        },
    })
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

trait MapErrInto: Sized {
    fn map_err_into(
        self,
    ) -> futures_util::stream::MapErr<Self, fn(berth_core::StorageError) -> worker::Error>;
}
impl<S: futures_util::TryStream<Error = berth_core::StorageError>> MapErrInto for S {
    fn map_err_into(
        self,
    ) -> futures_util::stream::MapErr<Self, fn(berth_core::StorageError) -> worker::Error> {
        futures_util::TryStreamExt::map_err(self, |e| worker::Error::RustError(e.to_string()))
    }
}
