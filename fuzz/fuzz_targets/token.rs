#![no_main]
//! Fuzz target `token`: see `crypto::fuzzing::token`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| crypto::fuzzing::token(data));
