//! Key types and exported public keys (SubjectPublicKeyInfo, the same DER `tpm2_readpublic -f pem` writes).

use std::fmt;
use std::str::FromStr;

use crate::error::TpmError;

/// The key types this project signs with; each fixes its JWS algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA 2048, RSASSA-PKCS1-v1_5 SHA-256 (RS256).
    Rsa2048,
    /// ECC NIST P-256, ECDSA SHA-256 (ES256).
    EccP256,
}

impl KeyType {
    /// The JWS algorithm name.
    pub fn jws_alg(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "RS256",
            KeyType::EccP256 => "ES256",
        }
    }
}

impl FromStr for KeyType {
    type Err = TpmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "rsa2048" => Ok(KeyType::Rsa2048),
            "ecc-p256" => Ok(KeyType::EccP256),
            other => Err(TpmError::BadKeyType { input: other.to_owned() }),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Rsa2048 => "rsa2048",
            KeyType::EccP256 => "ecc-p256",
        })
    }
}

/// A public key read from the TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_type: KeyType,
    spki_der: Vec<u8>,
}

impl PublicKey {
    /// Wraps a SubjectPublicKeyInfo DER of a known type.
    pub fn new(key_type: KeyType, spki_der: Vec<u8>) -> PublicKey {
        PublicKey { key_type, spki_der }
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_table() {
        assert_eq!("rsa2048".parse::<KeyType>().unwrap(), KeyType::Rsa2048);
        assert_eq!("ecc-p256".parse::<KeyType>().unwrap().jws_alg(), "ES256");
        for bad in ["rsa", "RSA2048", "ecc", "p256", "rsa4096", ""] {
            assert!(bad.parse::<KeyType>().is_err(), "{bad:?}");
        }
    }
}
