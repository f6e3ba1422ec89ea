//! OCI error codes and the JSON error body. Every client fault maps to one of these with the
//! status the spec (or, where it is silent, Distribution) gives; see docs/protocol.md.

use http::StatusCode;
use serde_json::{json, Value};

/// An OCI error code, with the HTTP status it is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    RangeInvalid,
    PaginationNumberInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// Our bug or a storage outage: the only code sent with a 5xx.
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The status a code is usually sent with; a few call sites pick another one
    /// (416 for out-of-order chunks, 413 for oversize bodies, 405 for wrong methods).
    pub fn default_status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A request that ends in an OCI error response.
#[derive(Debug, Clone)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<Value>,
    /// Extra response headers (e.g. `Range` on a 416, `Content-Range` on a bad blob range).
    pub headers: Vec<(http::HeaderName, String)>,
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            status: code.default_status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: http::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The JSON body of the error, as the spec lays it out.
    pub fn body(&self) -> Vec<u8> {
        let mut entry = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(detail) = &self.detail {
            entry["detail"] = detail.clone();
        }
        serde_json::to_vec(&json!({ "errors": [entry] })).unwrap_or_default()
    }
}

impl From<StorageError> for RegistryError {
    fn from(err: StorageError) -> Self {
        if let Some(code) = err.client {
            return RegistryError::new(code, err.message);
        }
        if err.full {
            // 507 rather than a bare 500: the operator's problem, named as such, and clients
            // retry a 5xx later, when space may be free again. Nothing was made visible.
            tracing::error!(error = %err.message, "storage is full");
            return RegistryError::new(
                ErrorCode::Unknown,
                format!("the registry's storage is full; nothing was stored, try again later: {}", err.message),
            )
            .with_status(StatusCode::INSUFFICIENT_STORAGE);
        }
        tracing::error!(error = %err.message, "storage error");
        RegistryError::new(ErrorCode::Unknown, format!("storage backend failed: {}", err.message))
    }
}

/// A failure of the storage backend (I/O, network, outage): a 500. `client` is set only when
/// the backend refused what the client sent (a part S3 finds too small, say): then it is the
/// client's fault, answered with that OCI code and its 4xx status. `full`: out of space, a 507.
#[derive(Debug, Clone)]
pub struct StorageError {
    pub message: String,
    pub client: Option<ErrorCode>,
    pub full: bool,
}

impl StorageError {
    pub fn new(message: impl std::fmt::Display) -> Self {
        StorageError { message: message.to_string(), client: None, full: false }
    }

    /// The backend refused the client's data; `message` must say what to do instead.
    pub fn client(code: ErrorCode, message: impl std::fmt::Display) -> Self {
        StorageError { message: message.to_string(), client: Some(code), full: false }
    }

    /// The backend is out of space (a local disk, a quota).
    pub fn full(message: impl std::fmt::Display) -> Self {
        StorageError { message: message.to_string(), client: None, full: true }
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StorageError {}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Shorthand used by every module: `Err(oci(ErrorCode::X, "..."))`.
pub fn oci(code: ErrorCode, message: impl Into<String>) -> RegistryError {
    RegistryError::new(code, message)
}
