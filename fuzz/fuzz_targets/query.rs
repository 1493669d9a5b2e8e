#![no_main]
//! Fuzz target `query`: see `services::fuzzing::query`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| services::fuzzing::query(data));
