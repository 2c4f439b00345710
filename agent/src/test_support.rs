//! Test-only helpers: a throwaway CA issuing SVIDs with rcgen, a JWT-SVID source whose
//! Workload API is never there, and the context a side starts with.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

/// A CA for one trust domain.
pub struct TestCa {
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf issued by a [`TestCa`].
pub struct TestSvid {
    pub der: Vec<u8>,
    pub key_pkcs8: Vec<u8>,
}

impl TestCa {
    pub fn new(trust_domain: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let uri = format!("spiffe://{trust_domain}");
        params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into().unwrap())];
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Issues a leaf for `spiffe_id` valid for `ttl_secs` from now.
    pub fn issue(&self, spiffe_id: &str, ttl_secs: i64) -> TestSvid {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(60);
        params.not_after = now + time::Duration::seconds(ttl_secs);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TestSvid {
            der: cert.der().to_vec(),
            key_pkcs8: key.serialize_der(),
        }
    }
}

/// A JWT-SVID source that always fails as an unreachable Workload API would.
#[derive(Debug)]
pub struct NoWorkloadApi;

impl steeple_plugin_api::JwtSvidSource for NoWorkloadApi {
    fn fetch<'a>(
        &'a self,
        _: &'a str,
    ) -> steeple_plugin_api::BoxFuture<
        'a,
        Result<steeple_plugin_api::SecretBytes, steeple_plugin_api::ExchangeError>,
    > {
        Box::pin(async {
            Err(steeple_plugin_api::ExchangeError::new(
                steeple_plugin_api::ExchangeErrorKind::Transient,
                "NoWorkloadApi",
                "unit test",
            ))
        })
    }
}

/// What a side gets at start, with nothing behind it: no Workload API, an empty store, no
/// envelope rows, a policy granting nothing.
#[cfg(any(feature = "aws", feature = "vault"))]
pub fn side_context(
    shutdown: &tokio_util::sync::CancellationToken,
) -> crate::sides::SideContext<'_> {
    let store = std::sync::Arc::new(crate::store::SecretStore::new());
    let workload_api =
        crate::identity::client(std::path::Path::new("/nonexistent/steeple-test.sock"));
    crate::sides::SideContext {
        identities: crate::caller_identity::CallerIdentities::Own {
            store: store.clone(),
            default_name: "default".into(),
            workload_api,
        },
        roles: crate::workload_roles::WorkloadRoles::default(),
        envelopes: None,
        jwt: std::sync::Arc::new(NoWorkloadApi),
        readiness: crate::readiness::Readiness::new(store.clone(), &[]),
        store,
        rows: None,
        policy: crate::authz::SharedPolicy::new(crate::authz::Policy::new(Vec::new(), 0)),
        fatal: crate::lifecycle::FatalSignal::new(shutdown),
        shutdown,
    }
}
