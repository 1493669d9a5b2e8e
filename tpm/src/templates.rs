//! Every object template and signature scheme the crate uses, in one place: the storage primaries (the
//! upstream SRK and TCG H-1/H-2), the signing keys (ours and SPIRE's DevID), SPIRE's AK; and the one mapping from a
//! key type to its signing scheme and from the TPM's signature to the bytes callers get.
//!
//! Invariant: the scheme is fixed by the key type (RSA-2048 -> RSASSA-SHA256, P-256 -> ECDSA-SHA256); an ECDSA
//! signature leaves here as `r || s`, each left-padded to 32 bytes.

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    EccPoint, EccScheme, HashScheme, Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa,
    PublicRsaParametersBuilder, RsaExponent, RsaScheme, Signature, SignatureScheme, SymmetricDefinitionObject,
};

use crate::key::KeyType;

/// A storage primary key template: restricted decrypt, AES-128-CFB, scheme NULL, SHA-256 name, empty unique.
/// Without `no_da` it is `tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb` (the upstream recipe's SRK);
/// with `no_da` it is the TCG EK Credential Profile "H-1" (RSA) / "H-2" (ECC) key SPIRE's `tpm_devid` derives.
pub(crate) fn storage_template(key_type: KeyType, no_da: bool) -> Result<Public, tss_esapi::Error> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(no_da)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    let b = PublicBuilder::new().with_name_hashing_algorithm(HashingAlgorithm::Sha256).with_object_attributes(attrs);
    match key_type {
        KeyType::Rsa2048 => b
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    RsaKeyBits::Rsa2048,
                    RsaExponent::default(),
                )
                .build()?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build(),
        KeyType::EccP256 => b
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP256,
                )
                .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build(),
    }
}

/// The TCG EK Credential Profile "H-1" (RSA) or "H-2" (ECC) storage primary template, as SPIRE's agent uses it.
pub(crate) fn srk_template(key_type: KeyType) -> Result<Public, tss_esapi::Error> {
    storage_template(key_type, true)
}

/// The attributes of an unrestricted, non-exportable signing key: fixedTPM, fixedParent, sensitiveDataOrigin,
/// userWithAuth, sign.
pub(crate) fn signing_attributes() -> Result<tss_esapi::attributes::ObjectAttributes, tss_esapi::Error> {
    attributes(false)
}

/// [`signing_attributes`], with noDA when `no_da`.
fn attributes(no_da: bool) -> Result<tss_esapi::attributes::ObjectAttributes, tss_esapi::Error> {
    ObjectAttributesBuilder::new()
        .with_no_da(no_da)
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .build()
}

/// An unrestricted signing key: RSA-2048 RSASSA-SHA256 or P-256 ECDSA-SHA256, with [`signing_attributes`] (SPIRE's
/// DevID template), and noDA when `no_da` (the daemons' persistent keys: their password is a random secret of 16
/// bytes or more, out of reach of guessing, and a daemon restarting with a wrong one must not lock every other
/// key of the TPM out).
pub(crate) fn signing_template(key_type: KeyType, no_da: bool) -> Result<Public, tss_esapi::Error> {
    let attrs = attributes(no_da)?;
    let sha256 = HashScheme::new(HashingAlgorithm::Sha256);
    let builder =
        PublicBuilder::new().with_name_hashing_algorithm(HashingAlgorithm::Sha256).with_object_attributes(attrs);
    match key_type {
        KeyType::Rsa2048 => builder
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new_unrestricted_signing_key(
                    RsaScheme::RsaSsa(sha256),
                    RsaKeyBits::Rsa2048,
                    RsaExponent::default(),
                )
                .build()?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default())
            .build(),
        KeyType::EccP256 => builder
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new_unrestricted_signing_key(EccScheme::EcDsa(sha256), EccCurve::NistP256)
                    .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build(),
    }
}

/// The AK template: go-tpm-tools `AKTemplateRSA()` (attributes 0x00050072, RSASSA-SHA256, 2048 bits, unique
/// empty), which SPIRE's server expects (it verifies PKCS#1 v1.5 with the hash of the AK's scheme).
pub(crate) fn ak_template() -> Result<Public, tss_esapi::Error> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_rsa_parameters(
            PublicRsaParametersBuilder::new()
                .with_symmetric(SymmetricDefinitionObject::Null)
                .with_scheme(RsaScheme::RsaSsa(HashScheme::new(HashingAlgorithm::Sha256)))
                .with_key_bits(RsaKeyBits::Rsa2048)
                .with_exponent(RsaExponent::default())
                .with_is_signing_key(true)
                .with_restricted(true)
                .build()?,
        )
        .with_rsa_unique_identifier(PublicKeyRsa::default())
        .build()
}

/// The signing scheme of `key_type`'s keys.
pub(crate) fn signature_scheme(key_type: KeyType) -> SignatureScheme {
    let hash_scheme = HashScheme::new(HashingAlgorithm::Sha256);
    match key_type {
        KeyType::Rsa2048 => SignatureScheme::RsaSsa { hash_scheme },
        KeyType::EccP256 => SignatureScheme::EcDsa { hash_scheme },
    }
}

/// The signature's bytes: the PKCS#1 v1.5 signature for RSA, `r || s` (32 bytes each) for ECDSA. Refuses a
/// signature of another scheme than the key's, and an ECDSA component longer than 32 bytes.
pub(crate) fn raw_signature(key_type: KeyType, signature: Signature) -> Result<Vec<u8>, &'static str> {
    match (key_type, signature) {
        (KeyType::Rsa2048, Signature::RsaSsa(s)) => Ok(s.signature().value().to_vec()),
        (KeyType::EccP256, Signature::EcDsa(s)) => {
            let (r, s) = (s.signature_r().value(), s.signature_s().value());
            if r.len() > 32 || s.len() > 32 {
                return Err("ECDSA component longer than 32 bytes");
            }
            let mut out = vec![0u8; 64];
            out[32 - r.len()..32].copy_from_slice(r);
            out[64 - s.len()..].copy_from_slice(s);
            Ok(out)
        }
        _ => Err("signature of another scheme than the key's"),
    }
}
