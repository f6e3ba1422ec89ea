//! Byte-moving loops in JavaScript (src/native.js): a request body into an upload with the
//! runtime's sha256, and a blob's R2 read split between the client and the Workers cache. The
//! bytes stay JavaScript values end to end; Rust only passes handles and reads small results.

use berth_core::parted::{self, PartedUpload, Tail};
use berth_core::storage::{NativeAppend, StorageResult};
use berth_core::StorageError;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::web_sys::ReadableStream;
use worker::Bucket;

#[wasm_bindgen(module = "/src/native.js")]
extern "C" {
    #[wasm_bindgen(js_name = appendNative)]
    fn append_native(
        bucket: &JsValue,
        body: &ReadableStream,
        data_key: &str,
        tail_prefix: &str,
        part_size: f64,
        limit: f64,
    ) -> js_sys::Promise;

    #[wasm_bindgen(js_name = teeIntoCache, catch)]
    fn tee_into_cache(src: &ReadableStream, size: f64, key: &str, cache_control: &str) -> Result<JsValue, JsValue>;
}

fn field(object: &JsValue, name: &str) -> JsValue {
    js_sys::Reflect::get(object, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

fn number(object: &JsValue, name: &str) -> Option<u64> {
    field(object, name).as_f64().filter(|n| *n >= 0.0).map(|n| n as u64)
}

fn string(object: &JsValue, name: &str) -> Option<String> {
    field(object, name).as_string()
}

fn js_error(what: &str, e: JsValue) -> StorageError {
    let text = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    StorageError::new(format!("{what}: {text}"))
}

/// Takes `body` into the fresh upload `id` (state `state`, nothing uploaded yet) with the
/// runtime's sha256; see `appendNative` in native.js.
pub async fn append(
    bucket: &Bucket,
    id: &str,
    state: PartedUpload,
    body: ReadableStream,
    limit: Option<u64>,
) -> StorageResult<NativeAppend> {
    let raw_bucket: &JsValue = bucket.as_ref();
    let promise = append_native(
        raw_bucket,
        &body,
        &parted::data_key(id),
        &parted::tail_key_prefix(id),
        state.part_size as f64,
        limit.map_or(-1.0, |l| l as f64),
    );
    let done = JsFuture::from(promise)
        .await
        .map_err(|e| js_error(&format!("upload {id}"), e))?;
    if field(&done, "tooLarge").is_truthy() {
        return Ok(NativeAppend::TooLarge);
    }
    if let Some(message) = string(&done, "broken") {
        return Ok(NativeAppend::Broken {
            received: number(&done, "received").unwrap_or_default(),
            message,
        });
    }
    let bad = || StorageError::new(format!("upload {id}: the native append returned no result"));
    let received = number(&done, "received").ok_or_else(bad)?;
    let sha256 = string(&done, "sha256").ok_or_else(bad)?;
    let etags: Vec<String> = js_sys::Array::from(&field(&done, "etags"))
        .iter()
        .map(|e| e.as_string().ok_or_else(bad))
        .collect::<StorageResult<_>>()?;
    let tail = string(&done, "tailKey").map(|key| Tail {
        key,
        len: number(&done, "tailLen").unwrap_or_default(),
    });
    let state = PartedUpload {
        multipart: string(&done, "multipart"),
        parts: etags,
        tail,
        ..state
    };
    if state.len() != received {
        return Err(StorageError::new(format!(
            "upload {id}: {received} bytes came but the parts and tail hold {}",
            state.len()
        )));
    }
    Ok(NativeAppend::Appended {
        backend: parted::encode(&state),
        received,
        sha256,
    })
}

/// `src` (a blob's full R2 read of `size` bytes) for the client, filling the cache entry `key`
/// from the same read; returns the client's stream and the promise the fill settles.
pub fn tee(
    src: &ReadableStream,
    size: u64,
    key: &str,
    cache_control: &str,
) -> Option<(ReadableStream, js_sys::Promise)> {
    let split = tee_into_cache(src, size as f64, key, cache_control).ok()?;
    let stream = field(&split, "stream").dyn_into::<ReadableStream>().ok()?;
    let done = field(&split, "done").dyn_into::<js_sys::Promise>().ok()?;
    Some((stream, done))
}
