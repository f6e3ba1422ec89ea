//! Presigned GET URLs for R2's S3 API (AWS Signature Version 4, query-string form), so a blob
//! pull can be a 307 to R2 instead of streaming through the Worker. The time is passed in:
//! `SystemTime::now` panics on wasm32. Only what a presigned GET needs is here; the unit test
//! checks it against a URL signed by botocore (an independent implementation).

use hmac::{KeyInit, Mac};
use sha2::{Digest as _, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

#[derive(Clone)]
pub struct Presigner {
    /// `https://host[:port]`, without a trailing slash.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub expires_secs: u64,
}

impl Presigner {
    /// A URL that GETs `key` from the bucket until `now + expires_secs`.
    pub fn presign_get(&self, key: &str, now: u64) -> String {
        let host = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, h)| h);
        let (date_time, date) = amz_date(now);
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let path = format!(
            "/{}/{}",
            uri_encode(&self.bucket, false),
            uri_encode(key, false)
        );
        // Already in the byte order SigV4 wants.
        let query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={date_time}\
             &X-Amz-Expires={}&X-Amz-SignedHeaders=host",
            uri_encode(&format!("{}/{scope}", self.access_key_id), true),
            self.expires_secs,
        );
        let canonical = format!("GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(
            format!("AWS4{}", self.secret_access_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        format!(
            "{}{path}?{query}&X-Amz-Signature={signature}",
            self.endpoint
        )
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// SigV4's URI encoding: unreserved characters stay, everything else is %XX; `/` stays in paths.
fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `(YYYYMMDDTHHMMSSZ, YYYYMMDD)` for a Unix time.
fn amz_date(now: u64) -> (String, String) {
    let days = (now / 86_400) as i64;
    let secs = now % 86_400;
    let (y, m, d) = civil_from_days(days);
    let date = format!("{y:04}{m:02}{d:02}");
    (
        format!(
            "{date}T{:02}{:02}{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        ),
        date,
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_botocore() {
        // botocore 1.43 S3SigV4QueryAuth(service "s3", region "auto", expires 600) signed
        // GET https://acct.storage.example.test/berth-blobs/data/abc.def%3Dx at 2026-11-23T10:08:35Z.
        let p = Presigner {
            endpoint: "https://acct.storage.example.test".into(),
            bucket: "berth-blobs".into(),
            region: "auto".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            expires_secs: 600,
        };
        assert_eq!(
            p.presign_get("data/abc.def=x", 1_795_428_515),
            "https://acct.storage.example.test/berth-blobs/data/abc.def%3Dx?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIDEXAMPLE%2F20261123%2Fauto%2Fs3%2Faws4_request&X-Amz-Date=20261123T100835Z\
             &X-Amz-Expires=600&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=5a8889600b9d32b48c24d77d5bbca889a170044be944136c8aac03260e66cf3a"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(0), ("19700101T000000Z".into(), "19700101".into()));
        assert_eq!(
            amz_date(951_782_400),
            ("20000229T000000Z".into(), "20000229".into())
        );
        assert_eq!(amz_date(1_795_428_515).0, "20261123T100835Z");
    }
}
