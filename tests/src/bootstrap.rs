//! Envoy bootstraps for the suites: an mTLS server and a plaintext-in/mTLS-out client, all
//! secrets over SDS from a Unix socket, with whatever resource names the test picks.

use std::path::Path;

/// Which SDS resources a TLS context uses, and which peer SPIFFE ID it accepts.
#[derive(Debug, Clone)]
pub struct TlsNames<'a> {
    /// `tls_certificate` resource name (e.g. `default` or a SPIFFE ID).
    pub certificate: &'a str,
    /// `validation_context` resource name (e.g. `ROOTCA`, `ALL`); `None` accepts any peer
    /// certificate (to let a test reach the other side's verification).
    pub validation: Option<&'a str>,
    /// Exact URI SAN the peer must present.
    pub peer_id: &'a str,
}

/// Every SDS config points at the `sds` cluster (see `sds_cluster`).
const SDS_CONFIG: &str = "{ resource_api_version: V3, initial_fetch_timeout: 30s, api_config_source: { api_type: GRPC, transport_api_version: V3, grpc_services: [{ envoy_grpc: { cluster_name: sds } }] } }";

fn common_tls_context(names: &TlsNames<'_>) -> String {
    let sds = SDS_CONFIG;
    let mut context = format!(
        r#"common_tls_context:
            tls_certificate_sds_secret_configs: [{{ name: "{cert}", sds_config: {sds} }}]"#,
        cert = names.certificate,
    );
    if let Some(validation) = names.validation {
        context.push_str(&format!(
            r#"
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{{ san_type: URI, matcher: {{ exact: "{peer}" }} }}]
              validation_context_sds_secret_config: {{ name: "{validation}", sds_config: {sds} }}"#,
            peer = names.peer_id,
        ));
    }
    context
}

fn sds_cluster(socket: &Path) -> String {
    format!(
        r#"  - name: sds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: sds
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ pipe: {{ path: "{}" }} }} }} }}] }}]
"#,
        socket.display()
    )
}

fn http_manager(stat_prefix: &str, route: &str) -> String {
    format!(
        r#"- name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          route_config:
            virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, {route} }}] }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}"#
    )
}

/// The top of every bootstrap: node `id`, the admin API on 127.0.0.1:`admin_port`, and the
/// opening of the listener list.
fn preamble(id: &str, admin_port: u16) -> String {
    format!(
        "node: {{ id: {id}, cluster: e2e }}\nadmin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }} }}\nstatic_resources:\n  listeners:\n"
    )
}

/// An Envoy that terminates mTLS on `port` with SDS secrets and answers 200 `body`.
pub fn mtls_server(
    admin_port: u16,
    port: u16,
    sds_socket: &Path,
    names: &TlsNames<'_>,
    body: &str,
) -> String {
    format!(
        r#"{preamble}  - name: server
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          {tls}
      filters:
      {http}
  clusters:
{cluster}"#,
        preamble = preamble("mtls-server", admin_port),
        tls = common_tls_context(names),
        http = http_manager(
            "server",
            &format!(r#"direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }}"#)
        ),
        cluster = sds_cluster(sds_socket),
    )
}

/// An Envoy that takes plaintext HTTP on `port` and forwards it over mTLS (SDS secrets)
/// to `upstream_port`.
pub fn mtls_client(
    admin_port: u16,
    port: u16,
    upstream_port: u16,
    sds_socket: &Path,
    names: &TlsNames<'_>,
) -> String {
    format!(
        r#"{preamble}  - name: client
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      {http}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }} }} }} }}] }}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        {tls}
{cluster}"#,
        preamble = preamble("mtls-client", admin_port),
        http = http_manager("client", "route: { cluster: upstream }"),
        tls = common_tls_context(names),
        cluster = sds_cluster(sds_socket),
    )
}

/// An Envoy that takes plaintext HTTP on `port`, adds `Authorization: Bearer <secret>`
/// from the SDS generic secret `secret_name` (credential-injector filter), and forwards
/// to a plaintext upstream on `upstream_port`.
pub fn credential_injector(
    admin_port: u16,
    port: u16,
    upstream_port: u16,
    sds_socket: &Path,
    secret_name: &str,
) -> String {
    format!(
        r#"{preamble}  - name: injector
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: injector
          route_config:
            virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: upstream }} }}] }}]
          http_filters:
          - name: envoy.filters.http.credential_injector
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector
              overwrite: true
              credential:
                name: envoy.http.injected_credentials.generic
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic
                  credential: {{ name: "{secret_name}", sds_config: {SDS_CONFIG} }}
                  header: Authorization
                  header_value_prefix: "Bearer "
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }} }} }} }}] }}]
{cluster}"#,
        preamble = preamble("injector", admin_port),
        cluster = sds_cluster(sds_socket),
    )
}

/// The dev bootstrap (`steeple dev` prints it; `deploy/envoy/dev-bootstrap.yaml`) moved
/// to free ports: the YAML and the plaintext client port (`curl` it for the mTLS hop).
pub fn dev_on_free_ports(yaml: &str) -> anyhow::Result<(String, u16)> {
    let (admin, client, server) = (
        crate::free_port()?,
        crate::free_port()?,
        crate::free_port()?,
    );
    let yaml = yaml
        .replace("port_value: 9901", &format!("port_value: {admin}"))
        .replace("port_value: 10080", &format!("port_value: {client}"))
        .replace("port_value: 10443", &format!("port_value: {server}"));
    Ok((yaml, client))
}
