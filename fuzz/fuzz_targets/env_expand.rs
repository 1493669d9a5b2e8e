#![no_main]
//! Fuzz target `env_expand`: see `common::fuzzing::env_expand`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::fuzzing::env_expand(data));
