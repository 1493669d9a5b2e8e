#![no_main]
//! Fuzz target `hcl`: see `testbed::fuzzing::hcl`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::hcl(data));
