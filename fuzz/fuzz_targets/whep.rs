//! libFuzzer target; the property checked is `tests/support/fuzz_checks.rs::whep`.
#![no_main]

#[path = "../../tests/support/fuzz_checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::whep(data));
