//! Trust for Vault's TLS certificate that can change while connections come and go: the
//! roots of a SPIFFE trust bundle, replaced whenever the Workload API delivers a new one
//! (a CA rotation adds and later drops roots), plus any fixed CA file.
//!
//! The [`VaultClient`](crate::VaultClient) is built once and cloned into every resolver;
//! instead of rebuilding it, its rustls verifier looks up the current roots on every
//! handshake. Connections already open keep the trust they were made with; a new
//! connection sees the new roots at once. With a pinned SPIFFE ID, a certificate that
//! chains to the bundle is accepted only if its URI SAN is that ID: any other workload of
//! the trust domain holding an SVID with Vault's DNS name is refused.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The roots a Vault client trusts, replaceable at run time. Cheap to clone; clones share
/// the same roots.
#[derive(Clone)]
pub struct LiveRoots {
    inner: Arc<Inner>,
}

struct Inner {
    /// What is trusted when no bundle has arrived yet, and on top of every bundle: the
    /// `ca_file` certificates (DER).
    fixed: Vec<CertificateDer<'static>>,
    /// Names what the roots come from in handshake errors, e.g.
    /// `the SPIFFE bundle of example.org`.
    origin: String,
    /// The SPIFFE ID Vault's certificate must carry, if pinned.
    spiffe_id: Option<String>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<Arc<WebPkiServerVerifier>>>,
}

impl fmt::Debug for LiveRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveRoots")
            .field("origin", &self.inner.origin)
            .field("fixed", &self.inner.fixed.len())
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// Why a set of roots was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct RootsError {
    /// What the roots came from.
    pub origin: String,
    /// What is wrong with them.
    pub problem: String,
}

impl LiveRoots {
    /// Roots from `origin` (named in errors), none yet: until [`LiveRoots::replace`] is
    /// called, only `fixed` is trusted — and with `fixed` empty every handshake fails,
    /// naming `origin` as not received yet. With `spiffe_id`, the server's certificate
    /// must also carry exactly that SPIFFE ID as its URI SAN.
    pub fn new(
        origin: impl Into<String>,
        fixed: Vec<CertificateDer<'static>>,
        spiffe_id: Option<String>,
    ) -> Self {
        let roots = Self {
            inner: Arc::new(Inner {
                fixed,
                origin: origin.into(),
                spiffe_id,
                provider: Arc::new(rustls::crypto::ring::default_provider()),
                current: RwLock::new(None),
            }),
        };
        if !roots.inner.fixed.is_empty() {
            // Fixed roots that do not parse are refused when the CA file is read; a
            // failure here leaves the client untrusting until the first bundle.
            let _ = roots.replace(&[]);
        }
        roots
    }

    /// Trusts `roots` (DER) from now on, plus the fixed ones. Refused — keeping the
    /// previous roots — when no certificate at all can be used as a trust anchor.
    pub fn replace(&self, roots: &[Vec<u8>]) -> Result<(), RootsError> {
        let fail = |problem: String| RootsError {
            origin: self.inner.origin.clone(),
            problem,
        };
        let mut store = RootCertStore::empty();
        let bundle = roots.iter().map(|der| CertificateDer::from(der.clone()));
        let (added, _ignored) =
            store.add_parsable_certificates(self.inner.fixed.iter().cloned().chain(bundle));
        if added == 0 {
            return Err(fail("no usable CA certificate".to_owned()));
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(store),
            self.inner.provider.clone(),
        )
        .build()
        .map_err(|e| fail(e.to_string()))?;
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Some(verifier);
        Ok(())
    }

    /// Whether any root is trusted yet.
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    /// A rustls client configuration verifying servers against these roots, as they are
    /// at each handshake.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
        let config = rustls::ClientConfig::builder_with_provider(self.inner.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LiveVerifier {
                roots: self.clone(),
            }))
            .with_no_client_auth();
        Ok(config)
    }

    fn current(&self) -> Option<Arc<WebPkiServerVerifier>> {
        self.inner
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Standard WebPKI verification (chain to a root, name, validity) against whatever
/// roots [`LiveRoots`] holds when the handshake happens.
#[derive(Debug)]
struct LiveVerifier {
    roots: LiveRoots,
}

impl LiveVerifier {
    fn current(&self) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        self.roots.current().ok_or_else(|| {
            rustls::Error::General(format!("{} not received yet", self.roots.inner.origin))
        })
    }
}

impl ServerCertVerifier for LiveVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.current()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if let Some(expected) = &self.roots.inner.spiffe_id {
            let found = spiffe_ids(end_entity)?;
            if found.as_slice() != [expected.as_str()] {
                return Err(rustls::Error::General(format!(
                    "Vault's certificate carries the SPIFFE ID(s) {found:?}, not the pinned {expected}"
                )));
            }
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.roots.inner.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.roots.inner.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots
            .inner
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The `spiffe://` URI SANs of a DER certificate.
fn spiffe_ids(der: &CertificateDer<'_>) -> Result<Vec<String>, rustls::Error> {
    use x509_parser::extensions::GeneralName;
    let bad = || rustls::Error::General("Vault's certificate does not parse".to_owned());
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| bad())?;
    let names = cert.subject_alternative_name().map_err(|_| bad())?;
    Ok(names
        .into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some((*uri).to_owned()),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
#[path = "live_roots_tests.rs"]
mod tests;
