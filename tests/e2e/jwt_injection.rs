//! A JWT-SVID from SPIRE, kept fresh by Steeple and served as an SDS generic secret, is
//! injected by Envoy's credential-injector filter into requests to an upstream.

use std::time::Duration;

use base64::Engine as _;
use steeple_e2e::bootstrap::credential_injector;
use steeple_e2e::sds_client::{self, assert_not_in_logs};
use steeple_e2e::{RecordingUpstream, Suite};

const WORKLOAD: &str = "spiffe://example.org/workload";
const SECRET: &str = "jwt-svid:upstream.example.org";
const JWT_BUNDLE: &str = "jwt-bundle:spiffe://example.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_injects_the_jwt_svid_served_over_sds() -> anyhow::Result<()> {
    let config = "[[jwt_svids]]\naudience = \"upstream.example.org\"\n";
    let suite = Suite::with_spire_config("1h", &[WORKLOAD], config)?;
    let served = sds_client::wait_for(
        suite.steeple.sds_socket(),
        &[SECRET],
        Duration::from_secs(60),
    )
    .await?;
    let token = sds_client::secret_bytes(&served[0]).expect("generic secret bytes");
    let token = String::from_utf8(token)?;

    let upstream = RecordingUpstream::start().await?;
    let port = suite.port()?;
    let _envoy = suite.envoy(&credential_injector(
        suite.port()?,
        port,
        upstream.port(),
        suite.steeple.sds_socket(),
        SECRET,
    ))?;
    suite.eventually_ok(port).await?;
    let authorization = upstream
        .last_header("authorization")
        .expect("a request reached the upstream");
    assert_eq!(authorization, format!("Bearer {token}"));

    // It is a real JWT-SVID for this workload and audience, signed RS256 by SPIRE.
    let mut parts = token.split('.');
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value =
        serde_json::from_slice(&engine.decode(parts.next().unwrap_or_default())?)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&engine.decode(parts.next().unwrap_or_default())?)?;
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["sub"], WORKLOAD);
    assert!(claims["aud"].to_string().contains("upstream.example.org"));

    // The JWT bundle Steeple follows and serves verifies that very token.
    let served = sds_client::wait_for(
        suite.steeple.sds_socket(),
        &[JWT_BUNDLE],
        Duration::from_secs(30),
    )
    .await?;
    let jwks: serde_json::Value =
        serde_json::from_slice(&sds_client::secret_bytes(&served[0]).expect("JWKS bytes"))?;
    verify_rs256(&token, &header["kid"], &jwks)?;

    assert_not_in_logs(&[token.into_bytes()], &suite.steeple.logs())?;
    Ok(())
}

/// Checks `token`'s RS256 signature with the key `kid` of `jwks`.
fn verify_rs256(
    token: &str,
    kid: &serde_json::Value,
    jwks: &serde_json::Value,
) -> anyhow::Result<()> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == *kid))
        .ok_or_else(|| anyhow::anyhow!("kid {kid} not in the served JWT bundle"))?;
    let component = |name: &str| -> anyhow::Result<Vec<u8>> {
        let text = key[name]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no {name}"))?;
        Ok(engine.decode(text)?)
    };
    let public = ring::signature::RsaPublicKeyComponents {
        n: component("n")?,
        e: component("e")?,
    };
    let (signed, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| anyhow::anyhow!("not a JWS"))?;
    public
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &engine.decode(signature)?,
        )
        .map_err(|_| anyhow::anyhow!("JWT-SVID does not verify with the served JWT bundle"))
}
