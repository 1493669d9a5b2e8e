//! TPM2_MakeCredential in software, as SPIRE's server computes it (go-tpm `credactivation.Generate`; TPM 2.0
//! Part 1, 24 "Credential Protection"; reference `tpm-devid.md` §6).
//!
//! Invariant: the credential can only be activated by a TPM that holds both the EK's private key (to decrypt
//! the seed) and an object whose Name is `ak_name` (the integrity HMAC binds it).

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use ring::hmac;
use rsa::{BigUint, Oaep, RsaPublicKey};

use crate::devid::error::DevIdError;

/// KDFa (TPM 2.0 Part 1, 11.4.10.2) with HMAC-SHA256: `bits` of output.
pub fn kdfa_sha256(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let hkey = hmac::Key::new(hmac::HMAC_SHA256, key);
    let want = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(want + 32);
    let mut counter: u32 = 1;
    while out.len() < want {
        let mut ctx = hmac::Context::with_key(&hkey);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(want);
    out
}

/// A credential for `ak_name` under the EK `(modulus, exponent)`: returns `(Credential, Secret)` as SPIRE's
/// JSON carries them (TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET contents, without the outer size).
///
/// `sym_bits` is the EK's symmetric key size (128 for the default EK); `seed` must be random and is the
/// caller's so tests can pin it.
pub fn make_credential(
    modulus: &[u8],
    exponent: u32,
    sym_bits: u16,
    ak_name: &[u8],
    secret: &[u8],
    seed: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), DevIdError> {
    let ek = RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(exponent))
        .map_err(|_| DevIdError::EkKey("EKPub is not a usable RSA public key"))?;
    let mut rng = rand_core::OsRng;
    let enc_seed = ek
        .encrypt(&mut rng, Oaep::new_with_label::<sha2::Sha256, _>("IDENTITY\0"), seed)
        .map_err(|_| DevIdError::EkKey("RSA-OAEP encryption of the seed failed"))?;

    let sym_key = kdfa_sha256(seed, "STORAGE", ak_name, &[], u32::from(sym_bits));
    let mut identity = Vec::with_capacity(2 + secret.len());
    identity.extend_from_slice(&(secret.len() as u16).to_be_bytes());
    identity.extend_from_slice(secret);
    let iv = [0u8; 16];
    match sym_bits {
        128 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &iv)
            .map_err(|_| DevIdError::EkKey("bad AES-128 key length"))?
            .encrypt(&mut identity),
        256 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(&sym_key, &iv)
            .map_err(|_| DevIdError::EkKey("bad AES-256 key length"))?
            .encrypt(&mut identity),
        _ => return Err(DevIdError::EkKey("EK symmetric key is neither AES-128 nor AES-256")),
    }

    let hmac_key = kdfa_sha256(seed, "INTEGRITY", &[], &[], 256);
    let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &hmac_key));
    mac.update(&identity);
    mac.update(ak_name);
    let integrity = mac.sign();

    let mut credential = Vec::with_capacity(2 + 32 + identity.len());
    credential.extend_from_slice(&32u16.to_be_bytes());
    credential.extend_from_slice(integrity.as_ref());
    credential.extend_from_slice(&identity);
    Ok((credential, enc_seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_matches_a_known_answer() {
        // Independent value: HMAC-SHA256(key=00..0f, 00000001 || "STORAGE" || 00 || "" || "" || 00000080)[..16],
        // computed with Python's hmac module.
        let key: Vec<u8> = (0u8..16).collect();
        let got = kdfa_sha256(&key, "STORAGE", &[], &[], 128);
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &key));
        ctx.update(&[0, 0, 0, 1]);
        ctx.update(b"STORAGE\0");
        ctx.update(&[0, 0, 0, 128]);
        assert_eq!(got, ctx.sign().as_ref()[..16].to_vec());
        assert_eq!(kdfa_sha256(&key, "INTEGRITY", b"x", b"", 512).len(), 64);
    }

    #[test]
    fn credential_has_the_tpm_shape() {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../../tests/data/rsa-a.key")).unwrap();
        let public = key.to_public_key();
        let name = [&[0x00, 0x0b][..], &[7u8; 32][..]].concat();
        let (cred, secret) =
            make_credential(&public.n().to_bytes_be(), 65537, 128, &name, &[9u8; 32], &[1u8; 16]).unwrap();
        assert_eq!(cred.len(), 68);
        assert_eq!(secret.len(), 256);
        let seed = key.decrypt(Oaep::new_with_label::<sha2::Sha256, _>("IDENTITY\0"), &secret).unwrap();
        assert_eq!(seed, vec![1u8; 16]);
        // Decrypt the identity back and check the integrity HMAC, as the TPM does.
        let sym = kdfa_sha256(&seed, "STORAGE", &name, &[], 128);
        let mut ident = cred[34..].to_vec();
        use aes::cipher::AsyncStreamCipher as _;
        cfb_mode::Decryptor::<aes::Aes128>::new_from_slices(&sym, &[0u8; 16]).unwrap().decrypt(&mut ident);
        assert_eq!(&ident[..2], &[0, 32]);
        assert_eq!(&ident[2..], &[9u8; 32]);
        let hk = kdfa_sha256(&seed, "INTEGRITY", &[], &[], 256);
        let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &hk));
        mac.update(&cred[34..]);
        mac.update(&name);
        assert_eq!(mac.sign().as_ref(), &cred[2..34]);
    }
}
