//! Fuzz target `azure_error`: see `fuzz_support::azure_error` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::azure_error::check(data));
