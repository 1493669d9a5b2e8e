//! The server side of `tpm_devid` on a payload recorded from the independent agent (tpm2-tools + Python) on a
//! manufactured swtpm, with the CA files the server trusted then, at the recorded time: pure, no TPM, no
//! Python. The genuine payload passes; each tampered field is refused with its own reason.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use base64::Engine;
use crypto::devid::{ChainError, DevIdError, DevIdVerifier, ExtraChecks};
use serde_json::Value;

fn recorded() -> (DevIdVerifier, Vec<u8>, u64) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/devid-recorded");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let at: u64 = String::from_utf8(read("recorded-at")).unwrap().trim().parse().unwrap();
    let verifier =
        DevIdVerifier::new(&read("devid-ca.pem"), &read("endorsement-ca.pem"), ExtraChecks::default()).unwrap();
    (verifier, read("payload.json"), at + 60)
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
}

fn enc(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The recorded payload with `edit` applied to its JSON.
fn tampered(payload: &[u8], edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(payload).unwrap();
    edit(v.as_object_mut().unwrap());
    serde_json::to_vec(&v).unwrap()
}

fn flip_last(m: &mut serde_json::Map<String, Value>, field: &str) {
    let mut bytes = b64(&m[field]);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    m.insert(field.into(), enc(&bytes));
}

#[test]
fn the_recorded_payload_passes_at_its_time_and_not_after_its_intermediate_expired() {
    let (verifier, payload, now) = recorded();
    let (challenge, _) = verifier.challenge(&payload, now).unwrap();
    let c: crypto::devid::wire::ChallengeRequest = serde_json::from_slice(&challenge).unwrap();
    let cred = c.cred_activation.unwrap();
    assert_eq!((c.devid.len(), cred.credential.len(), cred.secret.len()), (32, 68, 256));
    let expired = verifier.challenge(&payload, now + 40 * 86_400).unwrap_err();
    assert!(matches!(expired, DevIdError::DevIdChain(ChainError::Validity { .. })), "{expired}");
}

type Edit = fn(&mut serde_json::Map<String, Value>);
type Want = fn(&DevIdError) -> bool;

#[test]
fn each_tampered_field_of_the_recorded_payload_is_refused_with_its_reason() {
    let (verifier, payload, now) = recorded();
    let table: [(&str, Edit, Want); 12] = [
        (
            "no DevID certificate",
            |m| drop(m.insert("DevIDCert".into(), Value::Array(vec![]))),
            |e| matches!(e, DevIdError::NoDevIdCert),
        ),
        (
            "DevID certificate not DER",
            |m| drop(m.insert("DevIDCert".into(), Value::Array(vec![enc(b"junk")]))),
            |e| matches!(e, DevIdError::BadCertificate { what: "DevID certificate", .. }),
        ),
        (
            "DevID intermediate left out",
            |m| {
                let leaf = m["DevIDCert"][0].clone();
                m.insert("DevIDCert".into(), Value::Array(vec![leaf]));
            },
            |e| matches!(e, DevIdError::DevIdChain(ChainError::UnknownAuthority { .. })),
        ),
        (
            "EK certificate not DER",
            |m| drop(m.insert("EKCert".into(), enc(b"junk"))),
            |e| matches!(e, DevIdError::BadCertificate { what: "endorsement certificate", .. }),
        ),
        (
            "EK public key is not the certificate's",
            |m| {
                let ak = m["AKPub"].clone();
                m.insert("EKPub".into(), ak);
            },
            |e| matches!(e, DevIdError::EkMismatch),
        ),
        (
            "AK is the EK (a decryption key)",
            |m| {
                let ek = m["EKPub"].clone();
                m.insert("AKPub".into(), ek);
            },
            |e| matches!(e, DevIdError::AkNotSigning | DevIdError::AkAttributes { .. }),
        ),
        (
            "certified structure altered",
            |m| flip_last(m, "CertifiedDevID"),
            |e| matches!(e, DevIdError::CertifySignature | DevIdError::CertifyName),
        ),
        (
            "certification signature altered",
            |m| flip_last(m, "CertificationSignature"),
            |e| matches!(e, DevIdError::CertifySignature),
        ),
        (
            "DevID public key is not the certificate's",
            |m| {
                let ak = m["AKPub"].clone();
                m.insert("DevIDPub".into(), ak);
            },
            |e| matches!(e, DevIdError::DevIdPubMismatch | DevIdError::CertifyName),
        ),
        ("EK public key missing", |m| drop(m.remove("EKPub")), |e| matches!(e, DevIdError::Missing(_))),
        ("AK public key empty", |m| drop(m.insert("AKPub".into(), enc(b""))), |e| matches!(e, DevIdError::Missing(_))),
        (
            "EK certificate truncated",
            |m| {
                let ek = b64(&m["EKCert"]);
                m.insert("EKCert".into(), enc(&ek[..ek.len() / 2]));
            },
            |e| matches!(e, DevIdError::BadCertificate { .. }),
        ),
    ];
    for (what, edit, want) in table {
        let err = verifier.challenge(&tampered(&payload, edit), now).unwrap_err();
        assert!(want(&err), "{what}: refused for another reason: {err:?}");
    }
    for (what, bytes) in [("not JSON", b"{not json".to_vec()), ("too large", vec![b' '; 1 << 20])] {
        assert!(verifier.challenge(&bytes, now).is_err(), "{what} accepted");
    }
    // The positive row of the same table: the untouched payload.
    assert!(verifier.challenge(&tampered(&payload, |_| {}), now).is_ok());
}
