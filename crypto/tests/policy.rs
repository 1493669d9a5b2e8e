//! The verification policy: positive and negative tables, each negative case with its own error kind.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::*;
use crypto::policy::Policy;
use crypto::token::Payload;
use crypto::{Limits, VerifyErrorKind as K};

fn policy(chain: &[&TestKey], backup: Option<&TestKey>) -> Policy {
    Policy::new(chain.iter().map(|k| k.verifying()).collect(), backup.map(|b| b.verifying()), Limits::default())
        .unwrap()
}

#[test]
fn positive_table() {
    let (a, b, c, d) = (TestKey::load("rsa-a"), TestKey::load("rsa-b"), TestKey::load("rsa-c"), TestKey::load("ec-d"));
    let bundle = ca();
    let t_a = a.bundle_token(&bundle);
    let t_d = d.bundle_token(&bundle);
    let t_ab = b.wrap(&t_a);
    let t_abd = d.wrap(&t_ab);
    let t_cb = b.wrap(&c.bundle_token(&bundle)); // backup c stands in for innermost a
    let t_ac = c.wrap(&t_a); // backup c stands in for outermost b
    let t_acd = d.wrap(&c.wrap(&t_a)); // backup c stands in for the middle key
    let t_c = c.bundle_token(&bundle);
    let cases: Vec<(&str, Policy, &str, bool)> = vec![
        ("single RSA key", policy(&[&a], None), &t_a, false),
        ("single P-256 key", policy(&[&d], None), &t_d, false),
        ("chain of 2", policy(&[&a, &b], None), &t_ab, false),
        ("chain of 3, mixed key types", policy(&[&a, &b, &d], None), &t_abd, false),
        ("chain of 2 with backup configured, unused", policy(&[&a, &b], Some(&c)), &t_ab, false),
        ("backup for the innermost layer", policy(&[&a, &b], Some(&c)), &t_cb, true),
        ("backup for the outermost layer", policy(&[&a, &b], Some(&c)), &t_ac, true),
        ("backup for a middle layer", policy(&[&a, &b, &d], Some(&c)), &t_acd, true),
        ("backup for the only layer", policy(&[&a], Some(&c)), &t_c, true),
    ];
    for (case, p, token, backup) in cases {
        let v = p.verify(token, NOW).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(v.used_backup, backup, "{case}");
        assert_eq!(v.bundle.certificates().len(), 1, "{case}");
        assert_eq!(v.signed_at, NOW, "{case}");
        assert_eq!(v.expires_at, NOW + 600, "{case}");
        assert_eq!(v.layers.len(), p.chain().len(), "{case}");
    }
}

#[test]
fn leeway_edges() {
    let a = TestKey::load("rsa-a");
    let p = policy(&[&a], None);
    let t = a.bundle_token(&ca()); // exp = NOW + 600
    assert!(p.verify(&t, NOW + 600 + 5).is_ok(), "exp + leeway passes");
    assert!(matches!(p.verify(&t, NOW + 600 + 6).unwrap_err().kind, K::Expired { .. }));
    assert!(p.verify(&t, NOW - 5).is_ok(), "iat - leeway passes");
    assert!(matches!(p.verify(&t, NOW - 6).unwrap_err().kind, K::IssuedInFuture { .. } | K::NotYetValid { .. }));
}

fn kind_name(k: &K) -> &'static str {
    match k {
        K::Empty => "Empty",
        K::TooLarge(_) => "TooLarge",
        K::Malformed => "Malformed",
        K::Base64(_) => "Base64",
        K::Json { .. } => "Json",
        K::AlgNone => "AlgNone",
        K::AlgNotAllowed(_) => "AlgNotAllowed",
        K::AlgMismatch { .. } => "AlgMismatch",
        K::ForbiddenHeader(_) => "ForbiddenHeader",
        K::WrongType(_) => "WrongType",
        K::BadSignature { .. } => "BadSignature",
        K::WrongOrder { .. } => "WrongOrder",
        K::BackupAlreadyUsed => "BackupAlreadyUsed",
        K::MissingExp => "MissingExp",
        K::MissingIat => "MissingIat",
        K::Expired { .. } => "Expired",
        K::NotYetValid { .. } => "NotYetValid",
        K::IssuedInFuture { .. } => "IssuedInFuture",
        K::LifetimeTooLong { .. } => "LifetimeTooLong",
        K::BadTime(_) => "BadTime",
        K::WrongPayloadKind { .. } => "WrongPayloadKind",
        K::TooFewLayers(_) => "TooFewLayers",
        K::TooManyLayers(_) => "TooManyLayers",
        K::MissingLayers { .. } => "MissingLayers",
        K::SameKeyTwice(_) => "SameKeyTwice",
        K::NotABundle(_) => "NotABundle",
        _ => "other",
    }
}

#[test]
fn negative_table() {
    let (a, b, c, d) = (TestKey::load("rsa-a"), TestKey::load("rsa-b"), TestKey::load("rsa-c"), TestKey::load("ec-d"));
    let bundle = ca();
    let good = a.bundle_token(&bundle);
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = {
        let claims = claims_json("spiffetb", &data("ca-rsa.pem"), NOW, Some(NOW + 600));
        format!("{}.{}.{}", parts[0], B64.encode(claims), parts[2])
    };
    let tampered_sig = {
        let mut sig = B64.decode(parts[2]).unwrap();
        sig[7] ^= 1;
        format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig))
    };
    let claims = claims_json("spiffetb", &bundle, NOW, Some(NOW + 600));
    let alg_none = format!("{}.{}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#), B64.encode(&claims));
    let hs256 = {
        use ring::hmac;
        let input = format!("{}.{}", B64.encode(r#"{"alg":"HS256","typ":"JWT"}"#), B64.encode(&claims));
        let key = hmac::Key::new(hmac::HMAC_SHA256, a.pem.as_bytes());
        format!("{input}.{}", B64.encode(hmac::sign(&key, input.as_bytes()).as_ref()))
    };
    // An ES256-signed token relabelled RS256, checked against the EC key.
    let rs_on_ec = {
        let t = d.bundle_token(&bundle);
        let p: Vec<&str> = t.split('.').collect();
        format!("{}.{}.{}", B64.encode(r#"{"alg":"RS256","typ":"JWT"}"#), p[1], p[2])
    };
    let es_on_rsa = {
        let p: Vec<&str> = good.split('.').collect();
        format!("{}.{}.{}", B64.encode(r#"{"alg":"ES256","typ":"JWT"}"#), p[1], p[2])
    };
    let rs = r#"{"alg":"RS256","typ":"JWT"}"#;
    let t_ab = b.wrap(&a.bundle_token(&bundle));
    let t_cc = c.wrap(&c.bundle_token(&bundle));
    let unknown_outer = c.wrap(&a.bundle_token(&bundle));
    let big = format!("{}.{}.{}", "a".repeat(600_000), "b".repeat(600_000), "c");
    let leaf_only = a.bundle_token(&data("leaf.pem"));
    let jku = a.raw_token(r#"{"alg":"RS256","typ":"JWT","jku":"https://evil/keys"}"#, &claims);
    let x5u = a.raw_token(r#"{"alg":"RS256","typ":"JWT","x5u":"https://evil/cert"}"#, &claims);

    let one = policy(&[&a], None);
    let one_ec = policy(&[&d], None);
    let two = policy(&[&a, &b], None);
    let two_backup = policy(&[&a, &b], Some(&c));
    let ba = policy(&[&b, &a], None);
    let cab = policy(&[&c, &a, &b], None);
    let two_backup_ec = policy(&[&a, &b], Some(&d));
    let only_b = policy(&[&b], None);
    let cases: Vec<(&str, &Policy, String, &str)> = vec![
        ("empty input", &one, String::new(), "Empty"),
        ("garbage", &one, "garbage".into(), "Malformed"),
        ("two dots only", &one, "..".into(), "Malformed"),
        ("four parts", &one, format!("{good}.x"), "Malformed"),
        ("header not base64url", &one, format!("!!.{}.{}", parts[1], parts[2]), "Base64"),
        ("header not JSON", &one, format!("{}.{}.{}", B64.encode("nope"), parts[1], parts[2]), "Json"),
        ("tampered payload", &one, tampered_payload, "BadSignature"),
        ("tampered signature", &one, tampered_sig, "BadSignature"),
        ("wrong key", &only_b, good.clone(), "BadSignature"),
        ("alg none", &one, alg_none, "AlgNone"),
        ("HS256 with the public key as secret", &one, hs256, "AlgNotAllowed"),
        ("RS256 header on an EC key", &one_ec, rs_on_ec, "AlgMismatch"),
        ("ES256 header on an RSA key", &one, es_on_rsa, "AlgMismatch"),
        ("jku header", &one, jku, "ForbiddenHeader"),
        ("x5u header", &one, x5u, "ForbiddenHeader"),
        ("typ not JWT", &one, a.raw_token(r#"{"alg":"RS256","typ":"JOSE+JSON"}"#, &claims), "WrongType"),
        ("expired", &one, a.token_at(Payload::Bundle(bundle.clone()), NOW - 700, 600), "Expired"),
        (
            "not yet valid (nbf future)",
            &one,
            a.raw_token(
                rs,
                &format!(
                    "{{\"spiffetb\":{},\"exp\":{},\"nbf\":{},\"iat\":{NOW}}}",
                    serde_json::to_string(&bundle).unwrap(),
                    NOW + 900,
                    NOW + 60
                ),
            ),
            "NotYetValid",
        ),
        (
            "iat in the future",
            &one,
            a.raw_token(
                rs,
                &format!(
                    "{{\"spiffetb\":{},\"exp\":{},\"iat\":{}}}",
                    serde_json::to_string(&bundle).unwrap(),
                    NOW + 600,
                    NOW + 60
                ),
            ),
            "IssuedInFuture",
        ),
        ("no exp", &one, a.raw_token(rs, &claims_json("spiffetb", &bundle, NOW, None)), "MissingExp"),
        (
            "exp not a number",
            &one,
            a.raw_token(rs, &format!("{{\"spiffetb\":\"x\",\"exp\":\"soon\",\"iat\":{NOW}}}")),
            "Json",
        ),
        ("lifetime too long", &one, a.token_at(Payload::Bundle(bundle.clone()), NOW, 90_000), "LifetimeTooLong"),
        ("chain layers in the wrong order", &ba, t_ab.clone(), "WrongOrder"),
        ("backup used for two layers", &two_backup, t_cc, "BackupAlreadyUsed"),
        ("outer layer by an unknown key while a backup is configured", &two_backup_ec, unknown_outer, "BadSignature"),
        ("a chain key's layer missing", &cab, t_ab.clone(), "MissingLayers"),
        ("too many layers", &only_b, t_ab.clone(), "TooManyLayers"),
        ("innermost carries jwt", &one, a.token_at(Payload::Token("x.y.z".into()), NOW, 600), "TooManyLayers"),
        ("outer carries spiffetb", &two, b.bundle_token(&bundle), "MissingLayers"),
        (
            "both payload claims",
            &one,
            a.raw_token(rs, &format!("{{\"spiffetb\":\"x\",\"jwt\":\"y\",\"exp\":{},\"iat\":{NOW}}}", NOW + 60)),
            "WrongPayloadKind",
        ),
        ("payload that is not a bundle", &one, a.bundle_token("hello, I am not a bundle"), "NotABundle"),
        ("bundle without a CA", &one, leaf_only, "NotABundle"),
        ("oversized token", &one, big, "TooLarge"),
    ];
    let mut seen = std::collections::HashSet::new();
    for (case, p, token, want) in cases {
        let err = match p.verify(&token, NOW) {
            Ok(_) => panic!("{case}: accepted"),
            Err(e) => e,
        };
        assert_eq!(kind_name(&err.kind), want, "{case}: got {err}");
        assert!(!err.to_string().contains(&a.pem), "{case}: key material in the error");
        seen.insert(want);
    }
    assert!(seen.len() >= 20, "the table exercises {} distinct error kinds", seen.len());
}

/// Each refusal of a chain says what is really wrong, in words an operator can act on. A side-a token that lacks
/// b's co-signature used to be refused as "chain layers in the wrong order".
#[test]
fn chain_refusals_name_their_real_cause() {
    let (a, b, c, d) = (TestKey::load("rsa-a"), TestKey::load("rsa-b"), TestKey::load("rsa-c"), TestKey::load("ec-d"));
    let bundle = ca();
    let t_a = a.bundle_token(&bundle);
    let ab = policy(&[&a, &b], None);
    let ab_c = policy(&[&a, &b], Some(&c));
    let abd = policy(&[&a, &b, &d], None);
    let ab_d = policy(&[&a, &b], Some(&d));
    let cases: Vec<(&str, &Policy, String, usize, &str)> = vec![
        (
            "side a's token without b's co-signature",
            &ab,
            t_a.clone(),
            0,
            "no layer by rsa-b.pem: the token has 1 of the chain's 2 layers",
        ),
        (
            "the same, the chain's key types mixed",
            &abd,
            b.wrap(&t_a),
            0,
            "no layer by ec-d.pem: the token has 2 of the chain's 3 layers",
        ),
        (
            "the middle layer missing",
            &abd,
            d.wrap(&t_a),
            1,
            "no layer by rsa-b.pem: the token has 2 of the chain's 3 layers",
        ),
        (
            "the backup alone for a chain of two",
            &ab_c,
            c.bundle_token(&bundle),
            0,
            "no layer by rsa-a.pem, rsa-b.pem (the backup stands in for one of them): the token has 1 of the chain's 2 layers",
        ),
        ("an extra layer", &ab_c, c.wrap(&b.wrap(&t_a)), 0, "too many layers: the chain has 2"),
        ("an extra layer by an unknown key", &ab, c.wrap(&b.wrap(&t_a)), 0, "signature does not verify with rsa-b.pem"),
        (
            "wrong order",
            &ab,
            a.wrap(&b.bundle_token(&bundle)),
            0,
            "signed by rsa-a.pem, but rsa-b.pem signs this layer: chain layers in the wrong order",
        ),
        ("an unknown key", &ab, c.wrap(&t_a), 0, "signature does not verify with rsa-b.pem"),
        (
            "an unknown key, a backup configured",
            &ab_d,
            c.wrap(&t_a),
            0,
            "signature does not verify with rsa-b.pem nor the backup key",
        ),
        (
            "the backup twice",
            &ab_c,
            c.wrap(&c.bundle_token(&bundle)),
            1,
            "the backup key already stood in for another layer; it may replace only one",
        ),
        (
            "a chain key twice",
            &ab_c,
            a.wrap(&t_a),
            1,
            "key rsa-a.pem signed a second layer; each key signs one layer at most",
        ),
    ];
    for (case, p, token, layer, want) in cases {
        let err = p.verify(&token, NOW).expect_err(case);
        assert_eq!(err.to_string(), format!("layer {layer}: {want}"), "{case}");
    }
}

/// Nesting is bounded: a token nested deeper than `max_depth` (8) is refused, by a policy and by the unverified walk
/// signer-unix and `sign keys` use, before more than `max_depth` layers are read.
#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    let a = TestKey::load("rsa-a");
    let limits = Limits::default();
    let mut token = a.bundle_token(&ca());
    for _ in 0..limits.max_depth {
        token = a.wrap(&token);
    }
    let err = crypto::token::innermost_unverified(&token, &limits).unwrap_err();
    assert_eq!(err.kind, K::TooManyLayers(limits.max_depth), "{err}");
    let keys = ["rsa-a", "rsa-b", "rsa-c"].map(TestKey::load);
    let set = Policy::threshold(3, keys.iter().map(|k| k.verifying()).collect(), limits).unwrap();
    assert!(set.verify(&token, NOW).is_err());
    // `max_depth` layers are read to their end.
    let mut deepest = a.bundle_token(&ca());
    for _ in 1..limits.max_depth {
        deepest = a.wrap(&deepest);
    }
    let (_, payload) = crypto::token::innermost_unverified(&deepest, &limits).unwrap();
    assert!(matches!(payload, Payload::Bundle(_)));
}

#[test]
fn the_go_originals_bypass_is_closed() {
    // anchors.md §1.1: with a backup configured, the Go verifier let an outer layer through unverified when
    // neither the chain key nor the backup verified it. Holding only the inner key must not satisfy [a, b].
    let (a, b, c) = (TestKey::load("rsa-a"), TestKey::load("rsa-b"), TestKey::load("rsa-c"));
    let attacker_outer = a.wrap(&a.bundle_token(&ca())); // attacker re-wraps with the inner key
    let err = policy(&[&a, &b], Some(&c)).verify(&attacker_outer, NOW).unwrap_err();
    assert_eq!(err.kind, K::SameKeyTwice("rsa-a.pem".into()), "{err}");
    // And an expired outer layer is refused even though its signature is fine.
    let expired_outer = b.token_at(Payload::Token(a.bundle_token(&ca())), NOW - 700, 600);
    let err = policy(&[&a, &b], Some(&c)).verify(&expired_outer, NOW).unwrap_err();
    assert!(matches!(err.kind, K::Expired { .. }), "{err}");
}

#[test]
fn policy_construction_errors() {
    let (a, c) = (TestKey::load("rsa-a"), TestKey::load("rsa-c"));
    assert!(Policy::new(vec![], None, Limits::default()).is_err());
    assert!(Policy::new(vec![a.verifying(), a.verifying()], None, Limits::default()).is_err());
    assert!(Policy::new(vec![a.verifying()], Some(a.verifying()), Limits::default()).is_err());
    assert!(Policy::new(vec![c.verifying(); 9], None, Limits::default()).is_err());
}

fn threshold(k: usize, keys: &[&TestKey]) -> Policy {
    Policy::threshold(k, keys.iter().map(|k| k.verifying()).collect(), Limits::default()).unwrap()
}

#[test]
fn threshold_positive_table() {
    let (a, b, c, d) = (TestKey::load("rsa-a"), TestKey::load("rsa-b"), TestKey::load("rsa-c"), TestKey::load("ec-d"));
    let bundle = ca();
    let t_ab = b.wrap(&a.bundle_token(&bundle));
    let t_ba = a.wrap(&b.bundle_token(&bundle));
    let t_cd = d.wrap(&c.bundle_token(&bundle));
    let t_abc = c.wrap(&t_ab);
    let t_dca = a.wrap(&c.wrap(&d.bundle_token(&bundle)));
    let t_a = a.bundle_token(&bundle);
    let cases: Vec<(&str, Policy, &str, usize)> = vec![
        ("2 of 3, a then b", threshold(2, &[&a, &b, &c]), &t_ab, 2),
        ("2 of 3, in the other order", threshold(2, &[&a, &b, &c]), &t_ba, 2),
        ("2 of 4 with mixed key types", threshold(2, &[&a, &b, &c, &d]), &t_cd, 2),
        ("2 of 3 signed by all 3", threshold(2, &[&a, &b, &c]), &t_abc, 3),
        ("3 of 3", threshold(3, &[&a, &b, &c]), &t_abc, 3),
        ("3 of 4, any order", threshold(3, &[&a, &b, &c, &d]), &t_dca, 3),
        ("1 of 1", threshold(1, &[&a]), &t_a, 1),
    ];
    for (case, p, token, layers) in cases {
        let v = p.verify(token, NOW).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(v.layers.len(), layers, "{case}");
        assert!(!v.used_backup, "{case}");
        assert_eq!(v.bundle.certificates().len(), 1, "{case}");
        assert_eq!((v.signed_at, v.expires_at), (NOW, NOW + 600), "{case}");
    }
}

#[test]
fn threshold_negative_table() {
    let (a, b, c, d) = (TestKey::load("rsa-a"), TestKey::load("rsa-b"), TestKey::load("rsa-c"), TestKey::load("ec-d"));
    let bundle = ca();
    let t_a = a.bundle_token(&bundle);
    let t_aa = a.wrap(&t_a);
    let t_ad = d.wrap(&t_a);
    let t_ab = b.wrap(&t_a);
    let t_abc = c.wrap(&t_ab);
    let expired_outer = {
        let p = threshold(2, &[&a, &b, &c]);
        let t = b.wrap(&t_a);
        (p, t)
    };
    let p3 = threshold(2, &[&a, &b, &c]);
    let (p3of3, p2of2) = (threshold(3, &[&a, &b, &c]), threshold(2, &[&a, &b]));
    type Want = fn(&K) -> bool;
    let cases: Vec<(&str, &Policy, &str, u64, Want)> = vec![
        ("one signature for a threshold of 2", &p3, &t_a, NOW, |k| {
            matches!(k, K::ThresholdNotMet { needed: 2, signed, missing }
                if signed == &["rsa-a.pem"] && missing == &["rsa-b.pem", "rsa-c.pem"])
        }),
        ("the same key twice", &p3, &t_aa, NOW, |k| matches!(k, K::SameKeyTwice(n) if n == "rsa-a.pem")),
        ("a key outside the set", &p3, &t_ad, NOW, |k| matches!(k, K::NotInKeySet(_))),
        (
            "3 of 3 with only 2",
            &p3of3,
            &t_ab,
            NOW,
            |k| matches!(k, K::ThresholdNotMet { needed: 3, missing, .. } if missing == &["rsa-c.pem"]),
        ),
        ("more layers than keys", &p2of2, &t_abc, NOW, |k| matches!(k, K::NotInKeySet(_) | K::TooManyLayers(_))),
        ("expired", &expired_outer.0, &expired_outer.1, NOW + 700, |k| matches!(k, K::Expired { .. })),
        ("not a token", &p3, "garbage", NOW, |k| matches!(k, K::Malformed)),
    ];
    for (case, p, token, now, want) in cases {
        let e = p.verify(token, now).unwrap_err();
        assert!(want(&e.kind), "{case}: {e}");
    }
    // The reason names who signed and who did not.
    let e = p3.verify(&t_a, NOW).unwrap_err().to_string();
    assert!(e.contains("signed by 1 (rsa-a.pem), missing rsa-b.pem, rsa-c.pem"), "{e}");
    // Building a threshold policy: bad thresholds and repeated keys are refused.
    let keys = || vec![a.verifying(), b.verifying()];
    assert!(Policy::threshold(0, keys(), Limits::default()).is_err());
    assert!(Policy::threshold(3, keys(), Limits::default()).is_err());
    assert!(Policy::threshold(1, vec![], Limits::default()).is_err());
    assert!(Policy::threshold(1, vec![a.verifying(), a.verifying()], Limits::default()).is_err());
    // The chain meaning is untouched: a chain policy refuses what a threshold over the same keys accepts.
    assert!(policy(&[&a, &b], None).verify(&a.wrap(&b.bundle_token(&bundle)), NOW).is_err());
    assert!(threshold(2, &[&a, &b]).verify(&a.wrap(&b.bundle_token(&bundle)), NOW).is_ok());
}

#[test]
fn trust_domain_binding_table() {
    use crypto::policy::TrustDomainError as E;
    let a = TestKey::load("rsa-a");
    let p = policy(&[&a], None);
    let other_ca = data("ca-other-td.pem");
    let bound = a.bundle_token_for(&ca(), "example.org");
    let v = p.verify(&bound, NOW).unwrap();
    assert_eq!(v.trust_domain.as_deref(), Some("example.org"));
    assert_eq!(v.check_trust_domain(&"example.org".parse().unwrap()), Ok(()));
    type Want = fn(&E) -> bool;
    let cases: Vec<(&str, String, Want)> = vec![
        (
            "signed for another trust domain",
            bound.clone(),
            |e| matches!(e, E::Signed { got, .. } if got == "example.org"),
        ),
        ("bound to none", a.bundle_token(&ca()), |e| matches!(e, E::Unbound { .. })),
        (
            "a CA certificate of another trust domain",
            a.bundle_token_for(&format!("{}{other_ca}", ca()), "other.org"),
            |e| matches!(e, E::Certificate { got, .. } if got == "example.org"),
        ),
        (
            "a CA whose SPIFFE ID does not parse",
            a.bundle_token_for(&format!("{}{}", ca(), data("ca-upper-td.pem")), "other.org"),
            |e| matches!(e, E::BadCertificate(crypto::BundleError::BadSpiffeId { index: 1, .. })),
        ),
    ];
    for (case, token, want) in cases {
        let e = p.verify(&token, NOW).unwrap().check_trust_domain(&"other.org".parse().unwrap()).unwrap_err();
        assert!(want(&e), "{case}: {e}");
    }
    // Both CAs named: their trust domains, once each, in order.
    let two = p.verify(&a.bundle_token_for(&format!("{}{other_ca}", ca()), "example.org"), NOW).unwrap();
    assert_eq!(two.bundle.spiffe_trust_domains().unwrap(), ["example.org", "other.org"]);
    // Go's URL parser (and so SPIRE) lowercases the scheme: this CA is of other.org. It used to be skipped, so
    // a keyset for example.org took it.
    let upper = p.verify(&a.bundle_token_for(&data("ca-upper-scheme.pem"), "example.org"), NOW).unwrap();
    assert_eq!(upper.bundle.spiffe_trust_domains().unwrap(), ["other.org"]);
    assert!(matches!(
        upper.check_trust_domain(&"example.org".parse().unwrap()),
        Err(E::Certificate { got, .. }) if got == "other.org"
    ));
}
