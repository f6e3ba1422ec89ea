//! `POST /__berth/contract` (feature `contract`, and only when the var `CONTRACT_TESTS` is `1`):
//! runs the core's storage contract (`berth_core::contract`) on the R2 stores of the bound
//! bucket, inside the real runtime, and answers 200 `ok` or 500 with what failed.
//! tests/edge/run.sh (step `contract`) calls it on its own `wrangler dev` instance; production
//! bundles are built without the feature, so they never carry this route.

use berth_core::contract::{blob_store_contract, meta_store_contract};
use worker::{web_sys, Env, Response};

use crate::handoff::BodyHandoff;
use crate::r2_blobs::R2Blobs;
use crate::r2_meta::R2Meta;
use crate::settings::{Settings, BUCKET_BINDING};

pub const PATH: &str = "/__berth/contract";

/// The contract's answer, or None when the request is not for it (the registry handles it).
pub async fn route(req: &web_sys::Request, env: &Env) -> Option<worker::Result<Response>> {
    let path = http::Uri::try_from(req.url()).ok().map(|u| u.path().to_owned());
    if req.method() != "POST" || path.as_deref() != Some(PATH) {
        return None;
    }
    // A bundle built with the feature still answers only where the deployment asks for it.
    if env.var("CONTRACT_TESTS").map(|v| v.to_string()).ok().as_deref() != Some("1") {
        return None;
    }
    Some(run(env).await)
}

async fn run(env: &Env) -> worker::Result<Response> {
    let settings = match Settings::from_env(env) {
        Ok(s) => s,
        Err(message) => return Response::error(format!("settings: {message}"), 500),
    };
    let Ok(bucket) = env.bucket(BUCKET_BINDING) else {
        return Response::error(format!("no R2 bucket bound as {BUCKET_BINDING}"), 500);
    };
    // The stores as the fetch handler builds them (KV cache and presigner as configured); the
    // Workers Cache API in front of R2 is left out: it needs the request's origin and context,
    // and it only ever serves what R2 returned.
    let blobs = R2Blobs::configured(bucket.clone(), env.clone(), BodyHandoff::default(), &settings);
    let meta = R2Meta::new(bucket.clone());
    let mut failures = Vec::new();
    if let Err(e) = blob_store_contract(&blobs).await {
        failures.push(format!("blob_store_contract (R2Blobs): {e}"));
    }
    if let Err(e) = meta_store_contract(&meta).await {
        failures.push(format!("meta_store_contract (R2Meta): {e}"));
    }
    if let Err(e) = legacy_records_gain_their_copy(&bucket, &meta).await {
        failures.push(format!("R2Meta::get_small on a record without its metadata copy: {e}"));
    }
    if failures.is_empty() {
        Response::ok("ok")
    } else {
        Response::error(failures.join("\n"), 500)
    }
}

/// R2 only: a small record written without the copy in its custom metadata (as before de9f6cc)
/// reads back whole through `get_small`, which rewrites it once with the copy and the same etag;
/// a record too big for metadata is read and left alone.
async fn legacy_records_gain_their_copy(bucket: &worker::Bucket, meta: &R2Meta) -> Result<(), String> {
    use crate::r2_meta::{PREFIX, SMALL_RECORD, SMALL_RECORD_FIELD};
    use berth_core::MetaStore;
    for (key, value) in [
        ("contract-legacy/small", b"{\"link\":1}".to_vec()),
        ("contract-legacy/big", vec![b'x'; 4096]),
    ] {
        let full = format!("{PREFIX}{key}");
        let written = bucket.put(&full, value.clone()).execute().await.map_err(|e| format!("put {full}: {e}"))?;
        let etag = written.ok_or(format!("put {full}: no object"))?.etag();
        let got = meta.get_small(key).await.map_err(|e| e.to_string())?.ok_or(format!("{key}: get_small found nothing"))?;
        if got.value != value || got.version != etag {
            return Err(format!("{key}: get_small did not return the value and etag written"));
        }
        let after = bucket.head(&full).await.map_err(|e| format!("head {full}: {e}"))?.ok_or(format!("{key}: gone"))?;
        let copy = after.custom_metadata().map_err(|e| format!("{key}: metadata: {e}"))?.get(SMALL_RECORD_FIELD).cloned();
        let expected = (value.len() <= SMALL_RECORD).then(|| String::from_utf8_lossy(&value).into_owned());
        if copy != expected {
            return Err(format!("{key}: metadata copy after get_small is {copy:?}, expected {expected:?}"));
        }
        if after.etag() != etag {
            return Err(format!("{key}: the rewrite changed the etag from {etag} to {}", after.etag()));
        }
        bucket.delete(&full).await.map_err(|e| format!("delete {full}: {e}"))?;
    }
    Ok(())
}
