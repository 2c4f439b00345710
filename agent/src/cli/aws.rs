//! `steeple aws credential-process`: prints the `credential_process` JSON the running
//! agent already holds, fetched once over its SDS socket. The AWS CLI runs this on every
//! call, so it never calls STS, starts no tracing and uses a current-thread runtime.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret::Type};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use prost::Message as _;
use serde::Deserialize;
use tonic::Code;
use zeroize::{Zeroize as _, Zeroizing};

use crate::config::Config;
use crate::sds::resources::SECRET_TYPE_URL;
use crate::uds::lazy_channel;

/// How long the whole fetch from the agent may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// `steeple aws …` subcommands.
#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Print the agent's AWS credentials as `credential_process` JSON (for
    /// `credential_process = steeple aws credential-process` in ~/.aws/config).
    CredentialProcess(CredentialProcessArgs),
}

/// Arguments of `steeple aws credential-process`.
#[derive(Debug, Args)]
pub struct CredentialProcessArgs {
    /// The agent's TOML configuration file (for `sds.socket` and
    /// `aws.credentials_resource_name`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The agent's SDS socket; default `sds.socket` from the configuration.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The SDS secret to read; default `aws.credentials_resource_name`.
    #[arg(long)]
    name: Option<String>,
}

/// Why no credentials were printed. Names the socket and the secret, never its content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialProcessError {
    /// The socket could not be dialled, the connection failed, or no answer came in time.
    #[error("cannot reach the agent at {socket}: {reason}")]
    Unreachable {
        /// The SDS socket.
        socket: String,
        /// The transport's explanation.
        reason: String,
    },
    /// The agent does not serve the secret (AWS exchange off, or no valid credentials).
    #[error(
        "the agent at {socket} has no secret {name:?} (is [aws] enabled, and has an exchange succeeded?)"
    )]
    NotServed {
        /// The SDS socket.
        socket: String,
        /// The secret's name.
        name: String,
    },
    /// The agent's `[[callers]]` policy does not give this user the secret.
    #[error("the agent at {socket} refuses secret {name:?} to this user: {reason}")]
    Denied {
        /// The SDS socket.
        socket: String,
        /// The secret's name.
        name: String,
        /// The agent's explanation.
        reason: String,
    },
    /// Any other gRPC error from the agent.
    #[error("the agent at {socket} failed the request ({code:?}): {reason}")]
    Agent {
        /// The SDS socket.
        socket: String,
        /// The gRPC status code.
        code: Code,
        /// The agent's explanation.
        reason: String,
    },
    /// The secret exists but is not a `generic_secret` with inline content.
    #[error("secret {name:?} is not a generic secret with inline content")]
    NotGeneric {
        /// The secret's name.
        name: String,
    },
    /// The content is not `credential_process` JSON with `Version` 1 and `Expiration`.
    #[error("secret {name:?} is not credential_process JSON ({reason})")]
    Malformed {
        /// The secret's name.
        name: String,
        /// What is wrong (a position or a field, never content).
        reason: String,
    },
    /// The credentials' `Expiration` is not in the future.
    #[error("the credentials in secret {name:?} expired at {expiration}")]
    Expired {
        /// The secret's name.
        name: String,
        /// The `Expiration` they carry.
        expiration: String,
    },
    /// The runtime could not start, or stdout could not be written.
    #[error("{0}")]
    Local(String),
}

/// The fields checked before printing; the secret fields are skipped, never copied.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Header {
    version: u8,
    expiration: String,
}

/// Runs the subcommand: 0 with the JSON on stdout, 1 on any failure, 2 on a bad config.
pub fn run(command: &AwsCommand) -> ExitCode {
    let AwsCommand::CredentialProcess(args) = command;
    let config = match Config::load(args.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("steeple: {errors}");
            return ExitCode::from(2);
        }
    };
    let socket = args.socket.clone().unwrap_or(config.sds.socket);
    let name = args
        .name
        .clone()
        .unwrap_or(config.aws.credentials_resource_name);
    match fetch_and_print(&socket, &name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steeple aws credential-process: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fetch_and_print(socket: &Path, name: &str) -> Result<(), CredentialProcessError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CredentialProcessError::Local(format!("cannot start the runtime: {e}")))?;
    let json = runtime.block_on(fetch(socket, name))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&json)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| CredentialProcessError::Local(format!("cannot write to stdout: {e}")))
}

async fn fetch(socket: &Path, name: &str) -> Result<Zeroizing<Vec<u8>>, CredentialProcessError> {
    let mut client = SecretDiscoveryServiceClient::new(lazy_channel(socket));
    let request = DiscoveryRequest {
        resource_names: vec![name.to_owned()],
        type_url: SECRET_TYPE_URL.to_owned(),
        ..Default::default()
    };
    let response = tokio::time::timeout(FETCH_TIMEOUT, client.fetch_secrets(request))
        .await
        .map_err(|_| CredentialProcessError::Unreachable {
            socket: socket.display().to_string(),
            reason: format!("no answer within {FETCH_TIMEOUT:?}"),
        })?
        .map_err(|status| from_status(&status, socket, name))?;
    credential_process_output(response.into_inner(), socket, name, SystemTime::now())
}

/// Maps a failed FetchSecrets call to what the user should check.
pub fn from_status(status: &tonic::Status, socket: &Path, name: &str) -> CredentialProcessError {
    let socket = socket.display().to_string();
    let name = name.to_owned();
    let reason = status.message().to_owned();
    match status.code() {
        Code::NotFound => CredentialProcessError::NotServed { socket, name },
        Code::PermissionDenied => CredentialProcessError::Denied {
            socket,
            name,
            reason,
        },
        Code::Unavailable => CredentialProcessError::Unreachable {
            socket,
            reason: error_chain(status),
        },
        code => CredentialProcessError::Agent {
            socket,
            code,
            reason,
        },
    }
}

/// The status message, else its innermost cause (tonic repeats the cause in both).
fn error_chain(status: &tonic::Status) -> String {
    if !status.message().is_empty() {
        return status.message().to_owned();
    }
    let mut cause = std::error::Error::source(status);
    let mut text = format!("{:?}", status.code());
    while let Some(e) = cause {
        text = e.to_string();
        cause = e.source();
    }
    text
}

/// The content of secret `name` in `response`, checked to be `credential_process` JSON
/// whose `Expiration` is after `now`. Every other copy of the content in `response` is
/// zeroized.
pub fn credential_process_output(
    mut response: DiscoveryResponse,
    socket: &Path,
    name: &str,
    now: SystemTime,
) -> Result<Zeroizing<Vec<u8>>, CredentialProcessError> {
    let mut found = None;
    for any in &mut response.resources {
        let decoded = match found {
            None => Secret::decode(any.value.as_slice()).ok(),
            Some(_) => None,
        };
        any.value.zeroize();
        match decoded {
            Some(secret) if secret.name == name => found = Some(secret),
            // Dropped as `Zeroizing`: wipes a generic secret we were not asked for.
            Some(other) => drop(generic_content(other)),
            None => {}
        }
    }
    let Some(secret) = found else {
        return Err(CredentialProcessError::NotServed {
            socket: socket.display().to_string(),
            name: name.to_owned(),
        });
    };
    let json = generic_content(secret).ok_or_else(|| CredentialProcessError::NotGeneric {
        name: name.to_owned(),
    })?;
    check_expiration(&json, name, now)?;
    Ok(json)
}

/// The inline bytes or string of a `generic_secret`, moved out (not copied).
fn generic_content(secret: Secret) -> Option<Zeroizing<Vec<u8>>> {
    let Some(Type::GenericSecret(generic)) = secret.r#type else {
        return None;
    };
    match generic.secret?.specifier? {
        Specifier::InlineBytes(bytes) => Some(Zeroizing::new(bytes)),
        Specifier::InlineString(text) => Some(Zeroizing::new(text.into_bytes())),
        _ => None,
    }
}

fn check_expiration(
    json: &[u8],
    name: &str,
    now: SystemTime,
) -> Result<(), CredentialProcessError> {
    let malformed = |reason: String| CredentialProcessError::Malformed {
        name: name.to_owned(),
        reason,
    };
    // serde_json's messages can quote the input, so only the position is reported.
    let header: Header = serde_json::from_slice(json).map_err(|e| {
        malformed(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if header.version != 1 {
        return Err(malformed(format!("Version {} is not 1", header.version)));
    }
    let expiration = time::OffsetDateTime::parse(
        &header.expiration,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| {
        malformed(format!(
            "Expiration {:?} is not RFC 3339",
            header.expiration
        ))
    })?;
    if SystemTime::from(expiration) <= now {
        return Err(CredentialProcessError::Expired {
            name: name.to_owned(),
            expiration: header.expiration,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "aws_tests.rs"]
mod tests;
