#![no_main]
//! Fuzz target `yaml_config`: see `testbed::fuzzing::yaml_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::yaml_config(data));
