//! Steeple: holds a workload's SPIFFE identity and hands it, with the credentials derived
//! from it, to local workloads over an Envoy SDS stream on a Unix socket.

pub mod uds;
pub mod store;
pub mod svid;
pub mod config;
pub mod identity;

#[cfg(test)]
mod test_support;
pub mod sds;
pub mod cli;
pub mod supervisor;
