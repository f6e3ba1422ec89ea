//! Tag listing and the catalog, both paginated with `n`/`last` and a `Link` header.

use http::header::LINK;
use http::StatusCode;
use serde_json::json;

use crate::error::{oci, ErrorCode, Result};
use crate::names::RepoName;
use crate::records::{tag_prefix, REPOS};
use crate::reply::Reply;
use crate::storage::{BlobStore, MetaStore};
use crate::{query_of, query_param, Registry};

/// Page size when the client gives no `n`; the Link header leads to the rest.
const DEFAULT_PAGE: usize = 1000;
/// The most one page may hold, whatever `n` asks.
const MAX_PAGE: usize = 10_000;

fn page_size(query: &[(String, String)]) -> Result<usize> {
    page_size_within(query, DEFAULT_PAGE, MAX_PAGE)
}

/// The `n` of a query: `default` when absent, at most `max`.
pub(crate) fn page_size_within(query: &[(String, String)], default: usize, max: usize) -> Result<usize> {
    match query_param(query, "n") {
        None | Some("") => Ok(default),
        Some(n) => n.parse::<usize>().map(|n| n.min(max)).map_err(|_| {
            oci(ErrorCode::PaginationNumberInvalid, format!("n={n:?} is not a non-negative integer"))
        }),
    }
}

/// The most repository names one request of the pullable catalog reads, whatever it finds: a
/// caller who may pull little of a large registry gets short (even empty) pages with a Link to
/// go on, never a request that reads the whole catalog.
const SCAN_LIMIT: usize = 5_000;
/// Names read per store listing while filtering (R2 and S3 list at most 1000 keys a call).
const SCAN_BATCH: usize = 1000;

/// `<path?n=N&last=LAST>; rel="next"`, with `last` percent-encoded.
pub(crate) fn link(path: &str, n: usize, last: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    format!("<{path}?{query}>; rel=\"next\"")
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// One page of the names under `prefix` after `last`, and whether more remain.
    pub(crate) async fn page(&self, prefix: &str, last: Option<&str>, n: usize) -> Result<(Vec<String>, bool)> {
        if n == 0 {
            return Ok((Vec::new(), false));
        }
        let after = last.filter(|l| !l.is_empty()).map(|l| format!("{prefix}{l}"));
        let mut keys = self.meta.list(prefix, after.as_deref(), n + 1).await?;
        let more = keys.len() > n;
        keys.truncate(n);
        let names = keys.into_iter().filter_map(|k| k.strip_prefix(prefix).map(str::to_owned)).collect();
        Ok((names, more))
    }

    /// The repository `name` names, or NAME_UNKNOWN when nothing was ever pushed there.
    pub(crate) async fn known_repo(&self, name: &str) -> Result<RepoName> {
        let name = RepoName::parse(name)?;
        if !self.repo_exists(&name).await? {
            return Err(oci(ErrorCode::NameUnknown, format!("repository {name} is not known to this registry"))
                .with_detail(json!({ "name": name.as_str() })));
        }
        Ok(name)
    }

    pub(crate) async fn tags_list(&self, name: &str, req: &crate::Parts) -> Result<Reply> {
        let name = self.known_repo(name).await?;
        let query = query_of(req.uri.query());
        let n = page_size(&query)?;
        let (tags, more) = self.page(&tag_prefix(&name), query_param(&query, "last"), n).await?;
        let mut reply = Reply::json(
            StatusCode::OK,
            serde_json::to_vec(&json!({ "name": name.as_str(), "tags": tags })).unwrap_or_default(),
        );
        if let (true, Some(last)) = (more, tags.last()) {
            reply = reply.header(LINK, link(&format!("/v2/{name}/tags/list"), n, last));
        }
        Ok(reply)
    }

    pub(crate) async fn catalog(&self, req: &crate::Parts) -> Result<Reply> {
        let query = query_of(req.uri.query());
        let n = page_size(&query)?;
        let (repos, more) = self.page(REPOS, query_param(&query, "last"), n).await?;
        let mut reply = Reply::json(
            StatusCode::OK,
            serde_json::to_vec(&json!({ "repositories": repos })).unwrap_or_default(),
        );
        if let (true, Some(last)) = (more, repos.last()) {
            reply = reply.header(LINK, link("/v2/_catalog", n, last));
        }
        Ok(reply)
    }

    /// `/v2/_berth/repositories`: the catalog's format and pagination, holding only the names
    /// `may_pull` accepts (docs/auth.md). At most [`SCAN_LIMIT`] names are read per request; the
    /// Link's `last` is the last name read, listed or not, so the next page goes on from there.
    pub(crate) async fn pullable_catalog(&self, req: &crate::Parts, may_pull: impl Fn(&str) -> bool) -> Result<Reply> {
        let query = query_of(req.uri.query());
        let n = page_size(&query)?;
        let mut cursor = query_param(&query, "last").filter(|l| !l.is_empty()).map(str::to_owned);
        let (mut repos, mut scanned, mut more) = (Vec::new(), 0, false);
        while n > 0 {
            if scanned >= SCAN_LIMIT {
                more = true;
                break;
            }
            let batch = SCAN_BATCH.min(SCAN_LIMIT - scanned);
            let after = cursor.as_ref().map(|c| format!("{REPOS}{c}"));
            let keys = self.meta.list(REPOS, after.as_deref(), batch).await?;
            let done = keys.len() < batch;
            for name in keys.iter().filter_map(|k| k.strip_prefix(REPOS)) {
                if may_pull(name) {
                    if repos.len() == n {
                        // One more exists: this name starts the next page.
                        more = true;
                        break;
                    }
                    repos.push(name.to_owned());
                }
                scanned += 1;
                cursor = Some(name.to_owned());
            }
            if more || done {
                break;
            }
        }
        let mut reply = Reply::json(
            StatusCode::OK,
            serde_json::to_vec(&json!({ "repositories": repos })).unwrap_or_default(),
        );
        if let (true, Some(last)) = (more, cursor.as_deref()) {
            reply = reply.header(LINK, link(crate::routes::REPOSITORIES_PATH, n, last));
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::StatusCode;

    use crate::auth::{key_pair_from_seed, Auth, AuthConfig};
    use crate::memory::{MemoryBlobStore, MemoryMetaStore};
    use crate::records::REPOS;
    use crate::storage::{MetaStore, Precondition};
    use crate::{Body, Config, Registry, RequestContext};

    type Reg = Registry<MemoryBlobStore, MemoryMetaStore>;

    async fn with_repos(names: &[String], auth: bool) -> Reg {
        let mut registry = Registry::new(MemoryBlobStore::new(), MemoryMetaStore::new(), Config::new(b"s".to_vec()));
        if auth {
            let (private, _) = key_pair_from_seed(&[9; 32]).unwrap();
            let config = AuthConfig::from_toml(&format!(
                "[token]\n[[token.keys]]\nkid = \"k\"\nprivate_key = \"{private}\"\n\
                 [[access]]\nrepositories = [\"pub/**\"]\npublic = true\n"
            ))
            .unwrap();
            registry = registry.with_auth(Auth::new(&config).unwrap());
        }
        for name in names {
            registry.meta_store().put(&format!("{REPOS}{name}"), Bytes::new(), Precondition::None).await.unwrap();
        }
        registry
    }

    /// The status, the repositories listed and the Link header's target.
    async fn get(registry: &Reg, uri: &str) -> (StatusCode, Vec<String>, Option<String>) {
        let req = http::Request::builder().uri(uri).body(crate::body::empty_stream()).unwrap();
        let response = registry.handle(req, RequestContext { now: 1_700_000_000, random: [1; 16] }).await;
        let status = response.status();
        let link = response.headers().get("link").map(|l| l.to_str().unwrap().to_owned());
        let body = match response.into_body() {
            Body::Full(b) => b.to_vec(),
            _ => Vec::new(),
        };
        let repos = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| serde_json::from_value(v["repositories"].clone()).ok())
            .unwrap_or_default();
        (status, repos, link)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn anonymous_callers_list_only_what_they_may_pull() {
        let registry = with_repos(&names(&["a/private", "pub/a", "pub/b", "z/x"]), true).await;
        // The full catalog stays refused; the pullable one answers.
        assert_eq!(get(&registry, "/v2/_catalog").await.0, StatusCode::UNAUTHORIZED);
        let (status, repos, link) = get(&registry, "/v2/_berth/repositories").await;
        assert_eq!((status, repos, link), (StatusCode::OK, names(&["pub/a", "pub/b"]), None));
        // Paginated like the catalog.
        let (_, repos, link) = get(&registry, "/v2/_berth/repositories?n=1").await;
        assert_eq!(repos, names(&["pub/a"]));
        assert_eq!(link.as_deref(), Some("</v2/_berth/repositories?n=1&last=pub%2Fa>; rel=\"next\""));
        let (_, repos, link) = get(&registry, "/v2/_berth/repositories?n=1&last=pub%2Fa").await;
        assert_eq!((repos, link), (names(&["pub/b"]), None));
        assert_eq!(get(&registry, "/v2/_berth/repositories?n=x").await.0, StatusCode::BAD_REQUEST);
        // Without auth everything is pullable: the same list as the catalog.
        let open = with_repos(&names(&["a/private", "pub/a"]), false).await;
        assert_eq!(get(&open, "/v2/_berth/repositories").await.1, names(&["a/private", "pub/a"]));
    }

    /// A page reads at most SCAN_LIMIT names: past that it ends (here empty) with a Link that
    /// goes on after the last name read.
    #[tokio::test]
    async fn the_work_per_request_is_bounded() {
        let mut all: Vec<String> = (0..super::SCAN_LIMIT).map(|i| format!("hidden/r{i:05}")).collect();
        all.push("pub/late".into());
        let registry = with_repos(&all, true).await;
        let (status, repos, link) = get(&registry, "/v2/_berth/repositories").await;
        assert_eq!((status, repos.len()), (StatusCode::OK, 0));
        let last = format!("hidden%2Fr{:05}", super::SCAN_LIMIT - 1);
        assert_eq!(link.as_deref(), Some(format!("</v2/_berth/repositories?n=1000&last={last}>; rel=\"next\"").as_str()));
        let (_, repos, link) = get(&registry, &format!("/v2/_berth/repositories?last={last}")).await;
        assert_eq!((repos, link), (names(&["pub/late"]), None));
    }
}
