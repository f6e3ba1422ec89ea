//! The web interface's files (web/, built into web/dist and committed), served under `/ui/`.
//!
//! The core decides which paths belong to the UI and what they answer, so every runtime serves
//! the same bytes with the same headers: an adapter asks [`respond`] first and hands the request
//! to the registry only when it says `None`. Nothing here touches storage or auth: the page is
//! public and talks to the registry's own API (and token endpoint) like any other client.
//!
//! The built assets are committed (about 12 KiB gzip) rather than built by cargo, so a plain
//! `cargo build` needs no npm; tests/ui/run.sh rebuilds them from web/package-lock.json and
//! fails when the committed copy differs.

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};

use crate::{Body, Response};

/// Where the UI lives. Never under `/v2/`, and not a valid path of any registry endpoint.
pub const PREFIX: &str = "/ui/";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { path: "/ui/", content_type: "text/html; charset=utf-8", bytes: include_bytes!("../../web/dist/index.html") },
    Asset { path: "/ui/assets/app.js", content_type: "text/javascript; charset=utf-8", bytes: include_bytes!("../../web/dist/assets/app.js") },
    Asset { path: "/ui/assets/app.css", content_type: "text/css; charset=utf-8", bytes: include_bytes!("../../web/dist/assets/app.css") },
];

/// Scripts and styles only from this origin (no inline script), requests only to this origin
/// (the registry API and its token endpoint), never framed (clickjacking of the delete button).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The UI's answer to this request, or `None` when the path is not the UI's (then the registry
/// answers). `accept` is the request's Accept header: `/` sends browsers (which ask for HTML) to
/// the UI and leaves every other client's `/` to the registry.
pub fn respond(method: &Method, path: &str, accept: Option<&str>) -> Option<Response> {
    let is_ui = path == "/ui" || path.starts_with(PREFIX);
    let browser_root = path == "/" && accept.is_some_and(|a| a.contains("text/html"));
    if !is_ui && !browser_root {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", b"method not allowed\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(r);
    }
    if path == "/" || path == "/ui" {
        let mut r = reply(StatusCode::FOUND, "text/plain; charset=utf-8", b"see /ui/\n");
        r.headers_mut().insert(header::LOCATION, HeaderValue::from_static(PREFIX));
        return Some(r);
    }
    let mut r = match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => reply(StatusCode::OK, a.content_type, a.bytes),
        None => reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", b"no such page; the interface is at /ui/\n"),
    };
    if method == Method::HEAD {
        *r.body_mut() = Body::Empty;
    }
    Some(r)
}

fn reply(status: StatusCode, content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut r = http::Response::new(Body::Full(Bytes::from_static(bytes)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // File names carry no content hash: revalidate, so an upgraded registry serves its new UI.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, accept: Option<&str>) -> Option<Response> {
        respond(&Method::GET, path, accept)
    }

    #[test]
    fn serves_the_page_and_assets_with_security_headers() {
        for path in ["/ui/", "/ui/assets/app.js", "/ui/assets/app.css"] {
            let r = get(path, None).unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
        }
        let Body::Full(html) = get("/ui/", None).unwrap().into_body() else { panic!("no body") };
        assert!(std::str::from_utf8(&html).unwrap().contains("/ui/assets/app.js"));
    }

    #[test]
    fn leaves_registry_paths_alone_and_redirects_browsers_at_the_root() {
        for path in ["/v2/", "/v2/ui/tags/list", "/token", "/uix", "/metrics"] {
            assert!(get(path, Some("text/html")).is_none(), "{path}");
        }
        assert!(get("/", Some("application/json")).is_none());
        assert!(get("/", None).is_none());
        for path in ["/", "/ui"] {
            let r = get(path, Some("text/html,application/xhtml+xml")).unwrap();
            assert_eq!(r.status(), StatusCode::FOUND);
            assert_eq!(r.headers()[header::LOCATION], "/ui/");
        }
    }

    #[test]
    fn unknown_ui_paths_and_writes_are_refused() {
        assert_eq!(get("/ui/nope", None).unwrap().status(), StatusCode::NOT_FOUND);
        let r = respond(&Method::POST, "/ui/", None).unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = respond(&Method::HEAD, "/ui/", None).unwrap();
        assert!(matches!(r.into_body(), Body::Empty));
    }
}
