//! RS256 for jwt-compact over the `rsa` crate. jwt-compact's own RSA support turns on
//! getrandom, which does not build for wasm32; PKCS#1 v1.5 verification needs no randomness.

use std::borrow::Cow;

use jwt_compact::{Algorithm, AlgorithmSignature};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2_10::{Digest as _, Sha256};

/// The smallest RSA modulus accepted from an issuer's JWKS.
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, Copy, Default)]
pub struct Rs256;

#[derive(Debug, Clone)]
pub struct RsaSignature(Vec<u8>);

impl AlgorithmSignature for RsaSignature {
    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Ok(RsaSignature(slice.to_vec()))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

impl Algorithm for Rs256 {
    type SigningKey = RsaPrivateKey;
    type VerifyingKey = RsaPublicKey;
    type Signature = RsaSignature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("RS256")
    }

    /// PKCS#1 v1.5 signing is deterministic. Berth never signs with RSA; this exists because
    /// the trait asks for it.
    fn sign(&self, signing_key: &RsaPrivateKey, message: &[u8]) -> RsaSignature {
        let digest = Sha256::digest(message);
        RsaSignature(signing_key.sign(Pkcs1v15Sign::new::<Sha256>(), &digest).unwrap_or_default())
    }

    fn verify_signature(&self, signature: &RsaSignature, key: &RsaPublicKey, message: &[u8]) -> bool {
        let digest = Sha256::digest(message);
        key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature.0).is_ok()
    }
}
