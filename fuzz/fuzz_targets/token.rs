#![no_main]
//! Fuzz target `token`: see `testbed::fuzzing::token`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::token(data));
