//! `sharedcare dev`: identity, consent, records and audit in one process on
//! consecutive loopback ports, each with a SQLite file under the data dir.
//!
//! Each service is configured through its own `load` (see [`config`]) and
//! built by its own `open`, exactly what its `main.rs` runs; identity opens
//! first. One Ctrl-C or SIGTERM stops all four; if any fails, the rest stop
//! and the command exits non-zero naming it.

mod banner;
pub mod config;
mod supervisor;

use std::{io::ErrorKind, path::PathBuf};

use anyhow::{Context, anyhow};
use clap::{Args, ValueEnum};
use tokio::net::TcpListener;

use crate::output::out;
use crate::{bootstrap, ports::Ports};
use config::DevSettings;
use supervisor::Supervisor;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for the SQLite files, the signing key and bootstrap.toml.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Log filter, e.g. `info` or `info,sharedcare_records=debug`
    /// [default: SHAREDCARE_TELEMETRY__LOG_LEVEL, or info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format [default: SHAREDCARE_TELEMETRY__LOG_FORMAT, or pretty].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Keep every service's data in this PostgreSQL database instead of
    /// SQLite files (the four share it, each with its own tables), e.g.
    /// `postgres://postgres@127.0.0.1:5432/sharedcare`. The same as
    /// SHAREDCARE_DATABASE__BACKEND=postgres with
    /// SHAREDCARE_DATABASE__URL__VALUE set.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// How long records and identity keep consent's decisions, in
    /// milliseconds (`consent_cache.max_age_ms`); 0 asks consent every time
    /// (to measure what the cache saves) [default: the services' own].
    #[arg(long, value_name = "MS")]
    pub decision_cache_ms: Option<u64>,
    /// Serve each service's Prometheus metrics (`GET /metrics`) on loopback:
    /// identity on BASE_PORT, consent, records and audit on the three after
    /// it [default BASE_PORT: 9464].
    #[arg(
        long,
        value_name = "BASE_PORT",
        num_args = 0..=1,
        default_missing_value = "9464",
        value_parser = clap::value_parser!(u16).range(1..=65532)
    )]
    pub metrics: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Pretty,
    Json,
}

impl LogFormatArg {
    fn as_config(self) -> &'static str {
        match self {
            LogFormatArg::Pretty => "pretty",
            LogFormatArg::Json => "json",
        }
    }
}

/// The `SHAREDCARE_*` settings of dev's own environment that configure the
/// services (not the CLI's client settings, nor a config file meant for
/// one service), with `--database-url` laid over them.
fn shell_settings(
    vars: impl Iterator<Item = (String, String)>,
    database_url: Option<&str>,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut shell: std::collections::HashMap<String, String> = vars
        .filter(|(key, _)| key.starts_with("SHAREDCARE_") && key.contains("__"))
        .collect();
    if let Some(url) = database_url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!("--database-url must be a postgres:// URL");
        }
        shell.insert("SHAREDCARE_DATABASE__BACKEND".into(), "postgres".into());
        shell.insert("SHAREDCARE_DATABASE__URL__VALUE".into(), url.into());
    }
    Ok(shell)
}

/// Runs until Ctrl-C or SIGTERM; an error when any service failed.
pub async fn run(args: DevArgs, base_port: u16) -> anyhow::Result<()> {
    let ports = Ports::from_base(base_port);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data dir {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)
        .with_context(|| format!("resolving the data dir {}", args.data_dir.display()))?;
    let credentials = bootstrap::ensure(&data_dir)?;
    let settings = DevSettings {
        ports,
        data_dir: data_dir.clone(),
        bootstrap_file: credentials.path.clone(),
        records_secret: credentials.records_secret.clone(),
        consent_secret: credentials.consent_secret.clone(),
        log_level: args.log_level,
        log_format: args.log_format.map(LogFormatArg::as_config),
        shell: shell_settings(std::env::vars(), args.database_url.as_deref())?,
        decision_cache_ms: args.decision_cache_ms,
    };
    let configs = settings.load()?;
    let _telemetry = sharedcare_kit::telemetry::init("dev", &configs.identity.telemetry)
        .map_err(|e| anyhow!("starting telemetry: {e}"))?;

    // Every port first, so a clash is reported before anything starts.
    let identity_listener = bind("identity", ports.identity).await?;
    let consent_listener = bind("consent", ports.consent).await?;
    let records_listener = bind("records", ports.records).await?;
    let audit_listener = bind("audit", ports.audit).await?;
    let metrics_ports = args.metrics.map(Ports::from_base);
    let mut metrics = match metrics_ports {
        Some(m) => vec![
            Some(bind("identity's metrics", m.identity).await?),
            Some(bind("consent's metrics", m.consent).await?),
            Some(bind("records' metrics", m.records).await?),
            Some(bind("audit's metrics", m.audit).await?),
        ],
        None => vec![None, None, None, None],
    }
    .into_iter();
    // Each service's metrics listener, in the order they open.
    let mut with_metrics =
        move |spec: sharedcare_kit::server::ServiceSpec| match metrics.next().flatten() {
            Some(listener) => spec.with_metrics_listener(listener),
            None => spec,
        };

    let mut supervisor = Supervisor::new();
    let opened = async {
        let spec = sharedcare_identity::open(&configs.identity)
            .await
            .map_err(|e| (sharedcare_identity::SERVICE_NAME, e))?;
        supervisor.serve(
            sharedcare_identity::SERVICE_NAME,
            with_metrics(spec),
            configs.identity.server.clone(),
            identity_listener,
        );
        let spec = sharedcare_consent::open(&configs.consent)
            .await
            .map_err(|e| (sharedcare_consent::SERVICE_NAME, e))?;
        supervisor.serve(
            sharedcare_consent::SERVICE_NAME,
            with_metrics(spec),
            configs.consent.server.clone(),
            consent_listener,
        );
        let spec = sharedcare_records::open(&configs.records)
            .await
            .map_err(|e| (sharedcare_records::SERVICE_NAME, e))?;
        supervisor.serve(
            sharedcare_records::SERVICE_NAME,
            with_metrics(spec),
            configs.records.server.clone(),
            records_listener,
        );
        let spec = sharedcare_audit::open(&configs.audit)
            .await
            .map_err(|e| (sharedcare_audit::SERVICE_NAME, e))?;
        supervisor.serve(
            sharedcare_audit::SERVICE_NAME,
            with_metrics(spec),
            configs.audit.server.clone(),
            audit_listener,
        );
        Ok::<(), (&str, sharedcare_kit::Error)>(())
    }
    .await;

    let mut failed = Vec::new();
    match opened {
        Ok(()) => tokio::select! {
            ready = all_serving(ports) => match ready {
                Ok(()) => out!("{}", banner::render(ports, metrics_ports, &data_dir, &credentials)),
                Err(name) => {
                    eprintln!("sharedcare dev: {name} never reported SERVING");
                    failed.push(name);
                    supervisor.stop();
                }
            },
            () = supervisor.stopped() => {}
        },
        Err((name, e)) => {
            eprintln!("sharedcare dev: {name} failed to start: {e}");
            failed.push(name);
            supervisor.stop();
        }
    }
    failed.extend(supervisor.wait().await);
    if failed.is_empty() {
        eprintln!("sharedcare dev: stopped");
        Ok(())
    } else {
        Err(anyhow!("sharedcare dev: {} failed", failed.join(", ")))
    }
}

/// Polls each service's `grpc.health.v1` until it says SERVING; the name
/// of the first that does not.
async fn all_serving(ports: Ports) -> Result<(), &'static str> {
    for (name, port) in [
        (sharedcare_identity::SERVICE_NAME, ports.identity),
        (sharedcare_consent::SERVICE_NAME, ports.consent),
        (sharedcare_records::SERVICE_NAME, ports.records),
        (sharedcare_audit::SERVICE_NAME, ports.audit),
    ] {
        let channel = crate::connect::channel(&Ports::url(port)).map_err(|_| name)?;
        sharedcare_kit::client::wait_until_serving(channel)
            .await
            .map_err(|_| name)?;
    }
    Ok(())
}

/// Binds `127.0.0.1:<port>`, explaining a port already in use.
async fn bind(service: &str, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::AddrInUse => anyhow!(
                "port {port} ({service}) is already in use: is another `sharedcare dev` \
                 running? Stop it, or choose other ports with --base-port (or --metrics \
                 <BASE_PORT>)"
            ),
            _ => anyhow!("binding 127.0.0.1:{port} for {service}: {e}"),
        })
}
