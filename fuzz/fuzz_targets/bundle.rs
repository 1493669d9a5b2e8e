#![no_main]
//! Fuzz target `bundle`: see `crypto::fuzzing::bundle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| crypto::fuzzing::bundle(data));
