#![no_main]
//! Fuzz target `enroll_request`: see `crypto::fuzzing::enroll_request`, run against the EK anchors of the recorded
//! genuine payload (the seed in `fuzz/corpus/enroll_request/` is built from it), at the time it was recorded.

const EK_CA: &[u8] = include_bytes!("../../testbed/tests/data/devid-recorded/endorsement-ca.pem");
const RECORDED_AT: &str = include_str!("../../testbed/tests/data/devid-recorded/recorded-at");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = RECORDED_AT.trim().parse().unwrap_or(1_800_000_000);
    crypto::fuzzing::enroll_request(data, EK_CA, now)
});
