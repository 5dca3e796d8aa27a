//! `sharedcare bench`: closed-loop load on one RPC of a running platform,
//! beside a bare tonic echo server the command starts itself, so that every
//! figure is also read as a ratio to echo (same tonic, same machine, same
//! run).
//!
//! Order of a run: the setup a scenario needs (through the real APIs, see
//! [`scenario`]); the echo server, loaded plaintext and, with a client
//! certificate, over mutual TLS; then each scenario against its service.
//! Each load is bounded in time and in count and stops by itself (or at
//! Ctrl-C). Only loopback targets are loaded unless `--allow-remote` says
//! otherwise.

mod acks;
mod echo;
mod flood;
mod import;
mod load;
mod people;
mod report;
mod rpc;
mod scenario;
mod soak;

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use sharedcare_kit::tls::{ClientAuth, Tls, TlsConfig};

use crate::{connect::Services, output::out};
use acks::Acks;
use load::{Interrupt, Plan};
use report::{Report, Run, Settings};
use rpc::Rpc;
use scenario::Scenario;

/// Longest a run may be asked to last.
const MAX_SECONDS: f64 = 3600.0;
/// How long a run lasts when only `--requests` bounds it.
const DEFAULT_SECONDS_WITH_REQUESTS: f64 = 600.0;
const DEFAULT_SECONDS: f64 = 10.0;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to load; repeat for several (one echo run serves them all).
    #[arg(long = "scenario", value_enum, default_values_t = [Scenario::GetRecord])]
    pub scenarios: Vec<Scenario>,
    /// HTTP/2 connections to each target.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
    /// Calls in flight at any time, over all connections.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub in_flight: u32,
    /// Seconds measured per run [default: 10; 600 when only --requests is given].
    #[arg(long, value_parser = seconds)]
    pub duration: Option<f64>,
    /// Most calls measured per run (whichever of this and --duration comes first).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Seconds of load before measuring, per run (connections warm, caches full).
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    pub warmup: f64,
    /// Seconds one call may take before it counts as DEADLINE_EXCEEDED.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub call_timeout: f64,
    /// Open loop: start this many calls per second in all, shared out over
    /// the --in-flight workers, each call's latency counted from when it was
    /// due. For latency at a chosen load, e.g. 70 % of the closed loop's
    /// calls/s (the default is the closed loop: as fast as answers come).
    #[arg(long, value_parser = rate)]
    pub rate: Option<f64>,
    /// After each scenario's closed loop, flood its service at this many
    /// times the OK calls/s it measured (open loop, a task per call, for
    /// --duration) while probing its health: reports how much was shed
    /// (RESOURCE_EXHAUSTED), the admitted calls' latency and what health said.
    #[arg(long, value_parser = factor)]
    pub overload: Option<f64>,
    /// Soak: run the scenarios all at once, each an open loop at --rate,
    /// for this many minutes, printing a row every --soak-interval seconds
    /// (latency per scenario; memory, open files and threads of each
    /// --watch-pid). No echo run.
    #[arg(long, requires = "rate", value_parser = minutes)]
    pub soak: Option<f64>,
    /// Seconds per soak row.
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    pub soak_interval: f64,
    /// A process to watch during a soak (e.g. `sharedcare dev`'s pid); repeat.
    #[arg(long = "watch-pid")]
    pub watch_pids: Vec<u32>,
    /// Records added to the bench patient before the search scenario runs.
    #[arg(long, default_value_t = 100_000)]
    pub seed_records: u64,
    /// People registered (once per data dir: a later run finds them) before
    /// the trace-patient scenario runs.
    #[arg(long, default_value_t = 100_000)]
    pub seed_patients: u64,
    /// With this FHIR bulk export directory: also time `import` of it (as a
    /// fresh importer, so everything is stored anew) against a raw SQLite
    /// insert loop of the same rows, and report the ratio.
    #[arg(long)]
    pub import_dir: Option<PathBuf>,
    /// The data dir `sharedcare dev` was started with (bootstrap.toml holds
    /// the admin and records secrets the setup uses).
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// CA of the platform's certificates (PEM): with --tls-cert and
    /// --tls-key, echo is also loaded over mutual TLS, and https:// targets
    /// are reached with this certificate.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Client (and echo server) certificate, PEM, signed by --tls-ca.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// Its private key, PEM.
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// Load non-loopback targets too (refused otherwise).
    #[arg(long)]
    pub allow_remote: bool,
    /// Print the report as JSON (standard output) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Skip the echo runs (no ratios to echo): for load whose figures are
    /// not the point, e.g. while a test crashes the platform.
    #[arg(long)]
    pub no_echo: bool,
    /// Write one JSON line per acknowledged CreateRecord or GetRecord to
    /// this file (patient, record id, version, SHA-256 of the resource
    /// JSON as answered), to check afterwards that nothing acknowledged
    /// was lost.
    #[arg(long, value_name = "FILE")]
    pub acks: Option<PathBuf>,
}

/// A number of seconds, 0 to an hour.
fn seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !value.is_finite() || !(0.0..=MAX_SECONDS).contains(&value) {
        return Err(format!("must be between 0 and {MAX_SECONDS} seconds"));
    }
    Ok(value)
}

/// Calls per second: more than 0, at most a million.
fn rate(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of calls per second"))?;
    if !value.is_finite() || value <= 0.0 || value > 1e6 {
        return Err("must be more than 0 and at most 1000000 calls per second".into());
    }
    Ok(value)
}

/// Minutes of soak: more than 0, at most a day.
fn minutes(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of minutes"))?;
    if !value.is_finite() || value <= 0.0 || value > 1440.0 {
        return Err("must be more than 0 and at most 1440 minutes".into());
    }
    Ok(value)
}

/// How many times capacity a flood offers: more than 1, at most 100.
fn factor(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !value.is_finite() || value <= 1.0 || value > 100.0 {
        return Err("must be more than 1 and at most 100 (times the measured capacity)".into());
    }
    Ok(value)
}

impl BenchArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        let duration = self.duration.unwrap_or(if self.requests.is_some() {
            DEFAULT_SECONDS_WITH_REQUESTS
        } else {
            DEFAULT_SECONDS
        });
        if duration <= 0.0 {
            bail!("--duration must be more than 0 seconds");
        }
        if self.call_timeout <= 0.0 {
            bail!("--call-timeout must be more than 0 seconds");
        }
        if u32::from(self.connections) > self.in_flight {
            bail!(
                "--connections {} is more than --in-flight {}: a connection would carry no calls",
                self.connections,
                self.in_flight
            );
        }
        Ok(Plan {
            connections: usize::from(self.connections),
            in_flight: usize::try_from(self.in_flight)?,
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(duration),
            requests: self.requests,
            call_timeout: Duration::from_secs_f64(self.call_timeout),
            rate: self.rate,
            progress: true,
        })
    }

    fn tls(&self) -> anyhow::Result<Option<Tls>> {
        let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key)
        else {
            return Ok(None);
        };
        Tls::from_config(&TlsConfig {
            enabled: true,
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            ca_file: Some(ca.clone()),
            client_auth: ClientAuth::Required,
            reload_interval_ms: 10_000,
        })
        .map_err(|e| anyhow!("{}", e.message))
    }
}

pub async fn run(services: &Services, args: BenchArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let tls = args.tls()?;
    let acks = match &args.acks {
        Some(path) => Some(Arc::new(Acks::create(path)?)),
        None => None,
    };
    let interrupt = Interrupt::listen();
    let services = services.with_tls(tls.clone());
    let mut scenarios: Vec<Scenario> = Vec::new();
    for scenario in &args.scenarios {
        // A scenario read against another brings it along, run first.
        for scenario in scenario.yardstick().into_iter().chain([*scenario]) {
            if scenario != Scenario::Echo && !scenarios.contains(&scenario) {
                scenarios.push(scenario);
            }
        }
    }
    if !scenarios.is_empty() {
        // The setup calls identity, consent and records; a scenario may load audit.
        for url in [
            &services.identity_url,
            &services.consent_url,
            &services.records_url,
            &services.audit_url,
        ] {
            check_target(url, args.allow_remote)?;
        }
    }
    let tracing = scenarios.contains(&Scenario::TracePatient);
    let mut fixture = match scenarios.is_empty() {
        true => None,
        false => Some(
            scenario::prepare(&services, &args.data_dir, tracing)
                .await
                .context("setting up the scenario through the platform's APIs")?,
        ),
    };
    if let Some(fixture) = &mut fixture
        && tracing
    {
        fixture.traces = scenario::seed_patients(fixture, args.seed_patients).await?;
    }

    if let Some(fixture) = &fixture
        && scenarios.contains(&Scenario::Search)
        && args.seed_records > 0
    {
        scenario::seed(&services, fixture, args.seed_records).await?;
    }
    if let Some(dir) = &args.import_dir {
        import::compare(&services, &args.data_dir, dir).await?;
    }

    let mut runs = Vec::new();
    let load = Load {
        services: &services,
        plan: &plan,
        acks: acks.clone(),
        interrupt: &interrupt,
    };
    if let (Some(minutes), Some(fixture)) = (args.soak, &mut fixture) {
        if args.soak_interval <= 0.0 {
            bail!("--soak-interval must be more than 0 seconds");
        }
        let soaked = soak::run(
            fixture,
            &scenarios,
            &args.data_dir,
            &load,
            &soak::SoakPlan {
                minutes,
                rows_to_stderr: args.json,
                interval: Duration::from_secs_f64(args.soak_interval),
                pids: args.watch_pids.clone(),
            },
        )
        .await?;
        if args.json {
            out!("{}", serde_json::to_string_pretty(&soaked)?);
        }
        return Ok(());
    }
    let echo = Arc::new(Rpc::Echo);
    let echoes = std::iter::once(None).chain(tls.clone().map(Some));
    for echo_tls in echoes.filter(|_| !args.no_echo) {
        if interrupt.requested() {
            break;
        }
        let server = echo::EchoServer::start(echo_tls)?;
        runs.push(load.measure("echo", echo.clone(), &server.url).await?);
    }
    let mut floods = Vec::new();
    if let Some(fixture) = &fixture {
        for scenario in scenarios {
            if interrupt.requested() {
                break;
            }
            let url = scenario
                .target(&services)
                .ok_or_else(|| anyhow!("{} has no target", scenario.name()))?
                .to_owned();
            let rpc = Arc::new(scenario.rpc(fixture, &args.data_dir).await?);
            let mut run = load.measure(scenario.name(), rpc.clone(), &url).await?;
            run.yardstick = scenario.yardstick().map(|s| s.name().to_owned());
            if let Some(factor) = args.overload {
                let capacity =
                    run.statuses.get("OK").copied().unwrap_or(0) as f64 / run.elapsed_s.max(1e-9);
                let flood_plan = flood::FloodPlan {
                    factor,
                    duration: plan.duration,
                    call_timeout: plan.call_timeout,
                };
                floods.push(
                    load.overload(scenario.name(), rpc, &url, capacity, &flood_plan)
                        .await?,
                );
            }
            runs.push(run);
        }
    }
    if let Some(acks) = &acks {
        acks.finish()?;
    }

    let mut report = Report::new(
        Settings {
            connections: plan.connections,
            in_flight: plan.in_flight,
            warmup_s: plan.warmup.as_secs_f64(),
            duration_s: plan.duration.as_secs_f64(),
            requests: plan.requests,
            call_timeout_s: plan.call_timeout.as_secs_f64(),
            rate_per_s: plan.rate,
        },
        runs,
    );
    report.floods = floods;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in report.table() {
            out!("{line}");
        }
    }
    Ok(())
}

/// What every run of one bench shares.
pub struct Load<'a> {
    services: &'a Services,
    plan: &'a Plan,
    acks: Option<Arc<Acks>>,
    interrupt: &'a Interrupt,
}

impl Load<'_> {
    /// One run: `plan.connections` fresh connections to `url`, one call on
    /// each to check the scenario works, then the closed loop.
    async fn measure(&self, name: &str, rpc: Arc<Rpc>, url: &str) -> anyhow::Result<Run> {
        let plan = self.plan;
        let channels = (0..plan.connections)
            .map(|_| self.services.channel(url))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let transport = if url.starts_with("https://") {
            "tls"
        } else {
            "plaintext"
        };
        eprintln!("bench: {name} ({transport}): {} on {url}", rpc.method());
        load::prime(&rpc, &channels, plan.call_timeout, self.acks.as_deref())
            .await
            .with_context(|| format!("{name} on {url}"))?;
        let label = format!("{name} {transport}");
        let measurement = load::run(
            &label,
            rpc.clone(),
            &channels,
            plan,
            self.acks.clone(),
            self.interrupt,
        )
        .await?;
        Ok(Run::new(name, rpc.method(), url, transport, &measurement))
    }

    /// A flood of `url` beyond `capacity`, on fresh connections (and one
    /// more for the health probe).
    async fn overload(
        &self,
        name: &str,
        rpc: Arc<Rpc>,
        url: &str,
        capacity: f64,
        flood_plan: &flood::FloodPlan,
    ) -> anyhow::Result<flood::Flood> {
        let channels = (0..self.plan.connections)
            .map(|_| self.services.channel(url))
            .collect::<anyhow::Result<Vec<_>>>()?;
        eprintln!(
            "bench: {name}: flooding {url} at {:.0} calls/s ({}× {capacity:.0})",
            capacity * flood_plan.factor,
            flood_plan.factor
        );
        load::prime(&rpc, &channels, self.plan.call_timeout, None)
            .await
            .with_context(|| format!("{name} on {url}"))?;
        let health = self.services.channel(url)?;
        let mut flooded = flood::run(rpc, &channels, health, capacity, flood_plan).await?;
        flooded.name = name.to_owned();
        flooded.target = url.to_owned();
        Ok(flooded)
    }
}

/// Refuses a URL whose host is not loopback, unless remote load is allowed.
fn check_target(url: &str, allow_remote: bool) -> anyhow::Result<()> {
    let uri: tonic::codegen::http::Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a valid URL"))?;
    let host = uri.host().ok_or_else(|| anyhow!("`{url}` names no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback || allow_remote {
        Ok(())
    } else {
        Err(anyhow!(
            "`{url}` is not a loopback address: bench loads only this machine unless \
             --allow-remote is given (and load on others' systems needs their consent)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_unless_allowed() {
        for url in [
            "http://127.0.0.1:50053",
            "http://127.8.0.1:1",
            "https://localhost:443",
            "http://[::1]:50051",
        ] {
            check_target(url, false).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        for url in [
            "http://10.0.0.5:50053",
            "https://records.example:443",
            "http://[::2]:1",
        ] {
            let err = check_target(url, false).expect_err(url);
            assert!(err.to_string().contains("--allow-remote"), "{err}");
            check_target(url, true).expect("allowed");
        }
    }

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(seconds("0.5"), Ok(0.5));
        assert!(seconds("-1").is_err());
        assert!(seconds("nan").is_err());
        assert!(seconds("7200").is_err());
    }
}
