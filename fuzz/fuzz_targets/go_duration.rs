#![no_main]
//! Fuzz target `go_duration`: see `testbed::fuzzing::go_duration`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::go_duration(data));
