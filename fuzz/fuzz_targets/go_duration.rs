#![no_main]
//! Fuzz target `go_duration`: see `common::fuzzing::go_duration`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::fuzzing::go_duration(data));
