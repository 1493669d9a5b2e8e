#![no_main]
//! Fuzz target `query`: see `testbed::fuzzing::query`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::query(data));
