//! Fuzz target bodies for this crate's parsers (feature `fuzzing`): run by `make fuzz` (cargo-fuzz, `fuzz/`) and
//! replayed over `fuzz/corpus/` by `make test` (`testbed/tests/fuzz_corpus.rs`). Each must never panic, whatever
//! its input; results are checked for internal consistency where a parser promises some (a bundle that parses
//! renders in both formats and parses back to the same certificates).

/// `data` as UTF-8 text, if it is.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A fixed P-256 verifying key, so signature checks run (and fail) on fuzzed tokens.
pub const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEv1qzjTSzw8+TUZQq1z7HQXOqkIuA
YTB0iWwvVno82cQ8T00B/rTqySC3bNYnAaGcRUg/t87yH0zxumMadhUqdA==
-----END PUBLIC KEY-----
";

/// Token parsing and the policy: inspect, the innermost walk, one layer, the whole policy.
pub fn token(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let limits = crate::Limits::default();
    let _ = crate::token::inspect(t);
    let _ = crate::token::innermost_unverified(t, &limits);
    let _ = crate::token::outer_payload_unverified(t, &limits);
    if let Ok(key) = crate::keys::VerifyingKey::from_pem("k", KEY.as_bytes()) {
        let _ = crate::token::verify_layer(t, &[&key], 1_800_000_000, &limits);
        if let Ok(policy) = crate::policy::Policy::new(vec![key], None, limits) {
            let _ = policy.verify(t, 1_800_000_000);
        }
    }
}

/// Keyset updates as a node reads them from `keys-url` (one per line), keyset documents, and the policy JSON
/// signer-unix's `/policy` answers: a document that parses renders to a document that parses to the same keys.
pub fn keyset(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let limits = crate::Limits::default();
    if let Ok(d) = crate::keyset::Document::parse(t, limits) {
        let again = crate::keyset::Document::new(d.keyset(), d.version(), d.expires(), d.policy());
        assert!(again.is_ok(), "a parsed document does not render: {:?}", again.as_ref().err());
        let fps = |p: &crate::policy::Policy| p.keys().map(|k| k.fingerprint().to_owned()).collect::<Vec<_>>();
        if let Ok(again) = again {
            assert_eq!(fps(again.policy()), fps(d.policy()), "a rendered document holds other keys");
        }
    }
    let _ = crate::keyset::policy_from_json(t, limits);
    if let Ok(key) = crate::keys::VerifyingKey::from_pem("k", KEY.as_bytes()) {
        if let Ok(policy) = crate::policy::Policy::new(vec![key], None, limits) {
            for line in t.lines() {
                let _ = crate::keyset::verify_update(&policy, "main", 0, line, 1_800_000_000);
            }
        }
    }
}

/// Bundles, PEM and SPIFFE JSON: what parses renders in both forms, and each form parses back to the same
/// certificates.
pub fn bundle(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(b) = crate::bundle::Bundle::parse(t) {
        let pem = crate::bundle::Bundle::parse(&b.to_pem()).map(|p| p.certificates().to_vec());
        let json = crate::bundle::Bundle::parse(&b.to_spiffe_json()).map(|p| p.certificates().to_vec());
        assert_eq!(pem.ok().as_deref(), Some(b.certificates()), "PEM rendering does not parse back");
        assert_eq!(json.ok().as_deref(), Some(b.certificates()), "SPIFFE rendering does not parse back");
    }
}

/// Public keys as PEM (SPKI).
pub fn pem_key(data: &[u8]) {
    let _ = crate::keys::VerifyingKey::from_pem("k", data);
    let _ = crate::keys::VerifyingKey::from_spki_der("k", data);
}

/// The tpm_devid server's first message (SPIRE's JSON), through every check, against `devid_ca` and `ek_ca` (the
/// trust anchors of a recorded genuine payload, the seed) at `now` (when it was recorded), so that mutations of
/// it reach the deep checks.
pub fn devid_payload(data: &[u8], devid_ca: &[u8], ek_ca: &[u8], now: u64) {
    let _ = serde_json::from_slice::<crate::devid::wire::AttestationRequest>(data);
    let _ = serde_json::from_slice::<crate::devid::wire::ChallengeResponse>(data);
    if let Ok(v) = crate::devid::DevIdVerifier::new(devid_ca, ek_ca, crate::devid::ExtraChecks::default()) {
        let _ = v.challenge(data, now);
    }
}

/// The enrollment CA's network input: its second message's JSON, and its first message through every check of
/// exchange 1 (the EK, its certificate against `ek_ca`, the AK and the DevID, then the credential made for them) at
/// `now`. The seed is a genuine request built from the recorded payload, whose EK chains to `ek_ca`, so that
/// mutations of it reach the AK's and the DevID's checks and the credential.
pub fn enroll_request(data: &[u8], ek_ca: &[u8], now: u64) {
    use crate::devid::enroll::{begin, EnrollAnswer, EnrollRequest};
    let _ = serde_json::from_slice::<EnrollAnswer>(data);
    let Ok(request) = serde_json::from_slice::<EnrollRequest>(data) else { return };
    let anchors = crate::devid::chain::parse_pem_bundle(ek_ca).unwrap_or_default();
    if let Ok(policy) = crate::devid::ek::EkPolicy::new(anchors, None, None) {
        let _ = begin(&request, &policy, now);
    }
}

/// A CRL as `devid_crl_path` reads it (fetched by the operator's tooling, often over plain HTTP, so its bytes are
/// parsed before anything about them is verified), against `anchors` (PEM: the DevID CAs that signed the seeds);
/// one that verifies must be able to replace itself (the same issuer and number), and is asked about `leaf` (PEM)
/// at `now`.
pub fn crl(data: &[u8], anchors: &[u8], leaf: &[u8], now: u64) {
    use crate::devid::chain::parse_pem_bundle;
    let anchors = parse_pem_bundle(anchors).unwrap_or_default();
    if let Ok(crl) = crate::devid::crl::Crl::parse(data, &anchors) {
        assert!(crl.may_replace(&crl), "a verified CRL may not replace itself");
        if let Some(leaf) = parse_pem_bundle(leaf).ok().and_then(|mut l| l.pop()) {
            let _ = crl.check(&leaf, now);
        }
    }
}

/// TPM 2.0 structures from the agent: TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE.
pub fn tpm2(data: &[u8]) {
    if let Ok(p) = crate::devid::tpm2::TpmPublic::parse(data, "fuzz") {
        let again = crate::devid::tpm2::TpmPublic::parse(&p.marshal(), "fuzz");
        assert!(again.is_ok(), "a parsed TPMT_PUBLIC does not parse after marshalling");
    }
    let _ = crate::devid::tpm2::Attest::parse(data);
    let _ = crate::devid::tpm2::RsaSignature::parse(data);
}
