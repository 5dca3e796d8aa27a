//! The report: one row per run (calls, calls/s, latency percentiles, status
//! counts) and, for every platform run, its figures as a ratio to the echo
//! run over the same transport — and, for a run read against another
//! scenario of the same run (its yardstick: trace-patient against
//! get-patient), as a ratio to that one too. A table for people, JSON
//! (`--json`) for sessions that record figures.
//!
//! Ratios read the same way for every figure: calls/s is the run's over
//! echo's (0.25× means a quarter of echo's throughput); latency is the
//! run's over echo's (40× means forty times echo's latency).

use std::collections::BTreeMap;

use serde::Serialize;

use hdrhistogram::Histogram;

use super::{
    flood::Flood,
    load::{Measurement, STATUS_CODES},
};
use crate::failure::code_name;

#[derive(Debug, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub runs: Vec<Run>,
    pub ratios: Vec<Ratio>,
    /// With `--overload`: each scenario flooded beyond its capacity.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub floods: Vec<Flood>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub connections: usize,
    pub in_flight: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub requests: Option<u64>,
    pub call_timeout_s: f64,
    /// Open loop at this many calls/s; `None` for the closed loop.
    pub rate_per_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Run {
    /// `echo` or the scenario's name.
    pub name: String,
    pub rpc: String,
    pub target: String,
    /// `plaintext` or `tls`.
    pub transport: &'static str,
    pub calls: u64,
    pub elapsed_s: f64,
    pub calls_per_s: f64,
    pub latency_ms: Latency,
    /// Status name → count; OK first in the table.
    pub statuses: BTreeMap<&'static str, u64>,
    /// The run this one is also read against, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yardstick: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a histogram of microseconds, in milliseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Status name → count, for the codes seen.
pub fn status_names(counts: &[u64; STATUS_CODES]) -> BTreeMap<&'static str, u64> {
    counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| {
            let code = tonic::Code::from_i32(i32::try_from(code).unwrap_or(2));
            (code_name(code), *n)
        })
        .collect()
}

/// A run's figures over its echo's, or its yardstick's.
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub name: String,
    /// `echo` or the yardstick's name.
    pub against: String,
    pub transport: &'static str,
    pub calls_per_s: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
}

impl Run {
    pub fn new(
        name: &str,
        rpc: &str,
        target: &str,
        transport: &'static str,
        m: &Measurement,
    ) -> Run {
        let elapsed_s = m.elapsed.as_secs_f64();
        Run {
            name: name.to_owned(),
            rpc: rpc.to_owned(),
            target: target.to_owned(),
            transport,
            calls: m.calls,
            elapsed_s,
            calls_per_s: if elapsed_s > 0.0 {
                m.calls as f64 / elapsed_s
            } else {
                0.0
            },
            latency_ms: Latency::of(&m.latency_us),
            statuses: status_names(&m.statuses),
            yardstick: None,
        }
    }

    /// This run's figures over `base`'s.
    fn over(&self, base: &Run) -> Ratio {
        let over = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let (l, e) = (self.latency_ms, base.latency_ms);
        Ratio {
            name: self.name.clone(),
            against: base.name.clone(),
            transport: self.transport,
            calls_per_s: over(self.calls_per_s, base.calls_per_s),
            p50: over(l.p50, e.p50),
            p90: over(l.p90, e.p90),
            p99: over(l.p99, e.p99),
            p99_9: over(l.p99_9, e.p99_9),
        }
    }

    fn is_echo(&self) -> bool {
        self.name == "echo"
    }
}

impl Report {
    /// `runs` with a ratio for every platform run that has an echo run over
    /// the same transport, then one for every run whose yardstick ran
    /// over the same transport.
    pub fn new(settings: Settings, runs: Vec<Run>) -> Report {
        let to_echo = runs.iter().filter(|run| !run.is_echo()).filter_map(|run| {
            let echo = runs
                .iter()
                .find(|e| e.is_echo() && e.transport == run.transport)?;
            Some(run.over(echo))
        });
        let to_yardstick = runs.iter().filter_map(|run| {
            let name = run.yardstick.as_deref()?;
            let base = runs
                .iter()
                .find(|b| b.name == name && b.transport == run.transport)?;
            Some(run.over(base))
        });
        let ratios = to_echo.chain(to_yardstick).collect();
        Report {
            settings,
            runs,
            ratios,
            floods: Vec::new(),
        }
    }

    /// The table, one line per element.
    pub fn table(&self) -> Vec<String> {
        let s = &self.settings;
        let mut lines = vec![format!(
            "{} connections, {} in flight, {:.0} s warm-up, {} s measured{}{}",
            s.connections,
            s.in_flight,
            s.warmup_s,
            s.duration_s,
            s.requests
                .map(|n| format!(" or {n} calls, whichever first"))
                .unwrap_or_default(),
            s.rate_per_s
                .map(|r| format!(
                    ", open loop at {r:.0} calls/s (latency from when each call was due)"
                ))
                .unwrap_or_default()
        )];
        lines.push(String::new());
        lines.push(format!(
            "{:<14} {:<9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9}  statuses",
            "run", "transport", "calls", "calls/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"
        ));
        for run in &self.runs {
            let l = run.latency_ms;
            lines.push(format!(
                "{:<14} {:<9} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {}",
                run.name,
                run.transport,
                run.calls,
                run.calls_per_s,
                l.p50,
                l.p90,
                l.p99,
                l.p99_9,
                statuses(&run.statuses)
            ));
        }
        let mut against: Option<&str> = None;
        for r in &self.ratios {
            // A heading for each base, as the ratios come grouped by it.
            if against != Some(r.against.as_str()) {
                against = Some(r.against.as_str());
                lines.push(String::new());
                lines.push(format!(
                    "{:<14} {:<9} {:>10} {:>9} {:>9} {:>9} {:>9}",
                    format!("× {}", r.against),
                    "transport",
                    "calls/s",
                    "p50",
                    "p90",
                    "p99",
                    "p99.9"
                ));
            }
            lines.push(format!(
                "{:<14} {:<9} {:>9.3}× {:>8.1}× {:>8.1}× {:>8.1}× {:>8.1}×",
                r.name, r.transport, r.calls_per_s, r.p50, r.p90, r.p99, r.p99_9
            ));
        }
        for flood in &self.floods {
            lines.push(String::new());
            lines.extend(flood.table());
        }
        for run in &self.runs {
            let failed: u64 = run
                .statuses
                .iter()
                .filter(|(name, _)| **name != "OK")
                .map(|(_, n)| n)
                .sum();
            if failed > 0 {
                lines.push(format!(
                    "warning: {failed} of {}'s {} calls did not succeed; its figures include them",
                    run.name, run.calls
                ));
            }
        }
        lines
    }
}

/// `OK 1234, UNAVAILABLE 5`: OK first, then by name.
pub fn statuses(counts: &BTreeMap<&'static str, u64>) -> String {
    let ok = counts.get("OK").map(|n| format!("OK {n}"));
    ok.into_iter()
        .chain(
            counts
                .iter()
                .filter(|(name, _)| **name != "OK")
                .map(|(name, n)| format!("{name} {n}")),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, transport: &'static str, calls_per_s: f64, p50: f64) -> Run {
        Run {
            name: name.into(),
            rpc: "x".into(),
            target: "http://127.0.0.1:1".into(),
            transport,
            calls: 10,
            elapsed_s: 1.0,
            calls_per_s,
            latency_ms: Latency {
                p50,
                p90: p50 * 2.0,
                p99: p50 * 3.0,
                p99_9: p50 * 4.0,
                max: p50 * 5.0,
                mean: p50,
            },
            statuses: BTreeMap::from([("OK", 9), ("UNAVAILABLE", 1)]),
            yardstick: None,
        }
    }

    fn settings() -> Settings {
        Settings {
            connections: 4,
            in_flight: 32,
            warmup_s: 1.0,
            duration_s: 10.0,
            requests: None,
            call_timeout_s: 10.0,
            rate_per_s: None,
        }
    }

    #[test]
    fn each_run_is_compared_with_the_echo_over_its_own_transport() {
        let report = Report::new(
            settings(),
            vec![
                run("echo", "plaintext", 30_000.0, 1.0),
                run("echo", "tls", 20_000.0, 2.0),
                run("get-record", "plaintext", 7_500.0, 4.0),
                run("get-record", "tls", 2_000.0, 20.0),
            ],
        );
        let ratios: Vec<(&str, &str, f64, f64)> = report
            .ratios
            .iter()
            .map(|r| (r.name.as_str(), r.transport, r.calls_per_s, r.p50))
            .collect();
        assert_eq!(
            ratios,
            vec![
                ("get-record", "plaintext", 0.25, 4.0),
                ("get-record", "tls", 0.1, 10.0)
            ]
        );
        let table = report.table().join("\n");
        assert!(table.contains("0.250×"), "{table}");
        assert!(table.contains("OK 9, UNAVAILABLE 1"), "{table}");
        assert!(
            table.contains("warning: 1 of get-record's 10 calls"),
            "{table}"
        );
    }

    #[test]
    fn a_run_with_a_yardstick_is_also_compared_with_it() {
        let mut trace = run("trace-patient", "plaintext", 1_000.0, 8.0);
        trace.yardstick = Some("get-patient".into());
        let report = Report::new(
            settings(),
            vec![
                run("echo", "plaintext", 20_000.0, 1.0),
                run("get-patient", "plaintext", 4_000.0, 2.0),
                trace,
            ],
        );
        let ratios: Vec<(&str, &str, f64, f64)> = report
            .ratios
            .iter()
            .map(|r| (r.name.as_str(), r.against.as_str(), r.calls_per_s, r.p50))
            .collect();
        assert_eq!(
            ratios,
            vec![
                ("get-patient", "echo", 0.2, 2.0),
                ("trace-patient", "echo", 0.05, 8.0),
                ("trace-patient", "get-patient", 0.25, 4.0),
            ]
        );
        let table = report.table().join("\n");
        assert!(table.contains("× get-patient"), "{table}");
        assert!(table.contains("0.250×"), "{table}");
    }

    #[test]
    fn the_json_names_every_figure() {
        let report = Report::new(
            settings(),
            vec![
                run("echo", "plaintext", 100.0, 1.0),
                run("audit-append", "plaintext", 50.0, 2.0),
            ],
        );
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!(json["runs"][1]["latency_ms"]["p99_9"], 8.0);
        assert_eq!(json["runs"][1]["statuses"]["OK"], 9);
        assert_eq!(json["ratios"][0]["calls_per_s"], 0.5);
        assert_eq!(json["settings"]["in_flight"], 32);
    }
}
