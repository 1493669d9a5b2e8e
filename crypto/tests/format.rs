//! The wire format (byte-compatible with golang-jwt as the Go original uses it), independent verification by
//! the `jsonwebtoken` crate, key parsing and bundle parsing tables.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::*;
use crypto::bundle::Bundle;
use crypto::keys::VerifyingKey;
use crypto::token::{self, Claims, Payload, TokenBuilder};
use crypto::{Alg, BundleError, KeyError};

#[test]
fn segments_match_what_golang_jwt_writes() {
    // golang-jwt v5: header map marshalled with sorted keys; claims struct fields in declaration order
    // (spiffetb or jwt, then RegisteredClaims: iss, exp, nbf, iat), encoding/json's HTML-safe escaping.
    let bundle = "-----BEGIN CERTIFICATE-----\nA<B>&C\u{2028}\"\\\n-----END CERTIFICATE-----\n";
    let claims = Claims {
        payload: Payload::Bundle(bundle.into()),
        iss: "host-a".into(),
        iat: 100,
        nbf: 100,
        exp: 700,
        trust_domain: None,
    };
    let expected_claims = r#"{"spiffetb":"-----BEGIN CERTIFICATE-----\nA\u003cB\u003e\u0026C\u2028\"\\\n-----END CERTIFICATE-----\n","iss":"host-a","exp":700,"nbf":100,"iat":100}"#;
    let builder = TokenBuilder::new(Alg::Rs256, &claims);
    let want = format!("{}.{}", B64.encode(r#"{"alg":"RS256","typ":"JWT"}"#), B64.encode(expected_claims));
    assert_eq!(builder.signing_input(), want);
    // Nested layer, ES256, no issuer (omitempty).
    let nested = Claims {
        payload: Payload::Token("a.b.c".into()),
        iss: String::new(),
        iat: 5,
        nbf: 5,
        exp: 65,
        trust_domain: None,
    };
    let b = TokenBuilder::new(Alg::Es256, &nested);
    let want = format!(
        "{}.{}",
        B64.encode(r#"{"alg":"ES256","typ":"JWT"}"#),
        B64.encode(r#"{"jwt":"a.b.c","exp":65,"nbf":5,"iat":5}"#)
    );
    assert_eq!(b.signing_input(), want);
    // The trust-domain claim comes after iss; a token without one is byte-for-byte what it was.
    let bound = Claims { trust_domain: Some("example.org".into()), ..claims.clone() };
    let want = r#"{"spiffetb":"x","iss":"host-a","spiffetd":"example.org","exp":700,"nbf":100,"iat":100}"#;
    let bound = Claims { payload: Payload::Bundle("x".into()), ..bound };
    assert_eq!(crypto::token::claims_json(&bound), want);
    // Wrong signature lengths are refused when assembling.
    assert!(TokenBuilder::new(Alg::Es256, &nested).finish(&[0; 63]).is_err());
    assert!(TokenBuilder::new(Alg::Rs256, &nested).finish(&[0; 64]).is_err());
}

fn jsonwebtoken_decode(token: &str, key: &TestKey) -> serde_json::Value {
    let (alg, dk) = match key.alg() {
        Alg::Rs256 => {
            (jsonwebtoken::Algorithm::RS256, jsonwebtoken::DecodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap())
        }
        Alg::Es256 => {
            (jsonwebtoken::Algorithm::ES256, jsonwebtoken::DecodingKey::from_ec_pem(key.pem.as_bytes()).unwrap())
        }
    };
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_required_spec_claims(&["exp", "iat"]);
    v.leeway = 5;
    v.validate_nbf = true;
    jsonwebtoken::decode::<serde_json::Value>(token, &dk, &v).unwrap().claims
}

#[test]
fn an_independent_jwt_library_accepts_every_layer() {
    let (a, d) = (TestKey::load("rsa-a"), TestKey::load("ec-d"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let inner = a.token_at(Payload::Bundle(ca()), now, 600);
    let outer = d.token_at(Payload::Token(inner.clone()), now, 600);
    let claims = jsonwebtoken_decode(&outer, &d);
    assert_eq!(claims["jwt"].as_str().unwrap(), inner);
    let claims = jsonwebtoken_decode(claims["jwt"].as_str().unwrap(), &a);
    assert_eq!(claims["spiffetb"].as_str().unwrap(), ca());
    assert_eq!(claims["iss"].as_str().unwrap(), "rsa-a");
}

#[test]
fn inspect_accepts_tokens_and_refuses_error_bodies() {
    let a = TestKey::load("rsa-a");
    let t = a.bundle_token(&ca());
    let i = token::inspect(&t).unwrap();
    assert_eq!((i.alg, i.payload, i.exp), (Alg::Rs256, "spiffetb", NOW + 600));
    for bad in ["", "Failed to parse your token", "Internal Server Error\n", "a.b.c", &t[..t.len() - 300]] {
        assert!(token::inspect(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn key_parsing_table() {
    let rsa = TestKey::load("rsa-a");
    let ec = TestKey::load("ec-d");
    assert_eq!(VerifyingKey::from_pem("a", rsa.pem.as_bytes()).unwrap().alg(), Alg::Rs256);
    assert_eq!(VerifyingKey::from_pem("d", ec.pem.as_bytes()).unwrap().alg(), Alg::Es256);
    // PKCS#1 "RSA PUBLIC KEY", as golang-jwt's ParseRSAPublicKeyFromPEM also accepts.
    let pkcs1 = {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let common::Signer::Rsa(k) = &rsa.signer else { unreachable!() };
        k.to_public_key().to_pkcs1_pem(Default::default()).unwrap()
    };
    let k1 = VerifyingKey::from_pem("p1", pkcs1.as_bytes()).unwrap();
    assert!(k1.same_key(&rsa.verifying()), "PKCS#1 and SPKI forms are the same key");
    let unsupported = |r: Result<VerifyingKey, KeyError>| matches!(r, Err(KeyError::Unsupported { .. }));
    let not_pem = |r: Result<VerifyingKey, KeyError>| matches!(r, Err(KeyError::NotPem { .. }));
    assert!(unsupported(VerifyingKey::from_pem("x", data("rsa1024.pub.pem").as_bytes())), "RSA-1024");
    assert!(unsupported(VerifyingKey::from_pem("x", data("p384.pub.pem").as_bytes())), "P-384");
    assert!(unsupported(VerifyingKey::from_pem("x", data("ed25519.pub.pem").as_bytes())), "Ed25519");
    assert!(not_pem(VerifyingKey::from_pem("x", b"garbage")), "garbage");
    assert!(not_pem(VerifyingKey::from_pem("x", b"")), "empty");
    assert!(not_pem(VerifyingKey::from_pem("x", ca().as_bytes())), "a certificate instead of a key");
    assert!(not_pem(VerifyingKey::from_pem("x", data("rsa-a.key").as_bytes())), "a private key");
    let broken = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert!(matches!(VerifyingKey::from_pem("x", broken.as_bytes()), Err(KeyError::Malformed { .. })));
}

/// One key in two DER encodings (an RSA SubjectPublicKeyInfo with and without the NULL parameter) is one key:
/// same fingerprint, same PEM out, and a policy refuses it twice. It used to count as two keys, so one key met
/// `threshold: 2`.
#[test]
fn one_key_in_two_encodings_is_one_key() {
    use der::{Decode, Encode};
    let rsa = TestKey::load("rsa-a");
    let with_null = rsa.verifying();
    let der_with_null = crypto::pem::blocks(&rsa.pem).unwrap().remove(0).der;
    let mut spki = spki::SubjectPublicKeyInfoOwned::from_der(&der_with_null).unwrap();
    assert!(spki.algorithm.parameters.is_some(), "the control: openssl's form carries NULL");
    spki.algorithm.parameters = None;
    let der_without_null = spki.to_der().unwrap();
    assert_ne!(der_with_null, der_without_null);
    let without_null = VerifyingKey::from_spki_der("a-again.pem", &der_without_null).unwrap();
    assert!(without_null.same_key(&with_null), "the same key");
    assert_eq!(without_null.fingerprint(), with_null.fingerprint());
    assert_eq!(without_null.to_pem(), with_null.to_pem(), "written out in one canonical form");
    let b = TestKey::load("rsa-b").verifying();
    let twice = crypto::policy::Policy::threshold(2, vec![with_null, without_null, b], crypto::Limits::default());
    assert!(matches!(twice, Err(crypto::PolicyError::DuplicateKey(_))), "{twice:?}");
}

#[test]
fn bundle_table() {
    let ca_ec = ca();
    let ca_rsa = data("ca-rsa.pem");
    let leaf = data("leaf.pem");
    let b = Bundle::parse(&ca_ec).unwrap();
    assert_eq!(b.certificates().len(), 1);
    assert_eq!(b.to_pem(), ca_ec, "canonical PEM round-trips openssl's output");
    let two = Bundle::parse(&format!("text before is skipped\n{ca_ec}{leaf}{ca_rsa}")).unwrap();
    assert_eq!(two.certificates().len(), 3);
    // PEM -> SPIFFE JSON -> parse: same certificates, keys rendered per type.
    let json = two.to_spiffe_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(B64.decode(keys[0]["x"].as_str().unwrap()).unwrap().len(), 32);
    assert_eq!(keys[2]["kty"], "RSA");
    assert!(keys.iter().all(|k| k["use"] == "x509-svid" && k["x5c"].as_array().unwrap().len() == 1));
    assert_eq!(Bundle::parse(&json).unwrap().certificates(), two.certificates());
    // SPIFFE JSON with a JWT authority and sequence.
    let with_jwt = format!(
        r#"{{"keys":[{},{{"use":"jwt-svid","kty":"EC","kid":"k"}}],"spiffe_sequence":7,"spiffe_refresh_hint":300}}"#,
        keys[0]
    );
    let parsed = Bundle::parse(&with_jwt).unwrap();
    assert_eq!((parsed.certificates().len(), parsed.sequence()), (1, Some(7)));
    // Negative table.
    let der_b64 = keys[0]["x5c"][0].as_str().unwrap();
    let cases: Vec<(&str, String, BundleError)> = vec![
        ("empty", String::new(), BundleError::NoCertificates),
        ("text", "hello".into(), BundleError::NoCertificates),
        ("leaf only", leaf.clone(), BundleError::NoCaCertificate),
        ("public key block", TestKey::load("ec-d").pem, BundleError::NotCertificate("PUBLIC KEY".into())),
        ("broken base64", "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n".into(), BundleError::BadPem),
        (
            "not X.509",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            BundleError::BadCertificate { index: 0 },
        ),
        (
            "x509-svid with two x5c",
            format!(r#"{{"keys":[{{"use":"x509-svid","x5c":["{der_b64}","{der_b64}"]}}]}}"#),
            BundleError::BadJson("x509-svid key must have exactly one x5c certificate".into()),
        ),
        ("key without use", r#"{"keys":[{"kty":"EC"}]}"#.into(), BundleError::BadJson("key without \"use\"".into())),
        ("JSON without keys", r#"{"x":1}"#.into(), BundleError::BadJson("no \"keys\" array".into())),
        ("Ed25519 CA only", data("ed25519-ca.pem"), BundleError::UnsupportedKey { index: 0 }),
        (
            "Ed25519 CA beside an EC CA",
            format!("{ca_ec}{}", data("ed25519-ca.pem")),
            BundleError::UnsupportedKey { index: 1 },
        ),
    ];
    for (case, text, want) in cases {
        assert_eq!(Bundle::parse(&text).unwrap_err(), want, "{case}");
    }
}

#[test]
fn trust_domain_names_table() {
    for ok in ["example.org", "td", "a-b_c.d", "0.example", &"a".repeat(255)] {
        assert!(crypto::token::is_trust_domain(ok), "{ok:?}");
    }
    for bad in ["", "Example.org", "example.org/x", "spiffe://x", "a b", "a&trust-domain=b", "é", &"a".repeat(256)] {
        assert!(!crypto::token::is_trust_domain(bad), "{bad:?}");
    }
}

/// What a co-signer sends back must be the token it was sent plus one layer: another token, a token wrapping
/// another token, the token itself, two layers more, or garbage are each refused. `Token` reads every layer once.
#[test]
fn a_token_wraps_exactly_the_token_sent() {
    use crypto::token::Token;
    let (a, d) = (TestKey::load("rsa-a"), TestKey::load("ec-d"));
    let sent = Token::parse(&a.bundle_token(&ca())).unwrap();
    let other = d.bundle_token(&ca());
    let reply = Token::parse(&d.wrap(&sent)).unwrap();
    assert!(reply.wraps(&sent), "one layer over the token sent");
    assert_eq!((reply.layers(), reply.kind(), reply.exp()), (2, token::Kind::Bundle, NOW + 600));
    for (case, reply) in [
        ("another token, wrapped", d.wrap(&other)),
        ("the token sent, unwrapped", sent.to_string()),
        ("two layers over it", d.wrap(&d.wrap(&sent))),
    ] {
        assert!(!Token::parse(&reply).unwrap().wraps(&sent), "{case}: accepted");
    }
    for bad in ["signer failed", "a.b.c", ""] {
        assert!(Token::parse(bad).is_err(), "{bad:?} taken for a token");
    }
    // The earliest exp of any layer, not the outer one's.
    let short_inner = Token::parse(&d.wrap(&a.token_at(Payload::Bundle(ca()), NOW, 60))).unwrap();
    assert_eq!(short_inner.exp(), NOW + 60);
}
