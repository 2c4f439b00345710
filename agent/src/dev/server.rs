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
use tonic::{Request, Response, Status};

use super::ca::IssuedSvid;
use super::jwt::JwtSigner;

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the dev Workload API hands out; the SVIDs are replaced on rotation.
#[derive(Debug)]
pub struct DevService {
    /// `spiffe://<trust domain>`.
    pub trust_domain_id: String,
    /// The CA, DER.
    pub ca_der: Vec<u8>,
    /// The current SVIDs, default first.
    pub svids: watch::Receiver<Arc<Vec<IssuedSvid>>>,
    /// JWT-SVID signer.
    pub signer: Arc<JwtSigner>,
    /// JWT-SVID lifetime.
    pub jwt_ttl: Duration,
}

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
        X509svidResponse {
            svids: svids
                .iter()
                .map(|s| X509svid {
                    spiffe_id: s.spiffe_id.clone(),
                    x509_svid: s.leaf_der.clone(),
                    x509_svid_key: s.key_pkcs8.expose().to_vec(),
                    bundle: self.ca_der.clone(),
                    hint: String::new(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ids(&self) -> Vec<String> {
        self.svids
            .borrow()
            .iter()
            .map(|s| s.spiffe_id.clone())
            .collect()
    }
}

/// Converts JSON claims into the protobuf Struct `ValidateJWTSVID` answers with.
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
        let known = self.ids();
        let ids = if request.spiffe_id.is_empty() {
            known
        } else if known.contains(&request.spiffe_id) {
            vec![request.spiffe_id]
        } else {
            return Err(Status::permission_denied(
                "no identity issued for that SPIFFE ID",
            ));
        };
        let svids = ids
            .into_iter()
            .map(|id| {
                let svid = self.signer.sign(&id, &request.audience, self.jwt_ttl)?;
                Ok(Jwtsvid {
                    spiffe_id: id,
                    svid,
                    hint: String::new(),
                })
            })
            .collect::<Result<Vec<_>, super::DevError>>()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&request)?;
        let bundles = HashMap::from([(self.trust_domain_id.clone(), self.signer.jwks())]);
        let once = futures::stream::iter([Ok(JwtBundlesResponse { bundles })]);
        // The signing key never rotates in dev: one message, then the stream stays open.
        Ok(Response::new(Box::pin(
            once.chain(futures::stream::pending()),
        )))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&request)?;
        let request = request.into_inner();
        let claims = self
            .signer
            .validate(&request.svid, &request.audience)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let spiffe_id = claims
            .get("sub")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
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
        let this = DevService {
            trust_domain_id: self.trust_domain_id.clone(),
            ca_der: self.ca_der.clone(),
            svids: self.svids.clone(),
            signer: self.signer.clone(),
            jwt_ttl: self.jwt_ttl,
        };
        let stream =
            WatchStream::new(self.svids.clone()).map(move |svids| Ok(this.x509_response(&svids)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
        let bundles = HashMap::from([(self.trust_domain_id.clone(), self.ca_der.clone())]);
        let once = futures::stream::iter([Ok(X509BundlesResponse {
            crl: vec![],
            bundles,
        })]);
        Ok(Response::new(Box::pin(
            once.chain(futures::stream::pending()),
        )))
    }
}
