//! Steeple's end-to-end harness: starts the real peers (SPIRE server and agent, Envoy) in
//! temp dirs on loopback and Unix sockets, captures their logs, and stops them on drop.
//!
//! Peers come from `tests/peers/*.sh` (see `peers`). Lifecycle calls (`Spire`,
//! `Envoy::start`) block briefly and are meant to be called from the test body itself;
//! HTTP and polling helpers are async (tokio).

pub mod bench_support;
pub mod bootstrap;
pub mod cutting_proxy;
pub mod envoy;
pub mod http;
pub mod log_capture;
pub mod moto;
pub mod openbao;
pub mod peers;
pub mod process;
pub mod sds_client;
pub mod spire;
pub mod steeple;
pub mod suite;

pub use envoy::Envoy;
pub use http::{RecordingUpstream, get as http_get};
pub use process::{ChildProcess, current_uid, free_port, seconds_from_env, wait_for};
pub use spire::{EntrySpec, Spire, SpireOptions};
pub use steeple::{SteepleProcess, seal};
pub use suite::Suite;
