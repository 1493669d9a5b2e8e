//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`: the seeds, and every input a `make fuzz`
//! campaign kept or that crashed once) through the same bodies the fuzz targets run, so what was found once
//! stays fixed. No sanitizer here; `make fuzz` runs the same bodies coverage-guided with AddressSanitizer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// A target's body.
type Target = fn(&[u8]);

/// Every target: its name (the corpus directory under `fuzz/corpus/`) and its body.
const TARGETS: [(&str, Target); 14] = [
    ("token", crypto::fuzzing::token),
    ("keyset", crypto::fuzzing::keyset),
    ("bundle", crypto::fuzzing::bundle),
    ("pem_key", crypto::fuzzing::pem_key),
    ("hcl", plugin::fuzzing::hcl),
    ("go_duration", common::fuzzing::go_duration),
    ("yaml_config", services::fuzzing::yaml_config),
    ("devid_payload", devid_payload),
    ("enroll_request", enroll_request),
    ("crl", crl),
    ("tpm2", crypto::fuzzing::tpm2),
    ("query", services::fuzzing::query),
    ("env_expand", common::fuzzing::env_expand),
    ("http_request", services::fuzzing::http_request),
];

/// The recorded genuine payload's EK anchors.
const RECORDED_EK_CA: &[u8] = include_bytes!("data/devid-recorded/endorsement-ca.pem");

/// When the payload was recorded (its certificates are valid then).
fn recorded_at() -> u64 {
    include_str!("data/devid-recorded/recorded-at").trim().parse().unwrap_or(1_800_000_000)
}

/// `crypto::fuzzing::devid_payload` against the recorded genuine payload's anchors, at its time (the same data
/// `fuzz/fuzz_targets/devid_payload.rs` includes).
fn devid_payload(data: &[u8]) {
    const DEVID_CA: &[u8] = include_bytes!("data/devid-recorded/devid-ca.pem");
    crypto::fuzzing::devid_payload(data, DEVID_CA, RECORDED_EK_CA, recorded_at());
}

/// `crypto::fuzzing::enroll_request` against the recorded payload's EK anchors, at its time (the same data
/// `fuzz/fuzz_targets/enroll_request.rs` includes).
fn enroll_request(data: &[u8]) {
    crypto::fuzzing::enroll_request(data, RECORDED_EK_CA, recorded_at());
}

/// The enroll_request seed is deep: the genuine request passes every check of exchange 1 (so its mutations reach
/// them all), and the same request with a software-made DevID, or at a time its EK certificate is not valid, does
/// not.
#[test]
fn the_enroll_request_seed_passes_exchange_one_and_its_mutations_are_refused() {
    use crypto::devid::enroll::{begin, EnrollRequest};
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/enroll_request/seed-genuine-request.json");
    let request: EnrollRequest = serde_json::from_slice(&std::fs::read(seed).unwrap()).unwrap();
    let anchors = crypto::devid::chain::parse_pem_bundle(RECORDED_EK_CA).unwrap();
    let policy = crypto::devid::ek::EkPolicy::new(anchors, None, None).unwrap();
    let (challenge, _) = begin(&request, &policy, recorded_at()).unwrap();
    assert_eq!(challenge.nonce.len(), 32);
    // TPMT_PUBLIC: type (2), nameAlg (2), then objectAttributes (4); sensitiveDataOrigin is bit 5.
    let mut software = request.clone();
    software.devid_pub[7] &= !0x20;
    assert!(begin(&software, &policy, recorded_at()).is_err(), "a DevID the TPM did not make began");
    assert!(begin(&request, &policy, 0).is_err(), "an EK certificate not yet valid began");
}

/// The two enrollment CAs (P-256, RSA-2048) whose CRLs seed the crl target, and the certificate the P-256 one
/// revokes (the same data `fuzz/fuzz_targets/crl.rs` includes).
const CRL_ANCHORS: [&[u8]; 2] =
    [include_bytes!("data/devid-crl/ca-ec.pem"), include_bytes!("data/devid-crl/ca-rsa.pem")];
const CRL_LEAF: &[u8] = include_bytes!("data/devid-crl/revoked-ec.pem");

/// When the CRLs were made.
fn crl_made_at() -> u64 {
    include_str!("data/devid-crl/recorded-at").trim().parse().unwrap_or(1_800_000_000)
}

/// `crypto::fuzzing::crl` against the CAs that made the seeds.
fn crl(data: &[u8]) {
    crypto::fuzzing::crl(data, &CRL_ANCHORS.concat(), CRL_LEAF, crl_made_at());
}

/// The crl seeds are deep: each CRL (PEM and DER, P-256 and RSA-2048) verifies against its CA, and the P-256 one
/// revokes the certificate beside it; with one bit of its signature or of its list changed, or against the other
/// CA alone, it does not verify.
#[test]
fn the_crl_seeds_verify_and_revoke_and_their_mutations_do_not() {
    use crypto::devid::chain::parse_pem_bundle;
    use crypto::devid::crl::Crl;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/crl");
    let anchors = parse_pem_bundle(&CRL_ANCHORS.concat()).unwrap();
    let leaf = parse_pem_bundle(CRL_LEAF).unwrap().remove(0);
    for seed in ["seed-ec.pem.crl", "seed-ec.der.crl", "seed-rsa.pem.crl"] {
        let bytes = std::fs::read(corpus.join(seed)).unwrap();
        let crl = Crl::parse(&bytes, &anchors).unwrap_or_else(|e| panic!("{seed}: {e}"));
        assert_eq!(crl.len(), 1, "{seed}");
        let revoked = crl.check(&leaf, crl_made_at());
        assert_eq!(revoked.is_err(), seed.starts_with("seed-ec"), "{seed}: {revoked:?}");
    }
    let der = std::fs::read(corpus.join("seed-ec.der.crl")).unwrap();
    let (last, list) = (der.len() - 1, der.len() / 2);
    for (case, at) in [("the signature", last), ("the list", list)] {
        let mut bad = der.clone();
        bad[at] ^= 1;
        assert!(Crl::parse(&bad, &anchors).is_err(), "{case} changed, and the CRL verified");
    }
    let rsa_alone = parse_pem_bundle(CRL_ANCHORS[1]).unwrap();
    assert!(Crl::parse(&der, &rsa_alone).is_err(), "the P-256 CA's CRL verified against the RSA CA alone");
}

#[test]
fn every_fuzz_corpus_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, body) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "the {name} corpus is empty");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                panic!("{name}: {} panics", f.display());
            }
        }
    }
}

/// Every target `make fuzz` runs (`fuzz/Cargo.toml`) has its body in [`TARGETS`], and the other
/// way round: a target added on one side only would never be fuzzed or never be replayed.
#[test]
fn the_fuzz_crate_and_the_replay_list_name_the_same_targets() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/Cargo.toml")).unwrap();
    let mut in_crate: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"")?.strip_suffix('"'))
        .filter(|n| *n != "sat-fuzz")
        .collect();
    let mut replayed: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    in_crate.sort_unstable();
    replayed.sort_unstable();
    assert_eq!(in_crate, replayed);
    for name in replayed {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/fuzz_targets/{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
}
