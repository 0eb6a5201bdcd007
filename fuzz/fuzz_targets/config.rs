//! Fuzz target `config`: see `fuzz_support::config` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::config::check(data));
