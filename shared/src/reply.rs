//! A response under construction; turned into an `http::Response` at the end of `handle`.

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;

use crate::body::Body;
use crate::error::RegistryError;
use crate::events::Found;
use crate::Response;

pub(crate) struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Body,
    /// Content-Length to announce, for HEAD and for streamed bodies.
    length: Option<u64>,
    /// What the handler found for the request's event (never sent to the client).
    found: Option<Found>,
}

impl Reply {
    pub fn new(status: StatusCode) -> Self {
        Reply { status, headers: Vec::new(), body: Body::Empty, length: Some(0), found: None }
    }

    pub fn json(status: StatusCode, body: Vec<u8>) -> Self {
        let len = body.len() as u64;
        Reply::new(status)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::Full(body.into()), len)
    }

    pub fn error(err: RegistryError) -> Self {
        let mut reply = Reply::json(err.status, err.body());
        reply.headers.extend(err.headers);
        reply
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: Body, length: u64) -> Self {
        self.body = body;
        self.length = Some(length);
        self
    }

    /// Reports what the request was about (digest, media type, size) for its event.
    pub fn found(mut self, found: Found) -> Self {
        self.found = Some(found);
        self
    }

    pub fn take_found(&mut self) -> Option<Found> {
        self.found.take()
    }

    pub fn into_response(self, head: bool) -> Response {
        let mut response = Response::new(if head { Body::Empty } else { self.body });
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.append(name, v);
                }
                // Every value we send is built from validated names and digests; log if not.
                Err(_) => tracing::error!(header = %name, "dropped a header value that is not valid"),
            }
        }
        if let Some(len) = self.length {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        headers.insert(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }
}

pub(crate) mod names {
    use http::header::HeaderName;
    pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
    pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
    pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
    pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
    pub const OCI_CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");
    /// The largest request body the runtime accepts (proposed for the distribution spec).
    pub const OCI_CHUNK_MAX_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-max-length");
    pub const RANGE: HeaderName = http::header::RANGE;
}
