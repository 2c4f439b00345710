//! The dev trust domain served as the SPIFFE Workload API.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use serde_json::Value as Json;
use steeple_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use steeple_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::DevError;
use super::ca::IssuedSvid;
use super::jwt::JwtSigner;

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The current X.509-SVIDs, one per workload ID in configured order; replaced on rotation.
pub(super) type SvidSet = Arc<Vec<IssuedSvid>>;

/// The Workload API of the dev trust domain. Cheap to clone: every stream holds a copy.
#[derive(Debug, Clone)]
pub(super) struct DevService {
    /// `spiffe://<trust domain>`, the key of every bundle map.
    pub trust_domain_id: String,
    /// The CA certificate, DER.
    pub ca_der: Arc<[u8]>,
    /// The SPIFFE IDs every caller gets, default first.
    pub workload_ids: Arc<[String]>,
    /// The current X.509-SVIDs.
    pub svids: watch::Receiver<SvidSet>,
    /// Signs and validates JWT-SVIDs.
    pub signer: Arc<JwtSigner>,
    /// JWT-SVID lifetime.
    pub jwt_ttl: Duration,
    /// Ends every open stream, so the server's graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
}

/// The one place dev errors become gRPC statuses.
fn status(error: DevError) -> Status {
    match error {
        DevError::InvalidToken(_) => Status::invalid_argument(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

/// Refuses requests without `workload.spiffe.io: true`, with SPIRE's wording.
fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get(steeple_proto::SECURITY_HEADER) {
        Some(v) if v == "true" => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

impl DevService {
    fn x509_response(&self, svids: &[IssuedSvid]) -> X509svidResponse {
        let svids = svids
            .iter()
            .map(|s| X509svid {
                spiffe_id: s.spiffe_id.clone(),
                x509_svid: s.leaf_der.clone(),
                x509_svid_key: s.key_pkcs8.expose().to_vec(),
                bundle: self.ca_der.to_vec(),
                hint: String::new(),
            })
            .collect();
        X509svidResponse {
            svids,
            ..Default::default()
        }
    }

    /// `first`, then nothing until shutdown: the dev CA and JWT key never rotate, and
    /// the Workload API keeps bundle streams open for changes.
    fn once_then_idle<T: Send + 'static>(&self, first: T) -> Streamed<T> {
        let stream = futures::stream::iter([Ok(first)])
            .chain(futures::stream::pending())
            .take_until(self.shutdown.clone().cancelled_owned());
        Box::pin(stream)
    }

    fn jwt_ids(&self, requested: String) -> Result<Vec<String>, Status> {
        if requested.is_empty() {
            Ok(self.workload_ids.to_vec())
        } else if self.workload_ids.contains(&requested) {
            Ok(vec![requested])
        } else {
            Err(Status::permission_denied(format!(
                "no identity issued for {requested}"
            )))
        }
    }
}

/// JSON claims as the protobuf `Struct` that `ValidateJWTSVID` answers with.
fn to_proto(value: &Json) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        Json::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for DevService {
    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;
    type FetchX509SVIDStream = Streamed<X509svidResponse>;
    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_header(&request)?;
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let svids = self
            .jwt_ids(request.spiffe_id)?
            .into_iter()
            .map(|spiffe_id| {
                let svid = self
                    .signer
                    .sign(&spiffe_id, &request.audience, self.jwt_ttl)
                    .map_err(status)?;
                Ok(Jwtsvid {
                    spiffe_id,
                    svid,
                    hint: String::new(),
                })
            })
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&request)?;
        let bundles = HashMap::from([(self.trust_domain_id.clone(), self.signer.jwks())]);
        Ok(Response::new(
            self.once_then_idle(JwtBundlesResponse { bundles }),
        ))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&request)?;
        let request = request.into_inner();
        if request.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let (spiffe_id, claims) = self
            .signer
            .validate(&request.svid, &request.audience)
            .map_err(status)?;
        let fields = claims
            .iter()
            .map(|(k, v)| (k.clone(), to_proto(v)))
            .collect();
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(prost_types::Struct { fields }),
        }))
    }

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&request)?;
        let this = self.clone();
        let stream = WatchStream::new(self.svids.clone())
            .map(move |svids| Ok(this.x509_response(&svids)))
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
        let bundles = HashMap::from([(self.trust_domain_id.clone(), self.ca_der.to_vec())]);
        Ok(Response::new(self.once_then_idle(X509BundlesResponse {
            crl: Vec::new(),
            bundles,
        })))
    }
}
