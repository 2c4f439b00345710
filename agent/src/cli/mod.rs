//! The `steeple` command line: `run` (production), `dev` (embedded trust domain),
//! `check-config`, `doctor`, `envelope seal`, and `aws credential-process`.

mod aws;
mod doctor;
mod seal;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat};
use crate::dev::{DevConfig, DevWorkloadApi};
use crate::providers::RunMode;
use crate::supervisor;
use crate::systemd_notify::SystemdNotifier;

/// How long open streams get to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The Envoy bootstrap `steeple dev` prints (also in `deploy/envoy/`).
const DEV_BOOTSTRAP: &str = include_str!("../../../deploy/envoy/dev-bootstrap.yaml");

/// Steeple: SPIFFE workload identity, served to local workloads over Envoy SDS.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run against a SPIFFE Workload API (SPIRE agent) — the production path.
    Run {
        /// TOML configuration file; `STEEPLE_<SECTION>_<KEY>` variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run with an embedded dev trust domain: no SPIRE needed. Prints the SDS socket and
    /// an Envoy bootstrap that uses it.
    Dev {
        /// TOML configuration file (its `[dev]` section shapes the trust domain).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Directory for the dev sockets; default a fresh temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check a configuration file and print every problem, without starting.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also list every key, the `STEEPLE_*` variable that overrides it, and whether
        /// its value comes from the file, a variable or the default.
        #[arg(long)]
        explain: bool,
    },
    /// Check the configuration, sockets, Workload API and upstreams before deploying.
    Doctor(doctor::DoctorArgs),
    /// Work with secret envelopes.
    #[command(subcommand)]
    Envelope(EnvelopeCommand),
    /// Hand the agent's AWS credentials to AWS SDKs and the AWS CLI.
    #[command(subcommand)]
    Aws(aws::AwsCommand),
}

#[derive(Debug, Subcommand)]
enum EnvelopeCommand {
    /// Seal a plaintext (stdin or --in) into an envelope row printed as JSON.
    Seal(seal::SealArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = match &cli.command {
        Command::Run { config }
        | Command::Dev { config, .. }
        | Command::CheckConfig { config, .. } => config.clone(),
        Command::Envelope(EnvelopeCommand::Seal(args)) => {
            return exit_code("steeple envelope seal", seal::run(args));
        }
        Command::Aws(command) => return aws::run(command),
        Command::Doctor(args) => return doctor::run(args),
    };
    let config = match Config::load(config_path.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("steeple: {errors}");
            return ExitCode::from(2);
        }
    };
    if let Command::CheckConfig { explain, .. } = cli.command {
        println!("configuration OK");
        if explain {
            return explain_config(config_path.as_deref());
        }
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_tracing(&config) {
        eprintln!("steeple: audit.sink: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = crate::hardening::harden_process(config.agent.lock_memory) {
        tracing::error!(error = %e, "Steeple failed");
        eprintln!("steeple: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"));
    let result = runtime.and_then(|runtime| {
        runtime.block_on(async {
            match cli.command {
                Command::Dev { dir, .. } => run_dev(config, config_path, dir).await,
                _ => run(config, config_path).await,
            }
        })
    });
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "Steeple failed");
    }
    exit_code("steeple", result)
}

/// Prints every key of the (valid) configuration at `path`: its variable and origin.
fn explain_config(path: Option<&Path>) -> ExitCode {
    match Config::explain(path, std::env::vars()) {
        Ok(keys) => {
            print!("{}", crate::config::render_explained(&keys));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("steeple: {errors}");
            ExitCode::from(2)
        }
    }
}

/// Success, or the error on stderr after `what` and failure.
fn exit_code(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The operational log on stderr (`[log]`, audit events excluded) and the audit trail on
/// its own sink (`[audit] sink`).
///
/// One global filter sits in front of both: the `[log] level` directives plus, when an audit
/// sink is configured, the audit target at every level. Being global (not per-layer), it lets `tracing` mark every
/// callsite it rejects as never enabled, once; h2 and hyper have trace events in their
/// per-frame paths, and with per-layer filters alone each of those went through the
/// registry's filter bookkeeping on every hit: 35 µs of agent CPU per FetchSecrets at 100
/// concurrent requests instead of 13 (`cargo bench -p steeple-e2e --bench envelopes`).
fn init_tracing(config: &Config) -> std::io::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let audited = config.audit != crate::audit::AuditSink::Off;
    let (filter, filter_handle) =
        tracing_subscriber::reload::Layer::new(global_filter(&config.log.level, audited));
    let _ = LOG_LEVEL.set(Box::new(move |level: &str| {
        if let Err(e) = filter_handle.reload(global_filter(level, audited)) {
            tracing::error!(error = %e, "log.level not changed");
        }
    }));
    let not_audit =
        tracing_subscriber::filter::filter_fn(|meta| !crate::audit::is_audit(meta.target()));
    let operational = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let operational = match config.log.format {
        LogFormat::Json => operational.json().boxed(),
        LogFormat::Text => operational
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
    }
    .with_filter(not_audit);
    let audit = crate::audit::layer(&config.audit)?;
    tracing_subscriber::registry()
        .with(filter)
        .with(operational)
        .with(audit)
        .init();
    Ok(())
}

/// `[log] level` (the config reader has checked it; `info` otherwise), with every audit
/// event let through when `audited` (the audit sink is not the operational log's to
/// silence). With `[audit] sink = "off"` no directive names the audit target, so its
/// callsites are disabled like any other below the level and cost nothing.
fn global_filter(level: &str, audited: bool) -> tracing_subscriber::EnvFilter {
    let audit = if audited {
        format!(",{}=trace", crate::audit::TARGET)
    } else {
        String::new()
    };
    tracing_subscriber::EnvFilter::try_new(format!("{level}{audit}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info{audit}")))
}

/// Sets the operational log's level after a reload.
type SetLogLevel = Box<dyn Fn(&str) + Send + Sync>;
static LOG_LEVEL: std::sync::OnceLock<SetLogLevel> = std::sync::OnceLock::new();

async fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut agent = supervisor::start(&config, RunMode::Production, &shutdown)?;
    let load = || Config::load(path.as_deref(), std::env::vars());
    serve_until_stopped(&mut agent, load, &shutdown).await?;
    match agent.drain(SHUTDOWN_GRACE).await {
        Some(reason) => Err(anyhow::anyhow!(reason)),
        None => Ok(()),
    }
}

async fn run_dev(
    mut config: Config,
    path: Option<PathBuf>,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let temp = match dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("steeple-dev-").tempdir()?),
    };
    let dir: &Path = match (&temp, &dir) {
        (Some(t), _) => t.path(),
        (None, Some(d)) => d,
        (None, None) => anyhow::bail!("no directory for the dev sockets"),
    };
    dev_sockets(&mut config, dir);
    let shutdown = CancellationToken::new();
    let dev = DevConfig {
        trust_domain: config.dev.trust_domain.clone(),
        workload_ids: vec![config.dev.workload_id.clone()],
        x509_svid_ttl: config.dev.x509_svid_ttl,
        jwt_svid_ttl: config.dev.jwt_svid_ttl,
    };
    let _workload_api =
        DevWorkloadApi::start(dev, &config.workload_api.socket, shutdown.clone()).await?;
    tracing::warn!(
        "dev mode: an in-process trust domain with a throwaway CA; never use it in production"
    );
    let mut agent = supervisor::start(&config, RunMode::Dev, &shutdown)?;
    println!("# Steeple dev is running.");
    println!("#   SDS socket:          {}", config.sds.socket.display());
    println!(
        "#   Workload API socket: {}",
        config.workload_api.socket.display()
    );
    println!("#   SPIFFE ID:           {}", config.dev.workload_id);
    println!("# Envoy bootstrap (save as steeple-envoy.yaml, run `envoy -c steeple-envoy.yaml`,");
    println!("# then `curl http://127.0.0.1:10080/`):");
    print!(
        "{}",
        dev_bootstrap(&config.sds.socket, &config.dev.workload_id)
    );
    let load = || {
        Config::load(path.as_deref(), std::env::vars()).map(|mut config| {
            dev_sockets(&mut config, dir);
            config
        })
    };
    serve_until_stopped(&mut agent, load, &shutdown).await?;
    match agent.drain(SHUTDOWN_GRACE).await {
        Some(reason) => Err(anyhow::anyhow!(reason)),
        None => Ok(()),
    }
}

/// The dev Envoy bootstrap with the SDS socket and SPIFFE ID filled in.
pub fn dev_bootstrap(sds_socket: &Path, spiffe_id: &str) -> String {
    DEV_BOOTSTRAP
        .replace("__SDS_SOCKET__", &sds_socket.display().to_string())
        .replace("__SPIFFE_ID__", spiffe_id)
}

/// Where `steeple dev` puts its sockets: in `dir`, whatever the configuration says.
fn dev_sockets(config: &mut Config, dir: &Path) {
    config.workload_api.socket = dir.join("workload.sock");
    config.sds.socket = dir.join("sds.sock");
}

/// Runs until SIGTERM, SIGINT or a component's fatal error; on SIGHUP reads the
/// configuration again (`load`) and applies it. A new configuration that does not load,
/// or changes what is read only at start, is refused and the running one stays. Tells
/// systemd (when `NOTIFY_SOCKET` is set) when the agent is ready, reloading or stopping.
async fn serve_until_stopped(
    agent: &mut supervisor::RunningAgent,
    load: impl Fn() -> Result<Config, crate::config::ConfigErrors>,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let notifier = SystemdNotifier::from_env();
    tokio::spawn(
        notifier
            .clone()
            .follow(agent.readiness().clone(), shutdown.clone()),
    );
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: shutting down");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: shutting down");
                break;
            }
            _ = hup.recv() => {
                notifier.reloading();
                reload(agent, &load, shutdown).await;
                notifier.reloaded();
            }
            () = shutdown.cancelled() => break,
        }
    }
    notifier.stopping();
    shutdown.cancel();
    Ok(())
}

/// One SIGHUP: load, check and apply the configuration, logging the outcome.
async fn reload(
    agent: &mut supervisor::RunningAgent,
    load: &impl Fn() -> Result<Config, crate::config::ConfigErrors>,
    shutdown: &CancellationToken,
) {
    tracing::info!("SIGHUP: reloading the configuration");
    let new = match load() {
        Ok(new) => new,
        Err(errors) => {
            crate::metrics::metrics().config_reload(false);
            tracing::error!(errors = %errors, "new configuration refused; the running one stays");
            return;
        }
    };
    let level = new.log.level.clone();
    match agent.reload(new, shutdown).await {
        Ok(change) => {
            if change.log_level
                && let Some(set_level) = LOG_LEVEL.get()
            {
                set_level(&level);
            }
            crate::metrics::metrics().config_reload(true);
            tracing::info!(changed = ?change.applied(), "configuration reloaded");
        }
        Err(e) => {
            crate::metrics::metrics().config_reload(false);
            tracing::error!(error = %e, "new configuration refused; the running one stays");
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::global_filter;

    #[test]
    fn the_audit_target_passes_the_global_filter_only_when_a_sink_is_configured() {
        assert_eq!(
            global_filter("warn", true).max_level_hint(),
            Some(LevelFilter::TRACE)
        );
        assert_eq!(
            global_filter("warn", false).max_level_hint(),
            Some(LevelFilter::WARN)
        );
    }
}
