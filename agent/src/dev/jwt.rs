//! JWT-SVIDs of the dev trust domain: ES256 signing with a P-256 key, its JWKS, and
//! validation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::{Value, json};

use super::DevError;

/// Signs and checks the dev trust domain's JWT-SVIDs.
pub struct JwtSigner {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl JwtSigner {
    /// A signer with a fresh key.
    pub fn new() -> Result<Self, DevError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| DevError::Signing)?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| DevError::Signing)?;
        let kid = B64.encode(rand::random::<[u8; 12]>());
        Ok(Self { key, kid, rng })
    }

    /// A signed token for `sub` and `audience`, living `ttl`.
    pub fn sign(&self, sub: &str, audience: &[String], ttl: Duration) -> Result<String, DevError> {
        let iat = now_secs();
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let claims = json!({"sub": sub, "aud": audience, "iat": iat, "exp": iat + ttl.as_secs()});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| DevError::Signing)?;
        Ok(format!(
            "{signing_input}.{}",
            B64.encode(signature.as_ref())
        ))
    }

    /// The JWK set holding the public key, as JSON bytes.
    pub fn jwks(&self) -> Vec<u8> {
        // An uncompressed P-256 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = self.key.public_key().as_ref();
        let (x, y) = point
            .get(1..)
            .unwrap_or_default()
            .split_at(point.len().saturating_sub(1) / 2);
        json!({"keys": [{"kty": "EC", "crv": "P-256", "x": B64.encode(x), "y": B64.encode(y), "kid": self.kid, "use": "jwt-svid"}]})
            .to_string()
            .into_bytes()
    }

    /// Checks signature, audience and expiry; returns the claims.
    pub fn validate(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<serde_json::Map<String, Value>, DevError> {
        let invalid = |why: &str| DevError::InvalidToken(why.to_owned());
        let (signing_input, signature) =
            token.rsplit_once('.').ok_or_else(|| invalid("not a JWS"))?;
        let (_, payload) = signing_input
            .split_once('.')
            .ok_or_else(|| invalid("not a JWS"))?;
        let signature = B64
            .decode(signature)
            .map_err(|_| invalid("bad signature encoding"))?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| invalid("bad signature"))?;
        let payload = B64
            .decode(payload)
            .map_err(|_| invalid("bad payload encoding"))?;
        let claims: serde_json::Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| invalid("payload is not a JSON object"))?;
        let audiences = claims
            .get("aud")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !audiences.iter().any(|a| a.as_str() == Some(audience)) {
            return Err(invalid("audience mismatch"));
        }
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if exp <= now_secs() {
            return Err(invalid("expired"));
        }
        Ok(claims)
    }
}
