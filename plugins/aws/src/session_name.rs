//! STS `RoleSessionName` from a SPIFFE ID, so CloudTrail names the workload.

use std::fmt::Write as _;

/// STS allows 2 to 64 characters.
const MAX_LEN: usize = 64;
const MIN_LEN: usize = 2;
/// Hex digits of the SPIFFE ID's digest kept when a name must be shortened.
const DIGEST_HEX: usize = 8;

/// Whether STS accepts `c` in a session name (`[\w+=,.@-]`).
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

/// Whether `name` is a valid STS role session name: 2 to 64 characters of `[\w+=,.@-]`.
pub(crate) fn is_valid(name: &str) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&name.len()) && name.chars().all(allowed)
}

/// Maps a SPIFFE ID into STS's role session name pattern `[\w+=,.@-]{2,64}`.
///
/// `spiffe://` is stripped and every other character STS refuses (`/`, `:`, …) becomes
/// `-`, so `spiffe://example.org/ns/prod/sa/api` reads `example.org-ns-prod-sa-api`. A
/// longer result keeps its first 55 characters, then `.` and 8 hex digits of the SHA-256
/// of the whole SPIFFE ID, so two long IDs sharing a prefix still get different names. A
/// result shorter than 2 characters is padded with `_`.
pub fn role_session_name(spiffe_id: &str) -> String {
    let rest = spiffe_id.strip_prefix("spiffe://").unwrap_or(spiffe_id);
    let mapped: String = rest
        .chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .collect();
    let mut name = if mapped.chars().count() > MAX_LEN {
        let keep = MAX_LEN - DIGEST_HEX - 1;
        let mut short: String = mapped.chars().take(keep).collect();
        short.push('.');
        let digest = ring::digest::digest(&ring::digest::SHA256, spiffe_id.as_bytes());
        for byte in &digest.as_ref()[..DIGEST_HEX / 2] {
            // Writing to a String cannot fail.
            let _ = write!(short, "{byte:02x}");
        }
        short
    } else {
        mapped
    };
    while name.len() < MIN_LEN {
        name.push('_');
    }
    name
}

/// The session name for the SPIFFE ID in a JWT-SVID's `sub` claim; `None` when the token
/// has no readable subject. The token is not verified here: it came from the Workload
/// API, and STS verifies it.
pub(crate) fn from_jwt_subject(jwt: &str) -> Option<String> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Claims {
        sub: String,
    }
    let payload = jwt.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&json).ok()?;
    (!claims.sub.is_empty()).then(|| role_session_name(&claims.sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_subjects_name_the_session() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = |claims: &str| format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims));
        assert_eq!(
            from_jwt_subject(&jwt(r#"{"sub":"spiffe://example.org/api","aud":["x"]}"#)).as_deref(),
            Some("example.org-api")
        );
        assert_eq!(from_jwt_subject(&jwt(r#"{"aud":["x"]}"#)), None);
        assert_eq!(from_jwt_subject(&jwt(r#"{"sub":""}"#)), None);
        assert_eq!(from_jwt_subject("not a jwt"), None);
        assert_eq!(from_jwt_subject("a.%%%.c"), None);
    }

    #[test]
    fn maps_spiffe_ids_into_the_sts_pattern() {
        assert_eq!(
            role_session_name("spiffe://example.org/ns/prod/sa/api"),
            "example.org-ns-prod-sa-api"
        );
        assert_eq!(
            role_session_name("spiffe://example.org:8443/a b/ü/x+y=z,@w_v"),
            "example.org-8443-a-b---x+y=z,@w_v"
        );
        assert_eq!(role_session_name("example.org/w"), "example.org-w");
        for id in [
            "spiffe://example.org/ns/prod/sa/api",
            "spiffe://a/ü/€/%/?/#",
            "spiffe://x",
        ] {
            assert!(is_valid(&role_session_name(id)), "{id}");
        }
    }

    #[test]
    fn pads_short_names() {
        assert_eq!(role_session_name("spiffe://"), "__");
        assert_eq!(role_session_name("spiffe://x"), "x_");
        assert_eq!(role_session_name("ab"), "ab");
    }

    #[test]
    fn long_ids_are_shortened_to_64_and_stay_distinct() {
        let base = format!("spiffe://example.org/{}", "segment/".repeat(20));
        let a = role_session_name(&format!("{base}a"));
        let b = role_session_name(&format!("{base}b"));
        assert_eq!(a.len(), 64);
        assert_eq!(b.len(), 64);
        assert_ne!(a, b);
        assert!(a.starts_with("example.org-segment-"), "{a}");
        assert!(is_valid(&a) && is_valid(&b));
        // Deterministic: the same ID always maps to the same name.
        assert_eq!(a, role_session_name(&format!("{base}a")));
        // Exactly 64 characters is kept as is.
        let sixty_four = "x".repeat(64);
        assert_eq!(role_session_name(&sixty_four), sixty_four);
    }

    #[test]
    fn validity_follows_the_sts_rules() {
        assert!(is_valid("steeple"));
        assert!(is_valid("a.b@c=d,e+f_g-h"));
        assert!(!is_valid("a"));
        assert!(!is_valid(&"a".repeat(65)));
        assert!(!is_valid("a/b"));
        assert!(!is_valid("a:b"));
    }
}
