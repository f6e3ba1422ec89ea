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
    match query_param(query, "n") {
        None | Some("") => Ok(DEFAULT_PAGE),
        Some(n) => n.parse::<usize>().map(|n| n.min(MAX_PAGE)).map_err(|_| {
            oci(ErrorCode::PaginationNumberInvalid, format!("n={n:?} is not a non-negative integer"))
        }),
    }
}

/// `<path?n=N&last=LAST>; rel="next"`, with `last` percent-encoded.
fn link(path: &str, n: usize, last: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", &n.to_string())
        .append_pair("last", last)
        .finish();
    format!("<{path}?{query}>; rel=\"next\"")
}

impl<B: BlobStore, M: MetaStore> Registry<B, M> {
    /// One page of the names under `prefix` after `last`, and whether more remain.
    async fn page(&self, prefix: &str, last: Option<&str>, n: usize) -> Result<(Vec<String>, bool)> {
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

    pub(crate) async fn tags_list(&self, name: &str, req: &crate::Parts) -> Result<Reply> {
        let name = RepoName::parse(name)?;
        if !self.repo_exists(&name).await? {
            return Err(oci(ErrorCode::NameUnknown, format!("repository {name} is not known to this registry"))
                .with_detail(json!({ "name": name.as_str() })));
        }
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
}
