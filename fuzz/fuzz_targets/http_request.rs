#![no_main]
//! Fuzz target `http_request`: see `services::fuzzing::http_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| services::fuzzing::http_request(data));
