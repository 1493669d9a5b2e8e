//! The boot state's checks on a quote recorded from a real TPM (swtpm, `crypto/tests/data/quote-swtpm.json`), with
//! no TPM: it verifies as recorded, and each change an attacker could make is refused with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crypto::devid::quote::{self, PcrSelection, QuoteAnswer};
use crypto::devid::tpm2::TpmPublic;

struct Recorded {
    ak: TpmPublic,
    nonce: Vec<u8>,
    selection: PcrSelection,
    answer: QuoteAnswer,
}

fn recorded() -> Recorded {
    let v: serde_json::Value = serde_json::from_str(include_str!("data/quote-swtpm.json")).unwrap();
    let b64 = |k: &str| STANDARD.decode(v[k].as_str().unwrap()).unwrap();
    Recorded {
        ak: TpmPublic::parse(&b64("AKPub"), "AKPub").unwrap(),
        nonce: b64("Nonce"),
        selection: v["PCRSelection"].as_str().unwrap().parse().unwrap(),
        answer: serde_json::from_value(v["PCRQuote"].clone()).unwrap(),
    }
}

#[test]
fn the_recorded_quote_verifies_and_gives_each_pcr_its_selector() {
    let r = recorded();
    let values = quote::verify(&r.ak, &r.nonce, &r.selection, &r.answer).unwrap();
    assert_eq!(values.len(), 8);
    let selectors = quote::selectors(&r.selection, &values);
    assert!(selectors[0].starts_with("pcr:sha256:0:") && selectors[7].starts_with("pcr:sha256:7:"), "{selectors:?}");
    assert_ne!(values[&7], vec![0u8; 32], "PCR 7 was extended before the recording");
}

#[test]
fn each_change_to_the_recorded_quote_is_refused_with_its_reason() {
    let r = recorded();
    type Change = fn(&mut Recorded);
    let rows: Vec<(&str, Change, &str)> = vec![
        ("another nonce", |r| r.nonce[0] ^= 1, "not the nonce"),
        ("other PCRs asked for", |r| r.selection = "sha256:0,1,2,3,4,5,6,8".parse().unwrap(), "other PCRs"),
        ("a PCR value altered", |r| r.answer.values[7][0] ^= 1, "not the ones quoted"),
        ("a PCR value dropped", |r| drop(r.answer.values.pop()), "were expected"),
        ("the quote altered", |r| r.answer.quoted[40] ^= 1, "does not verify"),
        ("the signature altered", |r| *r.answer.signature.last_mut().unwrap() ^= 1, "does not verify"),
        (
            "another AK",
            |r| {
                if let crypto::devid::tpm2::KeyParams::Rsa { modulus, .. } = &mut r.ak.params {
                    modulus[10] ^= 1;
                }
            },
            "does not verify",
        ),
        ("the signature cut short", |r| r.answer.signature.truncate(10), "PCRQuote.Signature"),
        ("no quote at all", |r| r.answer.quoted.clear(), "does not verify"),
    ];
    for (what, change, says) in rows {
        let mut changed = recorded();
        change(&mut changed);
        let err = quote::verify(&changed.ak, &changed.nonce, &changed.selection, &changed.answer).unwrap_err();
        assert!(err.to_string().contains(says), "{what}: {says:?} not in {err}");
    }
    // The untouched recording still verifies: every refusal above is the change's doing.
    quote::verify(&r.ak, &r.nonce, &r.selection, &r.answer).unwrap();
}
