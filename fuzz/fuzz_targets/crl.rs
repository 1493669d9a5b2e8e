#![no_main]
//! Fuzz target `crl`: see `crypto::fuzzing::crl`, run against the two enrollment CAs (P-256 and RSA-2048) whose
//! CRLs are the seeds in `fuzz/corpus/crl/`, with the certificate the P-256 one revokes, at the time they were made.

const ANCHORS: [&[u8]; 2] = [
    include_bytes!("../../testbed/tests/data/devid-crl/ca-ec.pem"),
    include_bytes!("../../testbed/tests/data/devid-crl/ca-rsa.pem"),
];
const LEAF: &[u8] = include_bytes!("../../testbed/tests/data/devid-crl/revoked-ec.pem");
const RECORDED_AT: &str = include_str!("../../testbed/tests/data/devid-crl/recorded-at");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = RECORDED_AT.trim().parse().unwrap_or(1_800_000_000);
    crypto::fuzzing::crl(data, &ANCHORS.concat(), LEAF, now)
});
