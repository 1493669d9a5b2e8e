#![no_main]
//! Fuzz target `tpm2`: see `testbed::fuzzing::tpm2`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::tpm2(data));
