//! Maps a `/v2/...` path to the endpoint it names. Repository names contain slashes, so the
//! endpoint keyword is found from the right-hand end of the path.

/// An endpoint of the distribution API, with the raw (not yet validated) path parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    UploadStart { name: String },
    Upload { name: String, id: String },
    /// Berth's direct-upload extension: presigned part URLs for an upload session.
    UploadParts { name: String, id: String },
    Referrers { name: String, digest: String },
}

impl Route {
    /// None for a path that is no endpoint.
    pub fn parse(path: &str) -> Option<Route> {
        let rest = match path.strip_prefix("/v2") {
            Some("") | Some("/") => return Some(Route::Base),
            Some(rest) => rest.strip_prefix('/')?,
            None => return None,
        };
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let name = |k: usize| segs[..n - k].join("/");
        let tail = |k: usize| segs.get(n.wrapping_sub(k)).copied();
        if n >= 3 && tail(2) == Some("tags") && tail(1) == Some("list") {
            return Some(Route::Tags { name: name(2) });
        }
        if n >= 3 && tail(2) == Some("manifests") {
            return Some(Route::Manifest { name: name(2), reference: segs[n - 1].to_owned() });
        }
        if n >= 5 && tail(4) == Some("blobs") && tail(3) == Some("uploads") && tail(1) == Some("parts") {
            return Some(Route::UploadParts { name: name(4), id: segs[n - 2].to_owned() });
        }
        if n >= 4 && tail(3) == Some("blobs") && tail(2) == Some("uploads") {
            if segs[n - 1].is_empty() {
                return Some(Route::UploadStart { name: name(3) });
            }
            return Some(Route::Upload { name: name(3), id: segs[n - 1].to_owned() });
        }
        if n >= 3 && tail(2) == Some("blobs") && tail(1) == Some("uploads") {
            return Some(Route::UploadStart { name: name(2) });
        }
        if n >= 3 && tail(2) == Some("blobs") {
            return Some(Route::Blob { name: name(2), digest: segs[n - 1].to_owned() });
        }
        if n >= 3 && tail(2) == Some("referrers") {
            return Some(Route::Referrers { name: name(2), digest: segs[n - 1].to_owned() });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_names_and_keywords() {
        assert_eq!(Route::parse("/v2/"), Some(Route::Base));
        assert_eq!(Route::parse("/v2"), Some(Route::Base));
        assert_eq!(Route::parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            Route::parse("/v2/org/team/app/manifests/v1"),
            Some(Route::Manifest { name: "org/team/app".into(), reference: "v1".into() })
        );
        assert_eq!(
            Route::parse("/v2/a/b/blobs/uploads/"),
            Some(Route::UploadStart { name: "a/b".into() })
        );
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads/xyz"),
            Some(Route::Upload { name: "a".into(), id: "xyz".into() })
        );
        assert_eq!(
            Route::parse("/v2/a/tags/list"),
            Some(Route::Tags { name: "a".into() })
        );
        assert_eq!(
            Route::parse("/v2/a/b/blobs/uploads/xyz/parts"),
            Some(Route::UploadParts { name: "a/b".into(), id: "xyz".into() })
        );
        assert_eq!(Route::parse("/v2/blobs/x"), None);
        assert_eq!(Route::parse("/v3/a/tags/list"), None);
        assert_eq!(Route::parse("/v2/a/nothing/here"), None);
    }
}
