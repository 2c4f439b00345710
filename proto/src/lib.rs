//! The SPIFFE Workload API messages and gRPC stubs (client and server), generated from
//! `proto/spiffe/workload.proto`.
#![allow(
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

/// Messages and stubs of the package-less `SpiffeWorkloadAPI` service.
pub mod workload {
    tonic::include_proto!("_");
}

/// The metadata header every Workload API call must carry (SPIFFE Workload Endpoint spec):
/// it proves the caller is a workload speaking gRPC, not a browser tricked into a request.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
