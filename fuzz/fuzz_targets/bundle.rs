#![no_main]
//! Fuzz target `bundle`: see `testbed::fuzzing::bundle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| testbed::fuzzing::bundle(data));
