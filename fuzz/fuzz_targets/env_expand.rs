#![no_main]
//! Fuzz target `env_expand`: see `testbed::fuzzing::env_expand`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::env_expand(data));
