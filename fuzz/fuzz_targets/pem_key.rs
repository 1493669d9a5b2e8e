#![no_main]
//! Fuzz target `pem_key`: see `testbed::fuzzing::pem_key`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::pem_key(data));
