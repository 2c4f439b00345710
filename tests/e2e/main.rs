//! Every end-to-end suite, one module each, in one test binary (the harness links once).
//! Each suite starts its own peers in temp dirs; run them one at a time
//! (`--test-threads=1`), one suite with its module path as the filter, e.g.
//! `cargo test -p steeple-e2e --test e2e -- rotation:: --test-threads=1`.

mod admin_endpoints;
mod agent_outage;
mod aws_envelopes;
mod aws_plugin;
mod bad_input;
mod caller_authz;
mod control_plane_trust;
mod deploy_manifests;
mod dev_mode;
mod doctor;
mod drop_in;
mod envelopes_local;
mod federation;
mod harness_smoke;
mod imds;
mod istio_sds_path;
mod jwt_injection;
mod memory_hygiene;
mod mtls;
mod no_disk_writes;
mod node_agent;
mod pid_namespace_callers;
mod reload;
mod resolver_conformance;
mod revocation;
mod rotation;
mod sds_flood;
mod sds_stream_cut;
mod soak;
mod spire_server_outage;
mod steeple_restart;
mod suspend;
mod systemd_notify;
mod vault_envelopes;
mod vault_plugin;
mod vault_spiffe_tls;
mod workload_roles;
