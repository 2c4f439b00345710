//! Role leases on tokio's paused clock, against a scripted exchanger and scripted
//! JWT-SVIDs (no peer in unit tests).

use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use steeple_plugin_api::{BoxFuture, ExchangeError, Expiring, JwtSvidSource, SecretBytes};

use super::*;

/// Every exchange made: (the token's `sub`, the role).
type Calls = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Debug, Clone, PartialEq)]
struct Issued {
    /// Who the token named, and the role it was exchanged for.
    sub: String,
    role: String,
    expires: SystemTime,
}

impl Expiring for Issued {
    fn expires_at(&self) -> SystemTime {
        self.expires
    }
}

/// Exchanges any token for its `sub`, recording every call.
#[derive(Debug)]
struct Scripted {
    role: String,
    calls: Calls,
}

impl CredentialExchanger for Scripted {
    type Credentials = Issued;
    fn audience(&self) -> &str {
        "aud"
    }
    fn exchange<'a>(
        &'a self,
        jwt: &'a SecretBytes,
    ) -> BoxFuture<'a, Result<Issued, ExchangeError>> {
        let sub = crate::identity::jwt::token_subject(jwt.expose()).unwrap_or_default();
        self.calls
            .lock()
            .unwrap()
            .push((sub.clone(), self.role.clone()));
        let role = self.role.clone();
        Box::pin(async move {
            Ok(Issued {
                sub,
                role,
                expires: SystemTime::now() + Duration::from_secs(3600),
            })
        })
    }
}

/// Tokens naming the identity asked for — or, for `liar`, always `spiffe://td/liar`.
#[derive(Debug)]
struct Tokens;

#[derive(Debug)]
struct TokenFor(String);

impl JwtSvidsById for Tokens {
    fn for_id(&self, spiffe_id: &str, _: &Arc<tokio::sync::Notify>) -> Arc<dyn JwtSvidSource> {
        let sub = if spiffe_id.ends_with("/liar") {
            "spiffe://td/other"
        } else {
            spiffe_id
        };
        Arc::new(TokenFor(sub.to_owned()))
    }
}

impl JwtSvidSource for TokenFor {
    fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<SecretBytes, ExchangeError>> {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = engine.encode(format!(r#"{{"sub":"{}","exp":4000000000}}"#, self.0));
        Box::pin(async move {
            Ok(SecretBytes::copy_from(
                format!("e30.{claims}.sig").as_bytes(),
            ))
        })
    }
}

fn exchanges(shutdown: &CancellationToken) -> (RoleExchanges<Scripted>, Calls) {
    let calls = Arc::default();
    let exchangers = ["payments", "web"]
        .map(|role| {
            let scripted = Scripted {
                role: role.into(),
                calls: Arc::clone(&calls),
            };
            (role.to_owned(), Arc::new(scripted))
        })
        .into_iter()
        .collect();
    (
        RoleExchanges::new("test", exchangers, Arc::new(Tokens), shutdown),
        calls,
    )
}

#[tokio::test(start_paused = true)]
async fn each_identity_gets_its_own_role_once_however_many_hold_it() {
    let shutdown = CancellationToken::new();
    let (roles, calls) = exchanges(&shutdown);
    let a1 = roles.acquire("spiffe://td/a", "payments").unwrap();
    let a2 = roles.acquire("spiffe://td/a", "payments").unwrap();
    let b = roles.acquire("spiffe://td/b", "web").unwrap();
    assert!(roles.acquire("spiffe://td/a", "unconfigured").is_none());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(roles.running(), 2);
    let issued_a = a2.credential().borrow().clone().unwrap();
    assert_eq!(
        (issued_a.sub.as_str(), issued_a.role.as_str()),
        ("spiffe://td/a", "payments")
    );
    let issued_b = b.credential().borrow().clone().unwrap();
    assert_eq!(
        (issued_b.sub.as_str(), issued_b.role.as_str()),
        ("spiffe://td/b", "web")
    );
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "one exchange per (identity, role)"
    );
    drop((a1, a2, b));
    tokio::time::sleep(ROLE_LEASE_LINGER + Duration::from_secs(1)).await;
    assert_eq!(
        roles.running(),
        0,
        "stopped a linger after the last holder left"
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_token_naming_another_identity_is_never_exchanged() {
    let shutdown = CancellationToken::new();
    let (roles, calls) = exchanges(&shutdown);
    let liar = roles.acquire("spiffe://td/liar", "payments").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(liar.credential().borrow().is_none());
    assert!(calls.lock().unwrap().is_empty(), "nothing sent upstream");
    shutdown.cancel();
}
