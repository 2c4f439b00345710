//! JWT-SVIDs of the dev trust domain: ES256 signing with a P-256 key, the JWK set that
//! publishes it, and validation of tokens it signed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::{Map, Value, json};

use super::DevError;

/// Claims of a validated token.
pub(super) type Claims = Map<String, Value>;

/// Signs the dev trust domain's JWT-SVIDs and checks tokens presented back to it.
pub(super) struct JwtSigner {
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

impl JwtSigner {
    /// A signer with a fresh P-256 key and a random key ID.
    pub fn new() -> Result<Self, DevError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| DevError::Signing)?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| DevError::Signing)?;
        let kid = B64.encode(rand::random::<[u8; 16]>());
        Ok(Self { key, kid, rng })
    }

    /// The key ID in every token header and in the JWK set.
    #[cfg(test)]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for `sub` and `audience`, issued now and expiring after `ttl`.
    pub fn sign(&self, sub: &str, audience: &[String], ttl: Duration) -> Result<String, DevError> {
        let iat = unix_now();
        let exp = iat.saturating_add(ttl.as_secs());
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let claims = json!({"sub": sub, "aud": audience, "exp": exp, "iat": iat});
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

    /// The JWK set publishing the public key, as JSON bytes.
    pub fn jwks(&self) -> Vec<u8> {
        // ring gives the uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = self.key.public_key().as_ref();
        let x = point.get(1..33).unwrap_or_default();
        let y = point.get(33..65).unwrap_or_default();
        let key = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": B64.encode(x),
            "y": B64.encode(y),
            "kid": self.kid,
            "use": "jwt-svid",
        });
        json!({ "keys": [key] }).to_string().into_bytes()
    }

    /// Checks that `token` is a compact ES256 JWS signed by this key, names `audience`
    /// and has not expired; returns its subject and all its claims.
    pub fn validate(&self, token: &str, audience: &str) -> Result<(String, Claims), DevError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS"));
        };
        let header = decode_object(header, "header")?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(invalid("alg is not ES256"));
        }
        let signature = B64
            .decode(signature)
            .map_err(|_| invalid("signature is not base64url"))?;
        let (signing_input, _) = token.rsplit_once('.').unwrap_or_default();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| invalid("signature does not verify against the dev key"))?;
        let claims = decode_object(payload, "payload")?;
        check_claims(&claims, audience)?;
        let sub = match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() => sub.to_owned(),
            _ => return Err(invalid("no sub claim")),
        };
        Ok((sub, claims))
    }
}

fn check_claims(claims: &Claims, audience: &str) -> Result<(), DevError> {
    // RFC 7519 allows `aud` as a single string or an array of strings.
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(invalid("audience does not match"));
    }
    match claims.get("exp").and_then(Value::as_u64) {
        Some(exp) if exp > unix_now() => Ok(()),
        Some(_) => Err(invalid("expired")),
        None => Err(invalid("no exp claim")),
    }
}

fn decode_object(part: &str, what: &str) -> Result<Claims, DevError> {
    let bytes = B64
        .decode(part)
        .map_err(|_| invalid(&format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| invalid(&format!("{what} is not a JSON object")))
}

fn invalid(why: &str) -> DevError {
    DevError::InvalidToken(why.to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aud(a: &str) -> Vec<String> {
        vec![a.to_owned()]
    }

    #[test]
    fn round_trips_and_checks_audience_and_expiry() {
        let signer = JwtSigner::new().unwrap();
        let token = signer
            .sign("spiffe://td/w", &aud("db"), Duration::from_secs(60))
            .unwrap();
        let (sub, claims) = signer.validate(&token, "db").unwrap();
        assert_eq!(sub, "spiffe://td/w");
        assert_eq!(claims["aud"], json!(["db"]));
        let header = decode_object(token.split('.').next().unwrap(), "header").unwrap();
        assert_eq!(header["kid"], signer.kid());
        let jwks: Value = serde_json::from_slice(&signer.jwks()).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], signer.kid());
        assert!(signer.validate(&token, "other").is_err());
        let expired = signer.sign("spiffe://td/w", &aud("db"), Duration::ZERO);
        assert!(signer.validate(&expired.unwrap(), "db").is_err());
    }

    #[test]
    fn refuses_foreign_tampered_and_malformed_tokens() {
        let signer = JwtSigner::new().unwrap();
        let other = JwtSigner::new().unwrap();
        let foreign = other
            .sign("spiffe://td/w", &aud("db"), Duration::from_secs(60))
            .unwrap();
        assert!(signer.validate(&foreign, "db").is_err());
        let token = signer
            .sign("spiffe://td/w", &aud("db"), Duration::from_secs(60))
            .unwrap();
        let (input, _) = token.rsplit_once('.').unwrap();
        let unsigned_header = B64.encode(r#"{"alg":"none"}"#);
        let payload = input.split('.').nth(1).unwrap();
        for bad in [
            String::new(),
            ".".into(),
            "..".into(),
            "a.b.c.d".into(),
            "ééé.é.é".into(),
            format!("{input}."),
            format!("{unsigned_header}.{payload}."),
            format!("{token}x"),
        ] {
            assert!(signer.validate(&bad, "db").is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn huge_ttls_saturate_instead_of_overflowing() {
        let signer = JwtSigner::new().unwrap();
        let token = signer.sign("spiffe://td/w", &aud("db"), Duration::MAX);
        assert!(signer.validate(&token.unwrap(), "db").is_ok());
    }
}
