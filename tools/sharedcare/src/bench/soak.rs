//! `--soak MINUTES`: the scenarios all at once, each an open loop at
//! `--rate` calls/s, for MINUTES, with a row every `--soak-interval`
//! seconds: each scenario's calls/s, p50, p99 and failures over the
//! interval, and for each `--watch-pid` process its resident memory (VmRSS),
//! peak (VmHWM), open files and threads, read from /proc. Tokens are renewed
//! every ten minutes (they live fifteen). At the end, per process: resident
//! memory at the first row, its peak, at the last row, and its growth over
//! the second half (least squares, MiB per hour) — about nothing for a
//! service whose memory is bounded.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use serde::Serialize;

use super::{
    Load,
    load::{self, Plan},
    scenario::{Fixture, Scenario},
};
use crate::output::out;

const RENEW_TOKENS_EVERY: Duration = Duration::from_secs(600);

pub struct SoakPlan {
    pub minutes: f64,
    /// Rows on standard error (standard output is for the JSON).
    pub rows_to_stderr: bool,
    pub interval: Duration,
    pub pids: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct Soak {
    pub rate_per_scenario: Option<f64>,
    pub rows: Vec<Row>,
    pub processes: Vec<ProcessSummary>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    /// Minutes since the soak began, at the row's end.
    pub minute: f64,
    pub scenarios: Vec<Window>,
    pub processes: Vec<ProcessSample>,
}

/// One scenario over one interval.
#[derive(Debug, Serialize)]
pub struct Window {
    pub name: &'static str,
    pub calls_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Calls that did not answer OK.
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcessSample {
    pub pid: u32,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub open_files: u64,
    pub threads: u64,
}

#[derive(Debug, Serialize)]
pub struct ProcessSummary {
    pub pid: u32,
    pub first_rss_mib: f64,
    pub peak_rss_mib: f64,
    pub last_rss_mib: f64,
    pub max_open_files: u64,
    /// Least-squares slope of resident memory over the second half.
    pub second_half_growth_mib_per_hour: f64,
}

pub async fn run(
    fixture: &mut Fixture,
    scenarios: &[Scenario],
    data_dir: &Path,
    load: &Load<'_>,
    soak: &SoakPlan,
) -> anyhow::Result<Soak> {
    let (services, plan) = (load.services, load.plan);
    let window_plan = Plan {
        warmup: Duration::ZERO,
        duration: soak.interval,
        requests: None,
        progress: false,
        ..plan.clone()
    };
    let mut channels = Vec::new();
    for scenario in scenarios {
        let url = scenario
            .target(services)
            .with_context(|| format!("{} has no target", scenario.name()))?;
        channels.push(
            (0..plan.connections)
                .map(|_| services.channel(url))
                .collect::<anyhow::Result<Vec<_>>>()?,
        );
    }
    let say = |text: String| match soak.rows_to_stderr {
        true => eprintln!("{text}"),
        false => out!("{text}"),
    };
    say(heading(scenarios, &soak.pids));
    let started = tokio::time::Instant::now();
    let total = Duration::from_secs_f64(soak.minutes * 60.0);
    let mut renewed = started;
    let mut rows = Vec::new();
    while started.elapsed() < total && !load.interrupt.requested() {
        if renewed.elapsed() >= RENEW_TOKENS_EVERY {
            fixture.renew_tokens(services).await?;
            renewed = tokio::time::Instant::now();
        }
        let mut windows = Vec::new();
        for (scenario, channels) in scenarios.iter().zip(&channels) {
            let rpc = Arc::new(scenario.rpc(fixture, data_dir).await?);
            let (name, channels, plan) = (scenario.name(), channels.clone(), window_plan.clone());
            let (acks, interrupt) = (load.acks.clone(), load.interrupt);
            windows.push(async move {
                let measured = load::run(name, rpc, &channels, &plan, acks, interrupt).await?;
                anyhow::Ok((name, measured))
            });
        }
        let mut row = Row {
            minute: 0.0,
            scenarios: Vec::new(),
            processes: Vec::new(),
        };
        for measured in futures::future::join_all(windows).await {
            let (name, m) = measured?;
            let elapsed = m.elapsed.as_secs_f64().max(1e-9);
            row.scenarios.push(Window {
                name,
                calls_per_s: m.calls as f64 / elapsed,
                p50_ms: m.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: m.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
                failed: m.calls - m.statuses[tonic::Code::Ok as usize],
            });
        }
        row.minute = started.elapsed().as_secs_f64() / 60.0;
        row.processes = soak.pids.iter().filter_map(|pid| sample(*pid)).collect();
        say(line(&row));
        rows.push(row);
    }
    let processes = soak
        .pids
        .iter()
        .filter_map(|pid| summary(*pid, &rows))
        .collect::<Vec<_>>();
    for p in &processes {
        say(format!(
            "pid {}: resident {:.1} MiB at the first row, peak {:.1}, {:.1} at the last; \
             {:+.1} MiB/hour over the second half; at most {} open files",
            p.pid,
            p.first_rss_mib,
            p.peak_rss_mib,
            p.last_rss_mib,
            p.second_half_growth_mib_per_hour,
            p.max_open_files
        ));
    }
    Ok(Soak {
        rate_per_scenario: plan.rate,
        rows,
        processes,
    })
}

fn heading(scenarios: &[Scenario], pids: &[u32]) -> String {
    let mut heading = format!("{:>7}", "minute");
    for scenario in scenarios {
        heading += &format!(
            "  {:>30}",
            format!("{} calls/s p50 p99 ms failed", scenario.name())
        );
    }
    for pid in pids {
        heading += &format!("  {:>26}", format!("pid {pid} RSS MiB files threads"));
    }
    heading
}

fn line(row: &Row) -> String {
    let mut line = format!("{:>7.1}", row.minute);
    for w in &row.scenarios {
        line += &format!(
            "  {:>30}",
            format!(
                "{:.0} {:.2} {:.2} {}",
                w.calls_per_s, w.p50_ms, w.p99_ms, w.failed
            )
        );
    }
    for p in &row.processes {
        line += &format!(
            "  {:>26}",
            format!("{:.1} {} {}", p.rss_mib, p.open_files, p.threads)
        );
    }
    line
}

/// A process's memory, open files and threads now; `None` once it is gone.
fn sample(pid: u32) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcessSample {
        pid,
        rss_mib: field("VmRSS:")? as f64 / 1024.0,
        peak_rss_mib: field("VmHWM:")? as f64 / 1024.0,
        open_files,
        threads: field("Threads:")?,
    })
}

fn summary(pid: u32, rows: &[Row]) -> Option<ProcessSummary> {
    let samples: Vec<(f64, ProcessSample)> = rows
        .iter()
        .filter_map(|row| {
            let sample = row.processes.iter().find(|p| p.pid == pid)?;
            Some((row.minute, *sample))
        })
        .collect();
    let (_, first) = samples.first()?;
    let (_, last) = samples.last()?;
    let second_half: Vec<(f64, f64)> = samples[samples.len() / 2..]
        .iter()
        .map(|(minute, s)| (*minute / 60.0, s.rss_mib))
        .collect();
    Some(ProcessSummary {
        pid,
        first_rss_mib: first.rss_mib,
        peak_rss_mib: samples
            .iter()
            .map(|(_, s)| s.peak_rss_mib)
            .fold(0.0, f64::max),
        last_rss_mib: last.rss_mib,
        max_open_files: samples.iter().map(|(_, s)| s.open_files).max().unwrap_or(0),
        second_half_growth_mib_per_hour: slope(&second_half),
    })
}

/// Least-squares slope of y over x; 0 for fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    let sxy: f64 = points
        .iter()
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_is_found_and_of_a_flat_line_is_nothing() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 1.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 7.0)).collect();
        assert_eq!(slope(&flat), 0.0);
        assert_eq!(slope(&[(1.0, 2.0)]), 0.0);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(std::process::id()).expect("our own /proc entry");
        assert!(me.rss_mib > 0.0 && me.open_files > 0 && me.threads > 0);
        assert!(me.peak_rss_mib >= me.rss_mib);
    }
}
