//! Fuzz target `sse_usage`: see `fuzz_support::usage` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::usage::check_sse(data));
