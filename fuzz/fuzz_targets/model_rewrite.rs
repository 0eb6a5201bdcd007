//! Fuzz target `model_rewrite`: see `fuzz_support::routing::check_model_rewrite`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::routing::check_model_rewrite(data));
