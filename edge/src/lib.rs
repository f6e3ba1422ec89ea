//! Berth as a Cloudflare Worker: the core registry over R2 (the source of truth for blobs,
//! manifests, tags and upload sessions) and Workers KV (a cache of manifests by digest).
//! This crate only translates requests/responses and implements the storage traits.

// The Worker itself exists only on wasm32; natively (`cargo test --lib`) only the runtime-free
// parts build, so their unit tests run on the host.
#[cfg(target_arch = "wasm32")]
mod auth;
#[cfg(target_arch = "wasm32")]
mod blob_cache;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod calls;
#[cfg(target_arch = "wasm32")]
mod handoff;
#[cfg(target_arch = "wasm32")]
mod logs;
#[cfg(target_arch = "wasm32")]
mod manifest_cache;
#[cfg(all(target_arch = "wasm32", feature = "contract"))]
mod contract;
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod presign;
#[cfg(target_arch = "wasm32")]
mod native;
#[cfg(target_arch = "wasm32")]
mod r2_blobs;
#[cfg(target_arch = "wasm32")]
mod r2_meta;
#[cfg(target_arch = "wasm32")]
mod r2_upload;
#[cfg(target_arch = "wasm32")]
mod settings;
#[cfg(target_arch = "wasm32")]
mod translate;

#[cfg(target_arch = "wasm32")]
mod worker_main {
    use std::rc::Rc;

    use berth_core::{Registry, RequestContext};
    use worker::{console_error, event, Context, Env, Response};

    use crate::blob_cache::BlobCache;
    use crate::handoff::BodyHandoff;
    use crate::manifest_cache::ManifestCache;
    use crate::r2_blobs::R2Blobs;
    use crate::r2_meta::R2Meta;
    use crate::settings::{Settings, BUCKET_BINDING};
    use crate::translate;

    #[event(start)]
    fn start() {
        crate::logs::init();
    }

    #[event(fetch)]
    async fn fetch(req: worker::Request, env: Env, ctx: Context) -> worker::Result<Response> {
        #[cfg(feature = "contract")]
        if let Some(response) = crate::contract::route(&req, &env).await {
            return response;
        }
        let settings = match Settings::from_env(&env) {
            Ok(s) => s,
            Err(message) => return misconfigured(&message),
        };
        let bucket = match env.bucket(BUCKET_BINDING) {
            Ok(b) => b,
            Err(_) => {
                return misconfigured(&format!(
                    "the Worker has no R2 bucket bound as {BUCKET_BINDING}"
                ))
            }
        };
        crate::calls::start(settings.count_backend_calls);
        let handoff = BodyHandoff::default();
        let request_body = BodyHandoff::default();
        let mut blobs = R2Blobs::new(
            bucket.clone(),
            ManifestCache::new(settings.kv),
            handoff.clone(),
            settings.part_size,
            settings.presigner,
        )
        .with_request_body(request_body.clone());
        if settings.blob_cache {
            if let Ok(url) = req.url() {
                blobs = blobs.with_blob_cache(BlobCache::new(
                    url.origin().ascii_serialization(),
                    Rc::new(ctx),
                ));
            }
        }
        let mut registry = Registry::new(blobs, R2Meta::new(bucket), settings.config);
        if let Some(text) = &settings.auth_config {
            match crate::auth::compiled(text) {
                Ok(auth) => registry = registry.with_auth(auth),
                // Never serve without the policy the deployment asked for.
                Err(message) => return misconfigured(&message),
            }
        }
        let ctx = match request_context() {
            Ok(ctx) => ctx,
            Err(message) => return misconfigured(&message),
        };
        let request = match translate::request(req, &request_body) {
            Ok(r) => r,
            Err(message) => {
                return translate::response(berth_core::untranslatable_request(message), &BodyHandoff::default())
            }
        };
        translate::response(registry.handle(request, ctx).await, &handoff)
    }

    /// The time and randomness the core needs, from the runtime (`Date.now`,
    /// `crypto.getRandomValues`): the core never reads a clock or an RNG itself.
    fn request_context() -> Result<RequestContext, String> {
        let now = (js_sys::Date::now() / 1000.0) as u64;
        let mut random = [0u8; 16];
        let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into())
            .map_err(|_| "no crypto global")?;
        let get_random: js_sys::Function = js_sys::Reflect::get(&crypto, &"getRandomValues".into())
            .map_err(|_| "no crypto.getRandomValues")?
            .into();
        let buffer = js_sys::Uint8Array::new_with_length(16);
        get_random
            .call1(&crypto, &buffer)
            .map_err(|_| "crypto.getRandomValues failed")?;
        buffer.copy_to(&mut random);
        Ok(RequestContext { now, random })
    }

    /// A deployment mistake, not a client fault: 500 with an OCI error body that says what to fix.
    fn misconfigured(message: &str) -> worker::Result<Response> {
        console_error!("berth: {message}");
        translate::response(berth_core::misconfigured(message), &BodyHandoff::default())
    }
}
