#![no_main]
//! Fuzz target `hcl`: see `plugin::fuzzing::hcl`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| plugin::fuzzing::hcl(data));
