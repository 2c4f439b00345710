//! The checks that need no peer: the configuration (valid, and what each section will
//! do), the cargo features it needs, and the two socket paths.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use crate::config::{Config, ConfigErrors, Profile};
use crate::doctor_check::{Check, span};
use crate::uds::{BindError, check_socket_dir};

/// `config`: valid, or every bad key with its message.
pub fn config_check(loaded: &Result<Config, ConfigErrors>, file: Option<&Path>) -> Check {
    let source = file.map_or("defaults and STEEPLE_* variables".to_owned(), |f| {
        f.display().to_string()
    });
    match loaded {
        Ok(config) => {
            let profile = match config.agent.profile {
                Profile::Standard => "standard",
                Profile::Production => "production",
            };
            Check::ok("config", format!("{source} is valid (profile {profile})"))
        }
        Err(ConfigErrors(errors)) => {
            let keys: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Check::fail(
                "config",
                format!(
                    "{source}: {} invalid key(s): {}",
                    errors.len(),
                    keys.join("; ")
                ),
                "correct each key listed (`steeple check-config` re-checks without peers)",
            )
        }
    }
}

/// `config.<section>`: one line per configured section saying what it will do.
pub fn explain(config: &Config) -> Vec<Check> {
    [
        Some(explain_workload_api(config)),
        Some(explain_sds(config)),
        explain_jwt_svids(config),
        explain_envelopes(config),
        explain_control_plane(config),
        explain_aws(config),
        explain_vault(config),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn explain_workload_api(config: &Config) -> Check {
    Check::ok(
        "config.workload_api",
        format!(
            "SVIDs from the Workload API at {}",
            config.workload_api.socket.display()
        ),
    )
}

fn explain_sds(config: &Config) -> Check {
    Check::ok(
        "config.sds",
        format!(
            "SDS on {} (mode {:04o}), {} [[callers]] rule(s){}",
            config.sds.socket.display(),
            config.sds.socket_mode,
            config.callers.len(),
            if config.callers.is_empty() {
                " (own uid only)"
            } else {
                ""
            }
        ),
    )
}

fn explain_jwt_svids(config: &Config) -> Option<Check> {
    if config.jwt_svids.is_empty() {
        return None;
    }
    let audiences: Vec<&str> = config
        .jwt_svids
        .iter()
        .map(|j| j.audience.as_str())
        .collect();
    Some(Check::ok(
        "config.jwt_svids",
        format!("JWT-SVIDs served for audience(s) {}", audiences.join(", ")),
    ))
}

fn explain_envelopes(config: &Config) -> Option<Check> {
    if !config.envelopes.enabled {
        return None;
    }
    let paths: Vec<String> = config
        .envelopes
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Some(Check::ok(
        "config.envelopes",
        format!(
            "envelopes from {} path(s) [{}], polled every {}, resolved again every {}",
            paths.len(),
            paths.join(", "),
            span(config.envelopes.poll_interval),
            span(config.envelopes.refresh_interval)
        ),
    ))
}

fn explain_control_plane(config: &Config) -> Option<Check> {
    let cp = &config.control_plane;
    if cp.url.is_empty() {
        return None;
    }
    let auth = match (&cp.jwt_audience, &cp.token_file) {
        (Some(audience), _) => format!("a JWT-SVID for audience {audience}"),
        (None, Some(file)) => format!("the bearer token in {}", file.display()),
        (None, None) => "no credentials".to_owned(),
    };
    Some(Check::ok(
        "config.control_plane",
        format!(
            "envelope rows from {} every {}, authenticated by {auth}",
            crate::redact::display_url(&cp.url),
            span(cp.poll_interval)
        ),
    ))
}

fn explain_aws(config: &Config) -> Option<Check> {
    let aws = &config.aws;
    if !aws.enabled {
        return None;
    }
    let endpoint = aws.sts_endpoint.as_deref().map_or(String::new(), |e| {
        format!(" at {}", crate::redact::display_url(e))
    });
    Some(Check::ok(
        "config.aws",
        format!(
            "STS AssumeRoleWithWebIdentity as {} in {}{endpoint}, audience {}; KMS keys under [{}]",
            aws.role_arn,
            aws.region.as_deref().unwrap_or("the AWS SDK's region"),
            aws.audience,
            aws.key_arn_allowlist.join(", ")
        ),
    ))
}

fn explain_vault(config: &Config) -> Option<Check> {
    let vault = &config.vault;
    if !vault.enabled {
        return None;
    }
    let namespace = vault
        .namespace
        .as_deref()
        .map_or(String::new(), |n| format!(" in namespace {n}"));
    let tls = match (&vault.ca_spiffe_bundle, &vault.ca_file) {
        (Some(td), _) => format!("TLS trusted by the SPIFFE bundle of {td}"),
        (None, Some(file)) => format!("TLS trusted by the system roots and {}", file.display()),
        (None, None) => "TLS trusted by the system roots".to_owned(),
    };
    Some(Check::ok(
        "config.vault",
        format!(
            "JWT login as role {} at {}{namespace} (auth mount {}), audience {}; {tls}",
            vault.role,
            crate::redact::display_url(&vault.addr),
            vault.auth_mount,
            vault.audience
        ),
    ))
}

/// `feature.aws` and `feature.vault`: an enabled section needs its cargo feature.
pub fn features(config: &Config) -> Vec<Check> {
    let compiled = crate::sides::compiled();
    vec![
        feature("aws", config.aws.enabled, compiled.contains(&"aws")),
        feature("vault", config.vault.enabled, compiled.contains(&"vault")),
    ]
}

/// One feature check: `enabled` in the config, `compiled` into this binary.
pub fn feature(name: &str, enabled: bool, compiled: bool) -> Check {
    let check = format!("feature.{name}");
    match (enabled, compiled) {
        (false, _) => Check::skipped(&check, format!("[{name}] is not enabled")),
        (true, true) => Check::ok(&check, format!("[{name}] enabled and compiled in")),
        (true, false) => Check::fail(
            &check,
            format!(
                "[{name}] is enabled but this steeple was built without the `{name}` cargo feature"
            ),
            format!(
                "install a steeple built with `--features {name}` (a default build has it), or set [{name}] enabled = false"
            ),
        ),
    }
}

/// `socket.workload_api`: the path exists and is a socket.
pub fn workload_socket(path: &Path) -> Check {
    const NAME: &str = "socket.workload_api";
    let fix = "start the SPIRE agent, or point workload_api.socket (or SPIFFE_ENDPOINT_SOCKET) at its socket";
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            Check::ok(NAME, format!("{} is a socket", path.display()))
        }
        Ok(_) => Check::fail(
            NAME,
            format!("{} exists but is not a socket", path.display()),
            fix,
        ),
        Err(e) => Check::fail(NAME, format!("{}: {e}", path.display()), fix),
    }
}

/// `socket.sds`: the socket's directory exists and is safe as the agent checks it at
/// bind time (a real directory owned by us or root, not writable by others); the socket
/// path is not a symlink, nor a file or another user's socket the agent would refuse.
pub fn sds_socket(path: &Path) -> Check {
    const NAME: &str = "socket.sds";
    let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        let detail = format!("{} has no directory", path.display());
        return Check::fail(NAME, detail, "set sds.socket to an absolute path");
    };
    let own_dir = format!("install -d -m 0750 {} as the agent's user", dir.display());
    if let Err(e) = check_socket_dir(dir) {
        let fix = match e {
            BindError::Io { .. } => format!("create the directory: {own_dir}"),
            _ => format!("give the socket a directory of its own: {own_dir}"),
        };
        return Check::fail(NAME, e.to_string(), fix);
    }
    let path_buf = path.to_owned();
    let refused = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let detail = format!("{} can be created in a safe directory", path.display());
            return Check::ok(NAME, detail);
        }
        Err(source) => BindError::Io {
            path: path_buf,
            source,
        },
        Ok(meta) if meta.file_type().is_symlink() => BindError::Symlink { path: path_buf },
        Ok(meta) if !meta.file_type().is_socket() => BindError::NotASocket { path: path_buf },
        Ok(meta) if meta.uid() != rustix::process::geteuid().as_raw() => BindError::ForeignSocket {
            path: path_buf,
            uid: meta.uid(),
        },
        Ok(_) => {
            let detail = format!(
                "{} is our socket (an agent may be running) in a safe directory",
                path.display()
            );
            return Check::ok(NAME, detail);
        }
    };
    let fix = format!("remove {}, or choose another sds.socket", path.display());
    Check::fail(NAME, refused.to_string(), fix)
}
