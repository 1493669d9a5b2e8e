#![no_main]
//! Fuzz target `devid_payload`: see `testbed::fuzzing::devid_payload`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::devid_payload(data));
