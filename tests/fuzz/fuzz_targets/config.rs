//! cargo-fuzz target: see `steeple_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = steeple_fuzz::config::run(data);
});
