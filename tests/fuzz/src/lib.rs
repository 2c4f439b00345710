//! The fuzz harnesses: one function per target taking arbitrary bytes, panicking only when
//! the code under test crashes or breaks a property it promises. The `fuzz_targets/`
//! binaries are one-line wrappers, so the seed tests below run the same code.

pub mod config;
pub mod envelope;
pub mod sds_request;
pub mod svid;

#[cfg(test)]
mod seed_tests;
