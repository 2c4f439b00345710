//! cargo-fuzz target: see `steeple_fuzz::svid`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = steeple_fuzz::svid::run(data);
});
