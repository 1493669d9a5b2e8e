#![no_main]
//! Fuzz target `keyset`: see `crypto::fuzzing::keyset`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| crypto::fuzzing::keyset(data));
