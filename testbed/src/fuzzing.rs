//! The fuzz targets' table for the corpus replay `make test` runs (`testbed/tests/fuzz_corpus.rs`): each name (a
//! directory under `fuzz/corpus/`, a target of `fuzz/Cargo.toml`) and its body, which lives beside the parser it
//! fuzzes (`crypto::fuzzing`, `common::fuzzing`, `plugin::fuzzing`, `services::fuzzing`).

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target: its name (the corpus directory under `fuzz/corpus/`) and its body.
pub const TARGETS: [(&str, Target); 12] = [
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
    const DEVID_CA: &[u8] = include_bytes!("../tests/data/devid-recorded/devid-ca.pem");
    const EK_CA: &[u8] = include_bytes!("../tests/data/devid-recorded/endorsement-ca.pem");
    const RECORDED_AT: &str = include_str!("../tests/data/devid-recorded/recorded-at");
    crypto::fuzzing::devid_payload(data, DEVID_CA, EK_CA, RECORDED_AT.trim().parse().unwrap_or(1_800_000_000));
}
