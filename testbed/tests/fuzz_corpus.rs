//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`: the seeds, and every input a `make fuzz`
//! campaign kept or that crashed once) through the same bodies the fuzz targets run, so what was found once
//! stays fixed. No sanitizer here; `make fuzz` runs the same bodies coverage-guided with AddressSanitizer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// A target's body.
type Target = fn(&[u8]);

/// Every target: its name (the corpus directory under `fuzz/corpus/`) and its body.
const TARGETS: [(&str, Target); 13] = [
    ("token", crypto::fuzzing::token),
    ("keyset", crypto::fuzzing::keyset),
    ("bundle", crypto::fuzzing::bundle),
    ("pem_key", crypto::fuzzing::pem_key),
    ("hcl", plugin::fuzzing::hcl),
    ("go_duration", common::fuzzing::go_duration),
    ("yaml_config", services::fuzzing::yaml_config),
    ("devid_payload", devid_payload),
    ("enroll_request", enroll_request),
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
