//! Test keys (made once with openssl, in tests/data) and a software signer for building tokens.

#![allow(dead_code, clippy::unwrap_used, clippy::large_enum_variant)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use crypto::keys::VerifyingKey;
use crypto::token::{Claims, Payload, TokenBuilder};
use crypto::Alg;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};

pub const NOW: u64 = 1_800_000_000;

pub fn data(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub enum Signer {
    Rsa(rsa::RsaPrivateKey),
    Ec(p256::ecdsa::SigningKey),
}

pub struct TestKey {
    pub name: &'static str,
    pub signer: Signer,
    pub pem: String,
}

impl TestKey {
    pub fn load(name: &'static str) -> TestKey {
        let pem = data(&format!("{name}.key"));
        if name.starts_with("rsa") {
            let k = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
            let public = k.to_public_key().to_public_key_pem(Default::default()).unwrap();
            TestKey { name, signer: Signer::Rsa(k), pem: public }
        } else {
            let k = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).unwrap();
            let public = k.verifying_key().to_public_key_pem(Default::default()).unwrap();
            TestKey { name, signer: Signer::Ec(k), pem: public }
        }
    }

    pub fn alg(&self) -> Alg {
        match self.signer {
            Signer::Rsa(_) => Alg::Rs256,
            Signer::Ec(_) => Alg::Es256,
        }
    }

    pub fn verifying(&self) -> VerifyingKey {
        VerifyingKey::from_pem(&format!("{}.pem", self.name), self.pem.as_bytes()).unwrap()
    }

    pub fn sign_digest(&self, digest: &[u8; 32]) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(k) => k.sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest).unwrap(),
            Signer::Ec(k) => {
                let s: p256::ecdsa::Signature = k.sign_prehash(digest).unwrap();
                s.to_bytes().to_vec()
            }
        }
    }

    /// A token over `payload` valid from `iat` for `life` seconds.
    pub fn token_at(&self, payload: Payload, iat: u64, life: u64) -> String {
        let claims = Claims { payload, iss: self.name.into(), iat, nbf: iat, exp: iat + life, trust_domain: None };
        let b = TokenBuilder::new(self.alg(), &claims);
        let sig = self.sign_digest(&b.digest());
        b.finish(&sig).unwrap()
    }

    /// A bundle token bound to `trust_domain` (claim `spiffetd`).
    pub fn bundle_token_for(&self, bundle: &str, trust_domain: &str) -> String {
        let claims = Claims {
            payload: Payload::Bundle(bundle.into()),
            iss: self.name.into(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 600,
            trust_domain: Some(trust_domain.into()),
        };
        let b = TokenBuilder::new(self.alg(), &claims);
        let sig = self.sign_digest(&b.digest());
        b.finish(&sig).unwrap()
    }

    pub fn bundle_token(&self, bundle: &str) -> String {
        self.token_at(Payload::Bundle(bundle.into()), NOW, 600)
    }

    pub fn wrap(&self, inner: &str) -> String {
        self.token_at(Payload::Token(inner.into()), NOW, 600)
    }

    /// Signs arbitrary header and claims JSON (for malformed-token cases).
    pub fn raw_token(&self, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(input.as_bytes()).into();
        format!("{input}.{}", B64.encode(self.sign_digest(&digest)))
    }
}

pub fn ca() -> String {
    data("ca-ec.pem")
}

pub fn claims_json(payload_key: &str, payload: &str, iat: u64, exp: Option<u64>) -> String {
    let exp = exp.map(|e| format!(",\"exp\":{e}")).unwrap_or_default();
    format!(
        "{{\"{payload_key}\":{},\"iss\":\"t\"{exp},\"nbf\":{iat},\"iat\":{iat}}}",
        serde_json::to_string(payload).unwrap()
    )
}
