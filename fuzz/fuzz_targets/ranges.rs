//! Byte ranges: a blob GET's `Range` against a blob size, and an upload chunk's `Content-Range`.
//! Never a panic; every range Berth accepts lies inside the blob and has a consistent length.
//! Input: 8 bytes of blob size (little endian), then the header value.
#![no_main]

use berth_core::blobs::parse_range;
use berth_core::uploads::parse_content_range;
use berth_core::ErrorCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (size, value) = match data.split_first_chunk::<8>() {
        Some((size, rest)) => (u64::from_le_bytes(*size), rest),
        None => (100, data),
    };
    let Ok(value) = std::str::from_utf8(value) else { return };
    match parse_range(value, size) {
        Ok(Some(r)) => assert!(r.start < r.end && r.end <= size, "{value:?} of {size}: {r:?}"),
        Ok(None) => {}
        Err(e) => assert_eq!(e.code, ErrorCode::RangeInvalid),
    }
    match parse_content_range(value) {
        Ok((start, end, len)) => {
            assert!(start <= end && len >= 1);
            assert_eq!(end - start, len - 1);
        }
        Err(e) => assert_eq!(e.code, ErrorCode::BlobUploadInvalid),
    }
});
