//! Federation: a federated bundle set on the SPIRE server reaches Steeple's `ALL` (as
//! SPIFFE validator trust domains) and its per-trust-domain resource; when the
//! federation goes away, delta SDS removes that resource for real — and a real Envoy
//! speaking delta SDS does mTLS with Steeple's secrets.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    SpiffeCertValidatorConfig, secret::Type,
};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message as _;
use steeple_e2e::bootstrap::{TlsNames, mtls_client, mtls_server};
use steeple_e2e::{EntrySpec, Suite, sds_client};

const WORKLOAD: &str = "spiffe://example.org/workload";
const PARTNER: &str = "spiffe://partner.org";

fn partner_ca_pem() -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![rcgen::SanType::URI(PARTNER.try_into()?)];
    Ok(params.self_signed(&key)?.pem())
}

fn trust_domains(secret: &Secret) -> anyhow::Result<Vec<String>> {
    let Some(Type::ValidationContext(vc)) = &secret.r#type else {
        anyhow::bail!("{} is not a validation context", secret.name);
    };
    let typed = vc
        .custom_validator_config
        .as_ref()
        .and_then(|c| c.typed_config.as_ref());
    let config =
        SpiffeCertValidatorConfig::decode(typed.map(|t| t.value.as_slice()).unwrap_or_default())?;
    Ok(config.trust_domains.into_iter().map(|t| t.name).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_bundles_flow_in_and_delta_sds_removes_them() -> anyhow::Result<()> {
    let suite = Suite::with_spire("1h", &[])?;
    suite
        .spire
        .set_federated_bundle("partner.org", &partner_ca_pem()?)?;
    suite.spire.register(&EntrySpec {
        spiffe_id: WORKLOAD.into(),
        selectors: vec![suite.uid_selector()],
        federates_with: vec![PARTNER.into()],
        ..EntrySpec::default()
    })?;
    let sds = suite.steeple.sds_socket();
    sds_client::wait_for(sds, &["default", PARTNER], Duration::from_secs(60)).await?;

    // A delta stream, as Envoy opens it, for the partner bundle and ALL.
    let mut client = sds_client::connect(sds);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(sds_client::envoy_node("delta-test")),
        resource_names_subscribe: vec![PARTNER.into(), "ALL".into()],
        ..Default::default()
    })
    .await?;
    let mut stream = client
        .delta_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await??
        .expect("a response");
    let mut names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ALL", PARTNER]);
    let all = first
        .resources
        .iter()
        .find(|r| r.name == "ALL")
        .and_then(|r| r.resource.as_ref())
        .expect("ALL");
    let mut tds = trust_domains(&Secret::decode(all.value.as_slice())?)?;
    tds.sort_unstable();
    assert_eq!(tds, ["example.org", "partner.org"]);
    tx.send(DeltaDiscoveryRequest {
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await?;

    // A real Envoy on delta SDS gets its certificate and does mTLS.
    let (server_port, client_port) = (suite.port()?, suite.port()?);
    let names = TlsNames {
        certificate: "default",
        validation: Some("ALL"),
        peer_id: WORKLOAD,
    };
    let delta = |yaml: String| yaml.replace("api_type: GRPC", "api_type: DELTA_GRPC");
    let _server = suite.envoy(&delta(mtls_server(
        suite.port()?,
        server_port,
        sds,
        &names,
        "federated",
    )))?;
    let _client = suite.envoy(&delta(mtls_client(
        suite.port()?,
        client_port,
        server_port,
        sds,
        &names,
    )))?;
    let (_, body) = suite.eventually_ok(client_port).await?;
    assert_eq!(body, "federated");

    // The federation goes away: the resource is removed, and ALL shrinks.
    suite.spire.delete_federated_bundle("partner.org")?;
    let update = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await??
        .expect("an update");
    assert_eq!(update.removed_resources, [PARTNER]);
    let all = update
        .resources
        .iter()
        .find(|r| r.name == "ALL")
        .and_then(|r| r.resource.as_ref())
        .expect("ALL updated");
    assert_eq!(
        trust_domains(&Secret::decode(all.value.as_slice())?)?,
        ["example.org"]
    );
    drop(tx);
    Ok(())
}
