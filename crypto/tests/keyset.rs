//! Signed keyset updates: what a node accepts, and a negative table with one error per rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use crypto::keyset::{verify_update, Document, DocumentError, UpdateError};
use crypto::policy::Policy;
use crypto::token::{Kind, Payload};
use crypto::{Limits, VerifyErrorKind as K};

const EXPIRES: u64 = NOW + 90 * 86400;

fn chain(keys: &[&TestKey], backup: Option<&TestKey>) -> Policy {
    Policy::new(keys.iter().map(|k| k.verifying()).collect(), backup.map(|b| b.verifying()), Limits::default()).unwrap()
}

fn threshold(k: usize, keys: &[&TestKey]) -> Policy {
    Policy::threshold(k, keys.iter().map(|k| k.verifying()).collect(), Limits::default()).unwrap()
}

fn doc(keyset: &str, version: u64, policy: &Policy) -> String {
    Document::new(keyset, version, EXPIRES, policy).unwrap().text().to_owned()
}

/// The update over `text`, signed by `signers` innermost first.
fn signed(text: &str, signers: &[&TestKey]) -> String {
    let mut token = signers[0].token_at(Payload::Keyset(text.into()), NOW, 3600);
    for s in &signers[1..] {
        token = s.token_at(Payload::Token(token), NOW, 3600);
    }
    token
}

struct Keys {
    a: TestKey,
    b: TestKey,
    c: TestKey,
    d: TestKey,
    e: TestKey,
}

fn keys() -> Keys {
    Keys {
        a: TestKey::load("rsa-a"),
        b: TestKey::load("rsa-b"),
        c: TestKey::load("rsa-c"),
        d: TestKey::load("ec-d"),
        e: TestKey::load("ec-e"),
    }
}

#[test]
fn accepted_updates() {
    let Keys { a, b, c, d, .. } = keys();
    let single = chain(&[&a], Some(&c));
    let alone = chain(&[&a], None);
    let ha = chain(&[&a, &b], Some(&c));
    let t3 = threshold(2, &[&a, &b, &c]);
    let replaced = chain(&[&d], Some(&c));
    let moved = threshold(2, &[&a, &b, &d]);
    type Case<'a> = (&'a str, &'a Policy, u64, &'a Policy, Vec<&'a TestKey>, bool);
    let cases: Vec<Case> = vec![
        ("primary lost: the backup and the new key d", &single, 0, &replaced, vec![&c, &d], true),
        ("a backup added by the primary and the new backup", &alone, 0, &single, vec![&a, &c], false),
        ("HA chain to threshold 2 of the same keys", &ha, 0, &t3, vec![&a, &b], false),
        ("HA chain to threshold, the backup standing in", &ha, 0, &t3, vec![&c, &b], true),
        ("threshold: any 2, then the new key", &t3, 3, &moved, vec![&c, &b, &d], false),
        ("versions may jump", &single, 1, &replaced, vec![&c, &d], true),
    ];
    for (name, current, held, next, signers, backup) in cases {
        let text = doc("main", held + 4, next);
        let update = verify_update(current, "main", held, &signed(&text, &signers), NOW + 1)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(update.document.version(), held + 4, "{name}");
        assert_eq!(update.document.text(), text, "{name}");
        assert_eq!(update.used_backup, backup, "{name}");
        assert_eq!(update.layers.len(), signers.len(), "{name}");
        let outer_first: Vec<String> = signers.iter().rev().map(|k| format!("{}.pem", k.name)).collect();
        let got: Vec<&str> = update.layers.iter().map(|l| l.key_name.as_str()).collect();
        assert_eq!(got, outer_first, "{name}");
        assert_eq!(update.expires_at, NOW + 3600, "{name}");
    }
}

#[test]
fn refused_updates() {
    let Keys { a, b, c, d, e } = keys();
    let single = chain(&[&a], Some(&c));
    let ha = chain(&[&a, &b], Some(&c));
    let t3 = threshold(2, &[&a, &b, &c]);
    let replaced = chain(&[&d], Some(&c));
    let v1 = doc("main", 1, &replaced);
    let bundle_token = c.bundle_token(&ca());
    let expired = {
        let inner = c.token_at(Payload::Keyset(v1.clone()), NOW - 4000, 3600);
        d.token_at(Payload::Token(inner), NOW - 4000, 3600)
    };
    // A new key's layer written as a bundle layer around the update: the kinds are mixed.
    let mixed = {
        let inner = signed(&v1, &[&c]);
        let header = r#"{"alg":"ES256","typ":"JWT"}"#;
        let claims = format!(
            "{{\"jwt\":{},\"iss\":\"d\",\"exp\":{},\"nbf\":{NOW},\"iat\":{NOW}}}",
            serde_json::to_string(&inner).unwrap(),
            NOW + 60
        );
        d.raw_token(header, &claims)
    };
    type Want = fn(&UpdateError) -> bool;
    let cases: Vec<(&str, &Policy, u64, String, Want)> = vec![
        (
            "signed by an unknown key instead of the backup",
            &single,
            0,
            signed(&v1, &[&b, &d]),
            |e| matches!(e, UpdateError::Current(v) if matches!(v.kind, K::BadSignature { .. })),
        ),
        (
            "signed by the backup twice",
            &ha,
            0,
            signed(&doc("main", 1, &t3), &[&c, &c]),
            |e| matches!(e, UpdateError::Current(v) if v.kind == K::BackupAlreadyUsed),
        ),
        (
            "the new key d did not sign",
            &single,
            0,
            signed(&v1, &[&c]),
            |e| matches!(e, UpdateError::MissingNewKey { missing } if missing == &["ec-d.pem".to_owned()]),
        ),
        (
            "signed only by the key it introduces",
            &single,
            0,
            signed(&v1, &[&d]),
            |e| matches!(e, UpdateError::Current(v) if matches!(v.kind, K::TooFewLayers(_))),
        ),
        (
            "the new key signed inside, not outside",
            &single,
            0,
            signed(&v1, &[&d, &c]),
            |e| matches!(e, UpdateError::Current(v) if matches!(v.kind, K::TooManyLayers(_))),
        ),
        ("version equal to the one held", &single, 1, signed(&v1, &[&c, &d]), |e| {
            matches!(e, UpdateError::NotNewer { version: 1, held: 1 })
        }),
        ("version lower than the one held", &single, 2, signed(&v1, &[&c, &d]), |e| {
            matches!(e, UpdateError::NotNewer { version: 1, held: 2 })
        }),
        (
            "another keyset's name",
            &single,
            0,
            signed(&doc("other", 1, &replaced), &[&c, &d]),
            |e| matches!(e, UpdateError::WrongKeyset { got, want } if got == "other" && want == "main"),
        ),
        (
            "expired",
            &single,
            0,
            expired,
            |e| matches!(e, UpdateError::NewKeyLayer(v) if matches!(v.kind, K::Expired { .. })),
        ),
        (
            "a bundle token offered as an update",
            &single,
            0,
            bundle_token,
            |e| matches!(e, UpdateError::NotAnUpdate(v) if v.kind == K::WrongKind { expected: Kind::KeysetUpdate, got: Kind::Bundle }),
        ),
        (
            "a bundle-typed layer around an update",
            &single,
            0,
            mixed,
            |e| matches!(e, UpdateError::NotAnUpdate(v) if v.layer == 1 && matches!(v.kind, K::WrongKind { .. })),
        ),
        (
            "threshold not met",
            &t3,
            0,
            signed(&doc("main", 1, &single), &[&a]),
            |e| matches!(e, UpdateError::Current(v) if matches!(v.kind, K::ThresholdNotMet { needed: 2, .. })),
        ),
        (
            "the same key twice under a threshold",
            &t3,
            0,
            signed(&doc("main", 1, &single), &[&a, &a]),
            |e| matches!(e, UpdateError::Current(v) if v.kind == K::SameKeyTwice("rsa-a.pem".into())),
        ),
        (
            "an unknown key among the threshold's layers",
            &t3,
            0,
            signed(&doc("main", 1, &single), &[&a, &e]),
            |e| matches!(e, UpdateError::Current(v) if matches!(v.kind, K::NotInKeySet(_))),
        ),
        (
            "a document with an unknown field",
            &single,
            0,
            signed(&v1.replacen('{', "{\"extra\":1,", 1), &[&c, &d]),
            |e| matches!(e, UpdateError::Document(DocumentError::Json(_))),
        ),
        ("version 0", &single, 0, signed(&v1.replace("\"version\":1", "\"version\":0"), &[&c, &d]), |e| {
            matches!(e, UpdateError::Document(DocumentError::VersionZero))
        }),
        (
            "a key that is not PEM",
            &single,
            0,
            signed(&v1.replace("BEGIN PUBLIC KEY", "BEGIN NOTHING"), &[&c, &d]),
            |e| matches!(e, UpdateError::Document(DocumentError::Key(_))),
        ),
        (
            "the same key twice in the new policy",
            &single,
            0,
            {
                let twice = v1.replace("ec-d.pem", "x");
                let pem = serde_json::to_string(&c.verifying().to_pem()).unwrap();
                let text = twice.replacen(&serde_json::to_string(&d.verifying().to_pem()).unwrap(), &pem, 1);
                signed(&text, &[&c])
            },
            |e| matches!(e, UpdateError::Document(DocumentError::Policy(_))),
        ),
        ("a version far above the one held", &single, 1, signed(&doc("main", 1 + 1001, &replaced), &[&c, &d]), |e| {
            matches!(e, UpdateError::VersionJump { version: 1002, held: 1 })
        }),
        (
            "the last version there is, which would leave none for a later update",
            &single,
            0,
            signed(&doc("main", u64::MAX, &replaced), &[&c, &d]),
            |e| matches!(e, UpdateError::VersionJump { version: u64::MAX, held: 0 }),
        ),
        (
            "two keys under one name",
            &single,
            0,
            signed(&v1.replace("ec-d.pem", "rsa-c.pem"), &[&c, &d]),
            |e| matches!(e, UpdateError::Document(DocumentError::DuplicateKeyName(n)) if n == "rsa-c.pem"),
        ),
        (
            "a new key under the name of a key trusted now",
            &single,
            0,
            {
                let lookalike =
                    Policy::new(vec![d.verifying().renamed("rsa-a.pem")], Some(c.verifying()), Limits::default());
                signed(&doc("main", 1, &lookalike.unwrap()), &[&c, &d])
            },
            |e| matches!(e, UpdateError::NameTaken { name } if name == "rsa-a.pem"),
        ),
    ];
    for (name, current, held, token, want) in cases {
        match verify_update(current, "main", held, &token, NOW + 1) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert!(want(&e), "{name}: {e:?}"),
        }
    }
}

#[test]
fn an_update_is_never_a_bundle_token() {
    let Keys { a, c, d, .. } = keys();
    let update = signed(&doc("main", 1, &chain(&[&d], Some(&c))), &[&c, &d]);
    // Every policy here knows the update's signers but one: the refusal must still be the kind, not the layers.
    for policy in [chain(&[&c, &d], None), chain(&[&a], Some(&c)), chain(&[&d], Some(&c)), threshold(1, &[&c, &d])] {
        let err = policy.verify(&update, NOW + 1).unwrap_err();
        assert_eq!(err.layer, 0, "{err}");
        assert!(matches!(err.kind, K::WrongKind { expected: Kind::Bundle, got: Kind::KeysetUpdate }), "{err}");
    }
    // Nor is a bundle token's layer that carries a keyset document.
    let header = r#"{"alg":"RS256","typ":"JWT"}"#;
    let claims = format!("{{\"spiffeks\":\"{{}}\",\"exp\":{},\"iat\":{NOW}}}", NOW + 60);
    let err = chain(&[&c], None).verify(&c.raw_token(header, &claims), NOW + 1).unwrap_err();
    assert!(matches!(err.kind, K::WrongKind { .. }), "{err}");
}

#[test]
fn documents_round_trip_and_name_what_they_change() {
    let Keys { a, b, c, d, .. } = keys();
    for policy in [chain(&[&d], Some(&c)), chain(&[&a, &b], None), threshold(2, &[&a, &b, &d])] {
        let text = doc("main", 7, &policy);
        let parsed = Document::parse(&text, Limits::default()).unwrap();
        assert_eq!((parsed.keyset(), parsed.version(), parsed.expires()), ("main", 7, EXPIRES));
        let names: Vec<&str> = parsed.policy().keys().map(|k| k.name()).collect();
        let want: Vec<&str> = policy.keys().map(|k| k.name()).collect();
        assert_eq!(names, want);
        assert_eq!(parsed.policy().threshold_keys().map(|(k, _)| k), policy.threshold_keys().map(|(k, _)| k));
    }
    let current = chain(&[&a], Some(&c));
    let next = Document::parse(&doc("main", 1, &chain(&[&d], Some(&c))), Limits::default()).unwrap();
    let introduced: Vec<&str> = next.introduced(&current).iter().map(|k| k.name()).collect();
    assert_eq!(introduced, ["ec-d.pem"]);
    let retired: Vec<String> = next.retired(&current).iter().map(|k| k.name().to_owned()).collect();
    assert_eq!(retired, ["rsa-a.pem"]);
    for (bad, want) in [
        (r#"{"keyset":"a b","version":1,"expires":1,"chain":[]}"#, "keyset name"),
        (r#"{"keyset":"m","version":1,"expires":1}"#, "either chain"),
        (r#"{"keyset":"m","version":1,"expires":1,"chain":[],"threshold":1,"keys":[]}"#, "either chain"),
        (r#"{"keyset":"m","version":1,"expires":1,"chain":[]}"#, "at least one key"),
        (r#"{"keyset":"m","version":1,"expires":1,"chain":[{"name":"","pem":""}]}"#, "key name"),
        ("[]", "not a keyset document"),
    ] {
        let err = Document::parse(bad, Limits::default()).unwrap_err().to_string();
        assert!(err.contains(want), "{bad}: {err}");
    }
}
