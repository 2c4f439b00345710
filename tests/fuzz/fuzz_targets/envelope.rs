//! cargo-fuzz target: see `steeple_fuzz::envelope`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = steeple_fuzz::envelope::run(data);
});
