//! Content digests, and a sha256 whose state survives between stateless requests.

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

use crate::names::{Digest, DigestAlgorithm};

/// Digest of `content` in the algorithm of `like` (sha256 or sha512).
pub fn digest_of(algorithm: &DigestAlgorithm, content: &[u8]) -> String {
    match algorithm {
        DigestAlgorithm::Sha512 => format!("sha512:{}", hex::encode(Sha512::digest(content))),
        _ => sha256_of(content),
    }
}

pub fn sha256_of(content: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(content)))
}

/// Whether `content` has `digest`.
pub fn matches(digest: &Digest, content: &[u8]) -> bool {
    digest_of(digest.algorithm(), content) == digest.to_string()
}

/// The running sha256 of an upload. Saved as hex in the upload session after every chunk, so the
/// next chunk may land on any instance without rereading what came before.
#[derive(Clone, Default)]
pub struct UploadHasher(Sha256);

impl UploadHasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    pub fn save(&self) -> String {
        hex::encode(self.0.serialize().as_slice())
    }

    pub fn restore(saved: &str) -> Option<Self> {
        let raw = hex::decode(saved).ok()?;
        let state = raw.as_slice().try_into().ok()?;
        Sha256::deserialize(state).ok().map(UploadHasher)
    }

    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

/// A sha512 computed in one pass, for the rare upload verified against a sha512 digest.
#[derive(Default)]
pub struct Sha512Hasher(Sha512);

impl Sha512Hasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }
    pub fn finish(self) -> String {
        format!("sha512:{}", hex::encode(self.0.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_resumes_the_same_hash() {
        let mut h = UploadHasher::default();
        h.update(b"hello ");
        let saved = h.save();
        let mut resumed = UploadHasher::restore(&saved).expect("state restores");
        resumed.update(b"world");
        assert_eq!(resumed.finish(), sha256_of(b"hello world"));
        assert!(UploadHasher::restore("zz").is_none());
        assert!(UploadHasher::restore("00").is_none());
    }
}
