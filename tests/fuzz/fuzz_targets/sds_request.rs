//! cargo-fuzz target: see `steeple_fuzz::sds_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = steeple_fuzz::sds_request::run(data);
});
