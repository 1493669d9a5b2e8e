//! Software keys for fast unit tests of other crates. Only the `mock` feature builds this module, and only
//! dev-dependencies enable it, so no shipped binary can sign with a software key (CI checks the feature graph).

use std::fmt;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::EncodePublicKey as _;

use crate::error::TpmError;
use crate::key::{KeyType, PublicKey};
use crate::KeySigner;

enum Secret {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ecc(p256::ecdsa::SigningKey),
}

/// An in-memory key implementing [`KeySigner`].
pub struct SoftwareKey {
    secret: Secret,
    public: PublicKey,
    failing: bool,
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareKey").field("key_type", &self.public.key_type()).finish_non_exhaustive()
    }
}

impl SoftwareKey {
    /// A fresh random key.
    #[allow(clippy::panic, reason = "test fixture: without a key the calling test cannot run at all")]
    pub fn generate(key_type: KeyType) -> SoftwareKey {
        let mut rng = rand_core::OsRng;
        let (secret, der) = match key_type {
            KeyType::Rsa2048 => {
                let k = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap_or_else(|e| panic!("rsa keygen: {e}"));
                let der = k.to_public_key().to_public_key_der().map(|d| d.into_vec()).unwrap_or_default();
                (Secret::Rsa(Box::new(k)), der)
            }
            KeyType::EccP256 => {
                let k = p256::ecdsa::SigningKey::random(&mut rng);
                let der = k.verifying_key().to_public_key_der().map(|d| d.into_vec()).unwrap_or_default();
                (Secret::Ecc(k), der)
            }
        };
        SoftwareKey { secret, public: PublicKey::new(key_type, der), failing: false }
    }

    /// A key whose every signature fails with a transient error (fault injection).
    pub fn failing(key_type: KeyType) -> SoftwareKey {
        SoftwareKey { failing: true, ..SoftwareKey::generate(key_type) }
    }
}

impl KeySigner for SoftwareKey {
    fn key_type(&self) -> KeyType {
        self.public.key_type()
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError> {
        if self.failing {
            return Err(TpmError::Busy { device: "software".into(), op: "sign", attempts: 1 });
        }
        match &self.secret {
            Secret::Rsa(k) => k
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest)
                .map_err(|_| TpmError::Software("rsa sign failed")),
            Secret::Ecc(k) => {
                let sig: p256::ecdsa::Signature =
                    k.sign_prehash(digest).map_err(|_| TpmError::Software("ecdsa sign failed"))?;
                Ok(sig.to_bytes().to_vec())
            }
        }
    }
}
