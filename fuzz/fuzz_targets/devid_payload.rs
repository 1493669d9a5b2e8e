#![no_main]
//! Fuzz target `devid_payload`: see `crypto::fuzzing::devid_payload`, run against the anchors of the recorded
//! genuine payload (its seed in `fuzz/corpus/devid_payload/`), at the time it was recorded.

const DEVID_CA: &[u8] = include_bytes!("../../testbed/tests/data/devid-recorded/devid-ca.pem");
const EK_CA: &[u8] = include_bytes!("../../testbed/tests/data/devid-recorded/endorsement-ca.pem");
const RECORDED_AT: &str = include_str!("../../testbed/tests/data/devid-recorded/recorded-at");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = RECORDED_AT.trim().parse().unwrap_or(1_800_000_000);
    crypto::fuzzing::devid_payload(data, DEVID_CA, EK_CA, now)
});
