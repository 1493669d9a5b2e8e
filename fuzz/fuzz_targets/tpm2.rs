#![no_main]
//! Fuzz target `tpm2`: see `crypto::fuzzing::tpm2`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| crypto::fuzzing::tpm2(data));
