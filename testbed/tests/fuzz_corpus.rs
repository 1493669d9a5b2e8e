//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`: the seeds, and every input a `make fuzz`
//! campaign kept or that crashed once) through the same bodies the fuzz targets run, so what was found once
//! stays fixed. No sanitizer here; `make fuzz` runs the same bodies coverage-guided with AddressSanitizer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// A target's body.
type Target = fn(&[u8]);

/// Every target: its name (the corpus directory under `fuzz/corpus/`) and its body.
const TARGETS: [(&str, Target); 12] = [
    ("token", crypto::fuzzing::token),
    ("keyset", crypto::fuzzing::keyset),
    ("bundle", crypto::fuzzing::bundle),
    ("pem_key", crypto::fuzzing::pem_key),
    ("hcl", plugin::fuzzing::hcl),
    ("go_duration", common::fuzzing::go_duration),
    ("yaml_config", services::fuzzing::yaml_config),
    ("devid_payload", devid_payload),
    ("tpm2", crypto::fuzzing::tpm2),
    ("query", services::fuzzing::query),
    ("env_expand", common::fuzzing::env_expand),
    ("http_request", services::fuzzing::http_request),
];

/// `crypto::fuzzing::devid_payload` against the recorded genuine payload's anchors, at its time (the same data
/// `fuzz/fuzz_targets/devid_payload.rs` includes).
fn devid_payload(data: &[u8]) {
    const DEVID_CA: &[u8] = include_bytes!("data/devid-recorded/devid-ca.pem");
    const EK_CA: &[u8] = include_bytes!("data/devid-recorded/endorsement-ca.pem");
    const RECORDED_AT: &str = include_str!("data/devid-recorded/recorded-at");
    crypto::fuzzing::devid_payload(data, DEVID_CA, EK_CA, RECORDED_AT.trim().parse().unwrap_or(1_800_000_000));
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
