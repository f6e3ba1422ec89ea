//! The manifest push's parse/validate step: never a panic, every refusal is MANIFEST_INVALID,
//! and a manifest accepted under one Content-Type is accepted as the media type it was given.
//! Input: a first line with the Content-Type (empty: none), then the body.
#![no_main]

use berth_core::manifests::validate_manifest;
use berth_core::ErrorCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok().filter(|c| !c.is_empty()), &data[i + 1..]),
        None => (None, data),
    };
    match validate_manifest(content_type, body) {
        Ok(media_type) => {
            // Pulls answer with the stored media type as Content-Type; a re-push of the same
            // bytes under it must keep it.
            assert_eq!(validate_manifest(Some(&media_type), body).ok(), Some(media_type));
        }
        Err(e) => assert_eq!(e.code, ErrorCode::ManifestInvalid, "{e:?}"),
    }
});
