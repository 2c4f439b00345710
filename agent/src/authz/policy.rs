//! Which local callers may fetch which resources: rules matching a caller (uid, gid,
//! executable) to resource-name globs. Without configured rules only the agent's own uid
//! is allowed, to everything.

use super::Caller;

/// One rule: a caller matching every given selector may fetch the matching resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Any of these uids (empty: any uid).
    pub uids: Vec<u32>,
    /// Any of these gids (empty: any gid).
    pub gids: Vec<u32>,
    /// The caller's executable path, a glob (`*` matches any run of characters).
    pub exe: Option<String>,
    /// Any of these SPIFFE ID globs, matched against the caller's own SVIDs (delegated
    /// mode, once SPIRE attested it); empty: any caller, whatever its identity. A rule
    /// naming SPIFFE IDs never matches a caller whose identity is unknown.
    pub spiffe_ids: Vec<String>,
    /// Resource-name globs granted.
    pub resources: Vec<String>,
}

/// Rules in order; the first that matches the caller decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// A node agent's rules (delegated mode): the given ones, or — when there are none —
    /// the agent's own uid with everything and every other local caller with the names of
    /// its *own* identity (its SVIDs, their bundles, its JWT-SVIDs): what SPIRE agent's
    /// own SDS serves any caller. Shared secrets (envelopes, credentials) need a rule.
    pub fn for_node_agent(rules: Vec<Rule>, own_uid: u32, identity_names: Vec<String>) -> Self {
        if !rules.is_empty() {
            return Self { rules };
        }
        let mut policy = Self::new(rules, own_uid);
        policy.rules.push(Rule {
            uids: Vec::new(),
            gids: Vec::new(),
            exe: None,
            spiffe_ids: Vec::new(),
            resources: identity_names,
        });
        policy
    }

    /// The given rules, or — when there are none — the agent's own uid with everything.
    pub fn new(rules: Vec<Rule>, own_uid: u32) -> Self {
        if rules.is_empty() {
            return Self {
                rules: vec![Rule {
                    uids: vec![own_uid],
                    gids: Vec::new(),
                    exe: None,
                    spiffe_ids: Vec::new(),
                    resources: vec!["*".into()],
                }],
            };
        }
        Self { rules }
    }

    /// The resource globs `caller` is granted (empty: none), its identity unknown.
    pub fn grants(&self, caller: &Caller) -> Vec<String> {
        self.grants_to(caller, None)
    }

    /// The resource globs `caller`, holding SVIDs for `identity` (its SPIFFE IDs, when
    /// known), is granted: the first rule matching both decides.
    pub fn grants_to(&self, caller: &Caller, identity: Option<&[String]>) -> Vec<String> {
        self.rules
            .iter()
            .find(|rule| rule.matches(caller) && rule.matches_identity(identity))
            .map(|rule| rule.resources.clone())
            .unwrap_or_default()
    }

    /// Whether some rule may grant `caller` something once its identity is known.
    pub fn may_grant(&self, caller: &Caller) -> bool {
        self.rules.iter().any(|rule| rule.matches(caller))
    }

    /// Whether some rule names SPIFFE IDs.
    pub fn names_identities(&self) -> bool {
        self.rules.iter().any(|rule| !rule.spiffe_ids.is_empty())
    }
}

impl Rule {
    fn matches_identity(&self, identity: Option<&[String]>) -> bool {
        if self.spiffe_ids.is_empty() {
            return true;
        }
        identity.is_some_and(|ids| {
            ids.iter()
                .any(|id| self.spiffe_ids.iter().any(|glob| glob_matches(glob, id)))
        })
    }

    fn matches(&self, caller: &Caller) -> bool {
        let uid = self.uids.is_empty() || self.uids.contains(&caller.uid);
        let gid = self.gids.is_empty() || self.gids.contains(&caller.gid);
        let exe = match &self.exe {
            None => true,
            Some(pattern) => caller
                .exe
                .as_ref()
                .and_then(|e| e.to_str())
                .is_some_and(|e| glob_matches(pattern, e)),
        };
        uid && gid && exe
    }
}

/// `*` matches any run of characters (including `/`); everything else literally.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, exe: &str) -> Caller {
        let mut c = Caller::from_peer(uid, 100, None);
        c.exe = Some(exe.into());
        c
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything/at:all"));
        assert!(glob_matches("db/*", "db/password"));
        assert!(!glob_matches("db/*", "dbx/password"));
        assert!(glob_matches(
            "spiffe://example.org/*",
            "spiffe://example.org/web"
        ));
        assert!(glob_matches("a*b*c", "a-x-b-y-c"));
        assert!(!glob_matches("a*b*c", "a-x-c-y-b"));
        assert!(glob_matches("ROOTCA", "ROOTCA"));
        assert!(!glob_matches("ROOTCA", "ROOTCAX"));
        assert!(!glob_matches("ab*ba", "aba"));
    }

    #[test]
    fn default_is_own_uid_only_and_first_matching_rule_decides() {
        let default = Policy::new(Vec::new(), 1000);
        assert_eq!(default.grants(&caller(1000, "/x")), ["*"]);
        assert!(default.grants(&caller(65534, "/x")).is_empty());

        let policy = Policy::new(
            vec![
                Rule {
                    uids: vec![65534],
                    gids: vec![],
                    exe: Some("/usr/*/envoy".into()),
                    spiffe_ids: vec![],
                    resources: vec!["default".into(), "ROOTCA".into()],
                },
                Rule {
                    uids: vec![1000],
                    gids: vec![],
                    exe: None,
                    spiffe_ids: vec![],
                    resources: vec!["*".into()],
                },
            ],
            1000,
        );
        assert_eq!(policy.grants(&caller(65534, "/usr/bin/envoy")).len(), 2);
        assert!(policy.grants(&caller(65534, "/tmp/envoy")).is_empty());
        assert_eq!(policy.grants(&caller(1000, "/tmp/x")), ["*"]);
    }

    #[test]
    fn a_spiffe_id_rule_matches_only_a_caller_attested_with_that_identity() {
        let rule = |spiffe_ids: Vec<String>, resources: &[&str]| Rule {
            uids: vec![1101, 1102],
            gids: vec![],
            exe: None,
            spiffe_ids,
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        };
        let policy = Policy::new(
            vec![
                rule(
                    vec!["spiffe://example.org/payments/*".into()],
                    &["default", "payments/*"],
                ),
                rule(vec![], &["default"]),
            ],
            0,
        );
        let who = caller(1101, "/x");
        let payments = ["spiffe://example.org/payments/api".to_owned()];
        let web = ["spiffe://example.org/web".to_owned()];
        assert_eq!(
            policy.grants_to(&who, Some(&payments)),
            ["default", "payments/*"]
        );
        assert_eq!(policy.grants_to(&who, Some(&web)), ["default"]);
        assert_eq!(policy.grants(&who), ["default"], "identity unknown");
        assert!(policy.may_grant(&who) && policy.names_identities());
        assert!(!policy.may_grant(&caller(7, "/x")));
    }

    #[test]
    fn a_node_agent_without_rules_serves_every_caller_its_own_identity_names_only() {
        let names = vec!["default".to_owned(), "spiffe://*".to_owned()];
        let policy = Policy::for_node_agent(Vec::new(), 0, names.clone());
        assert_eq!(policy.grants(&caller(0, "/x")), ["*"]);
        assert_eq!(policy.grants(&caller(1101, "/x")), names);
        let ruled = Policy::for_node_agent(
            vec![Rule {
                uids: vec![7],
                gids: vec![],
                exe: None,
                spiffe_ids: vec![],
                resources: vec!["*".into()],
            }],
            0,
            names,
        );
        assert!(
            ruled.grants(&caller(1101, "/x")).is_empty(),
            "rules replace the default"
        );
    }
}
