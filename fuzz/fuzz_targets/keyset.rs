#![no_main]
//! Fuzz target `keyset`: see `testbed::fuzzing::keyset`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::keyset(data));
