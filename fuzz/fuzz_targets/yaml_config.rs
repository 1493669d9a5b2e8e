#![no_main]
//! Fuzz target `yaml_config`: see `services::fuzzing::yaml_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| services::fuzzing::yaml_config(data));
