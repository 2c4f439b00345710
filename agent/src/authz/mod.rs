//! Per-caller authorization on the local endpoints: the caller is identified by its Unix
//! peer credentials and `/proc` facts ([`Caller`]); the [`Policy`] says which resource
//! names it may fetch; a [`Grant`] checks every requested name and records the decision.

mod caller;
mod policy;
pub mod tcp_peer;

pub use caller::{Caller, ProcessChange};
pub use policy::{Policy, Rule, glob_matches};

use std::sync::Arc;

use tokio::sync::watch;
use tonic::Status;

/// The policy in force, shared by every local endpoint and replaced by a reload.
#[derive(Debug, Clone)]
pub struct SharedPolicy(Arc<watch::Sender<Arc<Policy>>>);

impl SharedPolicy {
    /// `policy`, in force until replaced.
    pub fn new(policy: Policy) -> Self {
        Self(Arc::new(watch::Sender::new(Arc::new(policy))))
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        self.0.borrow().clone()
    }

    /// A receiver woken whenever the policy is replaced.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.0.subscribe()
    }

    /// Puts `policy` in force: new requests get it, and open SDS streams re-check what
    /// they watch (closed with PermissionDenied if no longer granted).
    pub fn replace(&self, policy: Policy) {
        self.0.send_replace(Arc::new(policy));
    }
}

/// What one connected caller may fetch.
#[derive(Debug, Clone)]
pub struct Grant {
    caller: Arc<Caller>,
    /// The caller's SPIFFE IDs, once SPIRE attested it (delegated mode).
    identity: Option<Vec<String>>,
    resources: Vec<String>,
    /// Whether a reloaded policy applies (not to connections without peer credentials).
    follows_policy: bool,
    /// The endpoint asked, naming the audit events (`sds` unless set).
    endpoint: &'static str,
}

impl Grant {
    /// `caller`'s grant under `policy`, its identity unknown.
    pub fn new(caller: Arc<Caller>, policy: &Policy) -> Self {
        Self::with_identity(caller, policy, None)
    }

    /// `caller`'s grant under `policy`, holding SVIDs for `identity` when known.
    pub fn with_identity(
        caller: Arc<Caller>,
        policy: &Policy,
        identity: Option<Vec<String>>,
    ) -> Self {
        let resources = policy.grants_to(&caller, identity.as_deref());
        Self {
            caller,
            identity,
            resources,
            follows_policy: true,
            endpoint: "sds",
        }
    }

    /// The same grant, its audit events named for `endpoint` (e.g.
    /// `container-credentials`).
    #[must_use]
    pub fn on_endpoint(mut self, endpoint: &'static str) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// A grant to nothing, whatever the policy says now or later (for connections
    /// without peer credentials).
    pub fn nothing(caller: Arc<Caller>) -> Self {
        Self {
            caller,
            identity: None,
            resources: Vec::new(),
            follows_policy: false,
            endpoint: "sds",
        }
    }

    /// The same caller's grant under `policy` (after a reload).
    #[must_use]
    pub fn under(&self, policy: &Policy) -> Self {
        if !self.follows_policy {
            return self.clone();
        }
        Self::with_identity(self.caller.clone(), policy, self.identity.clone())
            .on_endpoint(self.endpoint)
    }

    /// The same caller's grant once it holds SVIDs for `identity` (its SVIDs changed).
    #[must_use]
    pub fn attested(&self, policy: &Policy, identity: Vec<String>) -> Self {
        if !self.follows_policy {
            return self.clone();
        }
        Self::with_identity(self.caller.clone(), policy, Some(identity)).on_endpoint(self.endpoint)
    }

    /// The caller's SPIFFE IDs, when known.
    pub fn identity(&self) -> Option<&[String]> {
        self.identity.as_deref()
    }

    /// A grant to everything (for callers that are the agent itself, and tests).
    pub fn everything(caller: Arc<Caller>) -> Self {
        Self {
            caller,
            identity: None,
            resources: vec!["*".into()],
            follows_policy: false,
            endpoint: "sds",
        }
    }

    /// The caller.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Whether the grant covers no resource at all.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Whether the grant covers every resource (so wildcard requests may be answered).
    pub fn is_unrestricted(&self) -> bool {
        self.resources.iter().any(|r| r == "*")
    }

    /// Whether `name` may be served — without the liveness re-check (for filtering).
    pub fn covers(&self, name: &str) -> bool {
        self.resources.iter().any(|glob| glob_matches(glob, name))
    }

    /// Checks one request: `None` asks for every resource (a wildcard), which needs an
    /// unrestricted grant; otherwise every name must be covered.
    pub fn authorize_request(&self, names: Option<Vec<&str>>) -> Result<(), Status> {
        match names {
            Some(names) => self.authorize(names),
            None if self.is_unrestricted() => self.authorize([]),
            None => {
                tracing::warn!(target: crate::audit::TARGET, caller = %self.caller.describe(), resource = "*", decision = "deny", "{}", self.endpoint);
                Err(Status::permission_denied(
                    "a wildcard request needs access to every resource; name the resources",
                ))
            }
        }
    }

    /// Checks every name of one request; refuses the first one not granted, naming it
    /// (never the policy), and refuses everything once the connecting process is gone or
    /// runs another program ([`Caller::runs_as_connected`]). Each denial is an audit
    /// event, as is the first grant of each name on a connection.
    pub fn authorize<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), Status> {
        match self.caller.runs_as_connected() {
            Ok(()) => {}
            Err(ProcessChange::Gone) => {
                tracing::warn!(target: crate::audit::TARGET, caller = %self.caller.describe(), decision = "deny", reason = "connecting process exited or PID reused", "{}", self.endpoint);
                return Err(Status::permission_denied(
                    "the process that opened this connection is gone; reconnect",
                ));
            }
            Err(ProcessChange::Executed) => {
                tracing::warn!(target: crate::audit::TARGET, caller = %self.caller.describe(), decision = "deny", reason = "connecting process executed another program since it connected", "{}", self.endpoint);
                return Err(Status::permission_denied(
                    "the process that opened this connection now runs another program; reconnect",
                ));
            }
        }
        for name in names {
            if !self.covers(name) {
                tracing::warn!(target: crate::audit::TARGET, caller = %self.caller.describe(), resource = name, decision = "deny", "{}", self.endpoint);
                let shown: String = name.chars().take(200).collect();
                return Err(Status::permission_denied(format!(
                    "not authorized for resource {shown:?}"
                )));
            }
            if self.caller.first_grant_of(name) {
                tracing::debug!(target: crate::audit::TARGET, caller = %self.caller.describe(), resource = name, decision = "grant", "{}", self.endpoint);
            }
        }
        Ok(())
    }
}
