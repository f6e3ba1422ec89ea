//! The route parser: never a panic, and the route a path names is the route of the path
//! written back from it (auth and dispatch both parse the path; they must agree on the name).
#![no_main]

use berth_core::Route;
use libfuzzer_sys::fuzz_target;

fn path_of(route: &Route) -> String {
    match route {
        Route::Base => "/v2/".into(),
        Route::Catalog => "/v2/_catalog".into(),
        Route::Tags { name } => format!("/v2/{name}/tags/list"),
        Route::Manifest { name, reference } => format!("/v2/{name}/manifests/{reference}"),
        Route::Blob { name, digest } => format!("/v2/{name}/blobs/{digest}"),
        Route::UploadStart { name } => format!("/v2/{name}/blobs/uploads/"),
        Route::Upload { name, id } => format!("/v2/{name}/blobs/uploads/{id}"),
        Route::UploadParts { name, id } => format!("/v2/{name}/blobs/uploads/{id}/parts"),
        Route::Referrers { name, digest } => format!("/v2/{name}/referrers/{digest}"),
        Route::Quotas => "/v2/_berth/quotas".into(),
        Route::Repositories => "/v2/_berth/repositories".into(),
        Route::TagDetails { name } => format!("/v2/{name}/_berth/tags"),
        Route::PolicyState { name } => format!("/v2/{name}/_berth/policy"),
        Route::Webhooks => "/v2/_berth/webhooks".into(),
        Route::Replication => "/v2/_berth/replication".into(),
        Route::RetentionPreview { name } => format!("/v2/{name}/_berth/retention"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Some(route) = Route::parse(path) {
        let canonical = path_of(&route);
        assert_eq!(Route::parse(&canonical).as_ref(), Some(&route), "{path:?} -> {canonical:?}");
    }
});
