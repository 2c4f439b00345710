//! SPIFFE IDs and trust domains as Steeple takes them, from its configuration and from
//! the Workload API: parsed by the `spiffe` crate (one parser, not one per module) and
//! accepted only in its canonical form, exactly as written (a trust domain in upper case is
//! refused, not silently lowered).

use spiffe::{SpiffeId, TrustDomain};

/// `text` as a SPIFFE ID (`spiffe://td/path…`).
pub fn spiffe_id(text: &str) -> Option<SpiffeId> {
    SpiffeId::new(text).ok().filter(|id| id.to_string() == text)
}

/// The trust domain of a SPIFFE ID or trust-domain ID (`spiffe://td/...` → `td`), as the
/// Workload API keys bundles; `None` for anything that is not one.
pub fn trust_domain_of(id: &str) -> Option<TrustDomain> {
    SpiffeId::new(id).ok().map(|id| id.trust_domain().clone())
}

/// `text` as a trust domain: its name (`example.org`) or its ID (`spiffe://example.org`,
/// no path).
pub fn trust_domain(text: &str) -> Option<TrustDomain> {
    if text.contains("://") {
        return spiffe_id(text)
            .filter(|id| id.path().is_empty())
            .map(|id| id.trust_domain().clone());
    }
    TrustDomain::new(text).ok().filter(|td| td.as_str() == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_ids_and_names_are_taken() {
        assert!(spiffe_id("spiffe://example.org/web").is_some());
        for bad in [
            "example.org/web",
            "spiffe://Example.org/web",
            "spiffe://example.org/web/",
            "spiffe://example.org/a/../b",
            "https://example.org/web",
            "spiffe://",
        ] {
            assert!(spiffe_id(bad).is_none(), "{bad}");
        }
        assert_eq!(trust_domain("example.org").unwrap().as_str(), "example.org");
        assert_eq!(trust_domain("spiffe://td-1_x").unwrap().as_str(), "td-1_x");
        for bad in [
            "",
            "Example.org",
            "spiffe://example.org/vault",
            "a b",
            "spiffe://",
        ] {
            assert!(trust_domain(bad).is_none(), "{bad}");
        }
    }
}
