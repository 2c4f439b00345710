//! The SDS names producers serve under: the prefixes the identity side uses, the default
//! names it makes, and the set of names no envelope may take.

/// SVIDs are served under their SPIFFE ID and X.509 bundles under their trust domain's
/// ID (`spiffe://example.org`).
pub const SPIFFE_PREFIX: &str = "spiffe://";
/// JWT-SVIDs are served as `jwt-svid:<audience>` unless `[[jwt_svids]]` names them.
pub const JWT_SVID_PREFIX: &str = "jwt-svid:";
/// JWT bundles are served as `jwt-bundle:spiffe://<trust domain>`.
pub const JWT_BUNDLE_PREFIX: &str = "jwt-bundle:";
/// Every prefix the identity side serves under.
pub const IDENTITY_PREFIXES: [&str; 3] = [SPIFFE_PREFIX, JWT_SVID_PREFIX, JWT_BUNDLE_PREFIX];

/// The default name of the JWT-SVID for `audience`.
pub fn jwt_svid_name(audience: &str) -> String {
    format!("{JWT_SVID_PREFIX}{audience}")
}

/// The name of the JWT bundle of `trust_domain`.
pub fn jwt_bundle_name(trust_domain: &str) -> String {
    format!("{JWT_BUNDLE_PREFIX}{SPIFFE_PREFIX}{trust_domain}")
}

/// Names no envelope may take: exact ones and prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimedNames {
    /// Exact names.
    pub exact: Vec<String>,
    /// Name prefixes.
    pub prefixes: Vec<String>,
}

impl ClaimedNames {
    /// Whether `name` is claimed.
    pub fn contains(&self, name: &str) -> bool {
        self.exact.iter().any(|n| n == name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_from_their_prefixes() {
        assert_eq!(jwt_svid_name("upstream"), "jwt-svid:upstream");
        assert_eq!(
            jwt_bundle_name("example.org"),
            "jwt-bundle:spiffe://example.org"
        );
        let claimed = ClaimedNames {
            exact: vec!["default".into()],
            prefixes: vec![SPIFFE_PREFIX.into()],
        };
        assert!(claimed.contains("default") && claimed.contains("spiffe://example.org/web"));
        assert!(!claimed.contains("app/db") && !claimed.contains("defaults"));
    }
}
