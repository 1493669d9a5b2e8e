#![no_main]
//! Fuzz target `pem_key`: see `crypto::fuzzing::pem_key`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| crypto::fuzzing::pem_key(data));
