{{/*
The sidecar's Envoy bootstrap: inbound mTLS on sidecar.envoy.port → the app on
127.0.0.1:sidecar.app.port, certificate and bundle from Steeple over SDS with SPIRE
agent's resource names (default, ROOTCA). sidecar.envoy.bootstrap replaces it whole.
*/}}
{{- define "steeple.envoyBootstrap" -}}
{{- if .Values.sidecar.envoy.bootstrap }}
{{- .Values.sidecar.envoy.bootstrap }}
{{- else -}}
node:
  id: {{ include "steeple.fullname" . }}
  cluster: {{ include "steeple.fullname" . }}
static_resources:
  listeners:
  - name: inbound_mtls
    address: { socket_address: { address: 0.0.0.0, port_value: {{ .Values.sidecar.envoy.port }} } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: default
              sds_config: &steeple_sds
                resource_api_version: V3
                api_config_source:
                  api_type: GRPC
                  transport_api_version: V3
                  grpc_services: [{ envoy_grpc: { cluster_name: steeple_sds } }]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names:
                - san_type: URI
                  matcher: { prefix: {{ .Values.sidecar.envoy.allowedSpiffeIdPrefix | quote }} }
              validation_context_sds_secret_config:
                name: ROOTCA
                sds_config: *steeple_sds
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: { uri: true }
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: local_app }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: local_app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: local_app
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{ .Values.sidecar.app.port }} } } } }] }]
  - name: steeple_sds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: steeple_sds
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { pipe: { path: {{ include "steeple.sdsSocketPath" . | quote }} } } } }] }]
{{- end }}
{{- end }}
