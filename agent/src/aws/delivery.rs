//! AWS credentials in the shapes AWS SDKs read: the `credential_process` JSON (served as
//! an SDS generic secret, and printed by `steeple aws credential-process`), the
//! container-credentials JSON and the IMDS instance-profile JSON. Each is built straight
//! into an exactly-sized secret buffer.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use steeple_plugin_api::{AwsCredentials, SecretBytes};
use tokio_util::sync::CancellationToken;

use super::CredentialWatch;
use crate::store::{Secret, SecretStore, Source};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialProcess<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: &'a str,
    /// Left out when STS's answer did not name the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerCredentials<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: &'a str,
    /// Left out when STS's answer did not name the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InstanceProfileCredentials<'a> {
    code: &'a str,
    last_updated: &'a str,
    #[serde(rename = "Type")]
    kind: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: &'a str,
    /// Left out when STS's answer did not name the account. SDKs that know it read it
    /// (the JavaScript and Rust SDKs); the others ignore fields they do not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
}

/// Why credentials could not be rendered (never carries them).
#[derive(Debug, thiserror::Error)]
#[error("credentials could not be rendered: {0}")]
pub struct RenderError(&'static str);

/// RFC 3339 in UTC, as the SDKs expect `Expiration`.
pub fn rfc3339(at: SystemTime) -> Result<String, RenderError> {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|_| RenderError("expiration out of range"))
}

/// `{"Version":1,"AccessKeyId",…,"Expiration","AccountId"}` for `credential_process`.
pub fn credential_process_json(c: &AwsCredentials) -> Result<SecretBytes, RenderError> {
    let expiration = rfc3339(c.expiration)?;
    let (secret, token) = texts(c)?;
    exact_json(&CredentialProcess {
        version: 1,
        access_key_id: &c.access_key_id,
        secret_access_key: secret,
        session_token: token,
        expiration: &expiration,
        account_id: c.account_id.as_deref(),
    })
}

/// `{"AccessKeyId","SecretAccessKey","Token","Expiration","AccountId"}` for the container
/// endpoint.
pub fn container_json(c: &AwsCredentials) -> Result<SecretBytes, RenderError> {
    let expiration = rfc3339(c.expiration)?;
    let (secret, token) = texts(c)?;
    exact_json(&ContainerCredentials {
        access_key_id: &c.access_key_id,
        secret_access_key: secret,
        token,
        expiration: &expiration,
        account_id: c.account_id.as_deref(),
    })
}

/// `{"Code":"Success","LastUpdated","Type":"AWS-HMAC","AccessKeyId","SecretAccessKey",
/// "Token","Expiration","AccountId"}` as IMDS serves an instance profile's credentials;
/// `last_updated` is when the agent first served them.
pub fn instance_profile_json(
    c: &AwsCredentials,
    last_updated: SystemTime,
) -> Result<SecretBytes, RenderError> {
    let expiration = rfc3339(c.expiration)?;
    let last_updated = rfc3339(last_updated)?;
    let (secret, token) = texts(c)?;
    exact_json(&InstanceProfileCredentials {
        code: "Success",
        last_updated: &last_updated,
        kind: "AWS-HMAC",
        access_key_id: &c.access_key_id,
        secret_access_key: secret,
        token,
        expiration: &expiration,
        account_id: c.account_id.as_deref(),
    })
}

fn texts(c: &AwsCredentials) -> Result<(&str, &str), RenderError> {
    let secret = std::str::from_utf8(c.secret_access_key.expose())
        .map_err(|_| RenderError("secret access key is not UTF-8"))?;
    let token = std::str::from_utf8(c.session_token.expose())
        .map_err(|_| RenderError("session token is not UTF-8"))?;
    Ok((secret, token))
}

/// Serializes twice: once to count, once into a buffer of exactly that size, so no
/// reallocation leaves a stray copy of the secret behind.
fn exact_json(value: &impl Serialize) -> Result<SecretBytes, RenderError> {
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).map_err(|_| RenderError("serialization"))?;
    let mut buffer = Vec::with_capacity(counter.0);
    serde_json::to_writer(&mut buffer, value).map_err(|_| RenderError("serialization"))?;
    Ok(SecretBytes::new(buffer))
}

struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Mirrors the latest credentials into the store as the generic secret `name`
/// (`credential_process` JSON); removes it when none are valid.
pub async fn publish_to_store(
    name: String,
    mut credentials: CredentialWatch<AwsCredentials>,
    store: Arc<SecretStore>,
    shutdown: CancellationToken,
) {
    let source = Source::AwsCredentials(name.clone());
    loop {
        let entry = credentials
            .borrow_and_update()
            .as_ref()
            .map(credential_process_json);
        let desired = match entry {
            Some(Ok(json)) => vec![(name.clone(), Secret::Generic(json))],
            Some(Err(e)) => {
                tracing::error!(error = %e, "AWS credentials not served over SDS");
                Vec::new()
            }
            None => Vec::new(),
        };
        store.sync_source(&source, desired);
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = credentials.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn credentials() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: SecretBytes::copy_from(b"secret/key+1"),
            session_token: SecretBytes::copy_from(b"token=="),
            expiration: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            account_id: Some("123456789012".into()),
        }
    }

    #[test]
    fn renders_every_sdk_shape_exactly() {
        let json = credential_process_json(&credentials()).unwrap();
        assert_eq!(
            std::str::from_utf8(json.expose()).unwrap(),
            r#"{"Version":1,"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"secret/key+1","SessionToken":"token==","Expiration":"2027-01-15T08:00:00Z","AccountId":"123456789012"}"#
        );
        let json = container_json(&credentials()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(json.expose()).unwrap();
        assert_eq!(value["Token"], "token==");
        assert_eq!(value["Expiration"], "2027-01-15T08:00:00Z");
        assert_eq!(value["AccountId"], "123456789012");
        assert!(value.get("Version").is_none());
        let updated = SystemTime::UNIX_EPOCH + Duration::from_secs(1_799_996_400);
        let json = instance_profile_json(&credentials(), updated).unwrap();
        assert_eq!(
            std::str::from_utf8(json.expose()).unwrap(),
            r#"{"Code":"Success","LastUpdated":"2027-01-15T07:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"secret/key+1","Token":"token==","Expiration":"2027-01-15T08:00:00Z","AccountId":"123456789012"}"#
        );
    }

    #[test]
    fn an_unknown_account_is_left_out_of_every_shape() {
        let unknown = AwsCredentials {
            account_id: None,
            ..credentials()
        };
        for json in [
            credential_process_json(&unknown).unwrap(),
            container_json(&unknown).unwrap(),
            instance_profile_json(&unknown, SystemTime::now()).unwrap(),
        ] {
            let value: serde_json::Value = serde_json::from_slice(json.expose()).unwrap();
            assert!(value.get("AccountId").is_none(), "{value}");
            assert!(value.get("AccessKeyId").is_some());
        }
    }
}
