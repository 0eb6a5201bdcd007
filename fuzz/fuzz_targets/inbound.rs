//! Fuzz target `inbound`: see `fuzz_support::inbound` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::inbound::check(data));
