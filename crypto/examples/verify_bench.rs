//! `verify_bench`: verification cost per signature, through `VerifyingKey::verify` and through a whole
//! `Policy::verify` of one- and two-layer tokens. Keys are the test keys in tests/data. Used by `make bench`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark program: fail loudly")]

use std::time::Instant;

use crypto::keys::VerifyingKey;
use crypto::policy::Policy;
use crypto::token::{Claims, Payload, TokenBuilder};
use crypto::{Alg, Limits};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};

fn data(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[allow(clippy::large_enum_variant, reason = "two keys in a benchmark")]
enum Key {
    Rsa(rsa::RsaPrivateKey),
    Ec(p256::ecdsa::SigningKey),
}

impl Key {
    fn alg(&self) -> Alg {
        if matches!(self, Key::Rsa(_)) {
            Alg::Rs256
        } else {
            Alg::Es256
        }
    }
    fn public(&self, name: &str) -> VerifyingKey {
        let pem = match self {
            Key::Rsa(k) => k.to_public_key().to_public_key_pem(Default::default()).unwrap(),
            Key::Ec(k) => k.verifying_key().to_public_key_pem(Default::default()).unwrap(),
        };
        VerifyingKey::from_pem(name, pem.as_bytes()).unwrap()
    }
    fn token(&self, payload: Payload, now: u64) -> String {
        let b = TokenBuilder::new(
            self.alg(),
            &Claims { payload, iss: "bench".into(), iat: now, nbf: now, exp: now + 600, trust_domain: None },
        );
        let d = b.digest();
        let sig = match self {
            Key::Rsa(k) => k.sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &d).unwrap(),
            Key::Ec(k) => {
                let s: p256::ecdsa::Signature = k.sign_prehash(&d).unwrap();
                s.to_bytes().to_vec()
            }
        };
        b.finish(&sig).unwrap()
    }
}

/// Median of 5 rounds of `n` calls, in microseconds per call.
fn time(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn main() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let rsa_a = Key::Rsa(rsa::RsaPrivateKey::from_pkcs8_pem(&data("rsa-a.key")).unwrap());
    let rsa_b = Key::Rsa(rsa::RsaPrivateKey::from_pkcs8_pem(&data("rsa-b.key")).unwrap());
    let ec = Key::Ec(p256::ecdsa::SigningKey::from_pkcs8_pem(&data("ec-d.key")).unwrap());
    let bundle = data("ca-ec.pem");
    for (tag, key, n) in [("rs256", &rsa_a, 4000), ("es256", &ec, 2000)] {
        let token = key.token(Payload::Bundle(bundle.clone()), now);
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        let vk = key.public("k");
        assert!(vk.verify(input.as_bytes(), &sig));
        let us = time(n, || assert!(vk.verify(input.as_bytes(), &sig)));
        println!("verify {tag}: {us:.1} us/signature (VerifyingKey::verify, median of 5 rounds x {n})");
    }
    let one = Policy::new(vec![rsa_a.public("a")], None, Limits::default()).unwrap();
    let t1 = rsa_a.token(Payload::Bundle(bundle.clone()), now);
    let us = time(2000, || assert!(one.verify(&t1, now).is_ok()));
    println!("policy rs256 1 layer: {us:.1} us/token, {us:.1} us/layer (parse, verify, bundle check)");
    let two = Policy::new(vec![rsa_a.public("a"), rsa_b.public("b")], None, Limits::default()).unwrap();
    let t2 = rsa_b.token(Payload::Token(t1.clone()), now);
    let us = time(2000, || assert!(two.verify(&t2, now).is_ok()));
    println!("policy rs256 2 layers: {us:.1} us/token, {:.1} us/layer", us / 2.0);

    // Three RSA keys: a 3-key chain beside a 3-of-3 threshold over the same keys, on the same token, then a
    // threshold token whose layers came in the reverse of the set's order (the most signature checks).
    let rsa_c = Key::Rsa(rsa::RsaPrivateKey::from_pkcs8_pem(&data("rsa-c.key")).unwrap());
    let three = || vec![rsa_a.public("a"), rsa_b.public("b"), rsa_c.public("c")];
    let chain3 = Policy::new(three(), None, Limits::default()).unwrap();
    let threshold3 = Policy::threshold(3, three(), Limits::default()).unwrap();
    let t3 = rsa_c.token(Payload::Token(t2.clone()), now);
    let reversed = rsa_a.token(
        Payload::Token(rsa_b.token(Payload::Token(rsa_c.token(Payload::Bundle(bundle.clone()), now)), now)),
        now,
    );
    let chain_us = time(1000, || assert!(chain3.verify(&t3, now).is_ok()));
    let thr_us = time(1000, || assert!(threshold3.verify(&t3, now).is_ok()));
    let rev_us = time(1000, || assert!(threshold3.verify(&reversed, now).is_ok()));
    println!("policy rs256 chain of 3 keys: {chain_us:.1} us/token");
    println!(
        "policy rs256 threshold 3 of 3, layers in the set's order: {thr_us:.1} us/token; ratio {:.2}x the chain",
        thr_us / chain_us
    );
    println!(
        "policy rs256 threshold 3 of 3, layers in reverse order: {rev_us:.1} us/token; ratio {:.2}x the chain",
        rev_us / chain_us
    );
}
