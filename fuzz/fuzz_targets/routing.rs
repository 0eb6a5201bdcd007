//! Fuzz target `routing`: see `fuzz_support::routing` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::routing::check(data));
