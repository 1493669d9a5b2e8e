//! The DevID's signature in the form X.509 and SPIRE's server read it (Go's `asn1` of an ECDSA signature): the
//! TPM's PKCS#1 v1.5 signature unchanged for RSA, and `r || s` as DER `SEQUENCE { INTEGER r, INTEGER s }` with
//! minimal integers for ECDSA. Used for the proof of possession and for the certificate request.

use tpm::KeyType;

/// An ECDSA signature that is not `r || s` of two non-zero 32-byte integers.
#[derive(Debug, thiserror::Error)]
#[error("an ECDSA signature of {0} bytes that is not r || s (32 bytes each, neither zero)")]
pub struct NotRawEcdsa(pub usize);

/// `raw` (as `tpm` returns signatures) in DER for a key of `key_type`.
pub fn der(key_type: KeyType, raw: Vec<u8>) -> Result<Vec<u8>, NotRawEcdsa> {
    match key_type {
        KeyType::Rsa2048 => Ok(raw),
        KeyType::EccP256 => p256::ecdsa::Signature::from_slice(&raw)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|_| NotRawEcdsa(raw.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_becomes_minimal_der_and_rsa_stays() {
        let mut raw = vec![0u8; 64];
        raw[31] = 1; // r = 1: one content byte
        raw[32] = 0x80; // s has its top bit set: a leading zero byte
        raw[63] = 1;
        let der = der(KeyType::EccP256, raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 3 + 2 + 33, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der.len(), 2 + 3 + 35);
        assert_eq!(super::der(KeyType::Rsa2048, vec![7; 256]).unwrap(), vec![7; 256]);
        for bad in [vec![1u8; 63], vec![1u8; 65], vec![0u8; 64]] {
            assert!(super::der(KeyType::EccP256, bad).is_err());
        }
    }
}
