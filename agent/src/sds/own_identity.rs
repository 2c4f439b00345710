//! Delegated mode's rule for SVIDs named by SPIFFE ID: a caller may ask only for its own.
//! Trust-domain names (`spiffe://example.org`, no path) are bundles, not SVIDs, and pass.
//! The rule is judged once the caller's own identity is known (its first update from
//! SPIRE, even an empty one); until then nothing is served under such a name anyway.

use tonic::Status;

use crate::authz::Caller;
use crate::spiffe_ids::spiffe_id;
use crate::store::{Source, View};

/// What the rule says of some requested names.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Nothing to object to (or `self` mode, where the rule does not apply).
    Allowed,
    /// Some name is an SVID's, and the caller's identity is not known yet.
    Pending,
    /// The first name that is another workload's SVID.
    Foreign(&'a str),
}

/// Judges `names` against the caller's own SVIDs in `view`.
pub fn judge<'a>(view: &View, names: &[&'a str]) -> Verdict<'a> {
    let Some(own) = view.own() else {
        return Verdict::Allowed;
    };
    let mut svid_names = names
        .iter()
        .copied()
        .filter(|name| spiffe_id(name).is_some_and(|id| !id.path().is_empty()));
    if !own.has_synced(&Source::X509Identity) {
        return match svid_names.next() {
            Some(_) => Verdict::Pending,
            None => Verdict::Allowed,
        };
    }
    svid_names
        .find(|name| own.get(name).is_none())
        .map_or(Verdict::Allowed, Verdict::Foreign)
}

/// The refusal of `name` to `caller`, audited.
pub fn refuse(caller: &Caller, name: &str) -> Status {
    tracing::warn!(target: crate::audit::TARGET, caller = %caller.describe(), resource = name, decision = "deny", reason = "an SVID issued to another workload", "sds");
    crate::metrics::metrics().sds_request_refused();
    let shown: String = name.chars().take(200).collect();
    Status::permission_denied(format!(
        "{shown:?} is not an SVID of this workload; a workload gets only its own"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Secret, SecretStore};
    use steeple_plugin_api::SecretBytes;

    fn generic() -> Secret {
        Secret::Generic(SecretBytes::copy_from(b"x"))
    }

    #[test]
    fn only_the_workloads_own_svid_names_pass_once_its_identity_is_known() {
        let shared = SecretStore::new();
        let own = SecretStore::new();
        let mine = "spiffe://example.org/a";
        let theirs = "spiffe://example.org/b";
        let names = [mine, theirs, "spiffe://example.org", "default", "app/db"];
        let view = View::delegated(shared.snapshot(), own.snapshot());
        assert_eq!(judge(&view, &names), Verdict::Pending);
        assert_eq!(judge(&view, &names[2..]), Verdict::Allowed);
        own.sync_source(&Source::X509Identity, vec![(mine.into(), generic())]);
        let view = View::delegated(shared.snapshot(), own.snapshot());
        assert_eq!(judge(&view, &names), Verdict::Foreign(theirs));
        assert_eq!(judge(&view, &[mine, "default"]), Verdict::Allowed);
        own.sync_source(&Source::X509Identity, vec![]);
        let revoked = View::delegated(shared.snapshot(), own.snapshot());
        assert_eq!(judge(&revoked, &[mine]), Verdict::Foreign(mine));
        assert_eq!(
            judge(&View::shared(shared.snapshot()), &[theirs]),
            Verdict::Allowed,
            "self mode: the rule does not apply"
        );
    }
}
