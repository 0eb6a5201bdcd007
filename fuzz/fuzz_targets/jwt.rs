//! Fuzz target `jwt`: see `fuzz_support::jwt` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::jwt::check(data));
