//! The dev trust domain's JWT key for OpenBao's `jwt_validation_pubkeys`: `steeple dev`
//! serves its JWT bundle over SDS as `jwt-bundle:spiffe://<td>` (a JWK set of P-256
//! keys); OpenBao wants PEM. Also a throwaway P-256 key to configure JWT auth with before
//! the agent's key is known.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

/// DER of `SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 }` up to the key bits.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Every P-256 key of a JWK set, as PEM.
pub fn jwks_to_pems(jwks: &[u8]) -> anyhow::Result<Vec<String>> {
    let set: serde_json::Value = serde_json::from_slice(jwks).context("JWT bundle is not JSON")?;
    let keys = set["keys"].as_array().context("JWT bundle has no keys")?;
    let pems = keys
        .iter()
        .filter(|k| k["kty"] == "EC" && k["crv"] == "P-256")
        .map(|k| {
            let coordinate = |name: &str| -> anyhow::Result<Vec<u8>> {
                let text = k[name]
                    .as_str()
                    .with_context(|| format!("JWK lacks {name}"))?;
                Ok(URL_SAFE_NO_PAD.decode(text)?)
            };
            let point = [vec![0x04], coordinate("x")?, coordinate("y")?].concat();
            anyhow::ensure!(point.len() == 65, "not a P-256 point");
            Ok(pem(&point))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!pems.is_empty(), "JWT bundle holds no P-256 key");
    Ok(pems)
}

/// A fresh P-256 public key nobody signs with, as PEM.
pub fn throwaway_pem() -> anyhow::Result<String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generating a P-256 key"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("loading the P-256 key"))?;
    Ok(pem(key.public_key().as_ref()))
}

/// An uncompressed P-256 point as a PEM `PUBLIC KEY`.
fn pem(point: &[u8]) -> String {
    let body = STANDARD.encode([&P256_SPKI_PREFIX[..], point].concat());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}
