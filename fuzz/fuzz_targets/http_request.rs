#![no_main]
//! Fuzz target `http_request`: see `testbed::fuzzing::http_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::http_request(data));
