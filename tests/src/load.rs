//! Load from the load tool: `sharedcare bench` as a process against
//! [`Processes`], open loop at a modest rate (so that calls failing fast
//! while a service is down do not spin), writing every acknowledged call to
//! an acknowledgement log (`--acks`), stopped with Ctrl-C (SIGINT), after
//! which it reports its calls by status code (`--json`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::processes::{Processes, binary, output_file, signal};

/// Calls per second each load starts.
const RATE: u32 = 60;
const IN_FLIGHT: u32 = 8;
const CONNECTIONS: u32 = 2;
/// Longest one call may take before the bench counts it DEADLINE_EXCEEDED.
const CALL_TIMEOUT_S: u32 = 5;
/// Longest the bench may take to set up and start loading.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the bench loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    CreateRecord,
    GetRecord,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::CreateRecord => "create-record",
            Scenario::GetRecord => "get-record",
        }
    }
}

/// One line of the acknowledgement log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ack {
    /// `CreateRecord` or `GetRecord`.
    pub rpc: String,
    pub patient_id: String,
    pub record_id: String,
    pub version: i64,
    /// Of the resource JSON as answered.
    pub sha256: String,
}

/// A running bench.
pub struct Load {
    pub scenario: Scenario,
    child: Option<Child>,
    acks: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// What one bench did.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub scenario: Scenario,
    /// Every call acknowledged.
    pub acks: Vec<Ack>,
    /// Calls made (the first call on each connection aside).
    pub calls: u64,
    /// Calls by status code name, OK included.
    pub statuses: BTreeMap<String, u64>,
}

/// Calls that did not succeed, by status code name, summed over loads.
#[derive(Debug, Clone, Default)]
pub struct Errors(BTreeMap<String, u64>);

impl Errors {
    pub fn of(loads: &[Loaded]) -> Self {
        let mut errors = Errors::default();
        errors.add(loads);
        errors
    }

    pub fn add(&mut self, loads: &[Loaded]) {
        for load in loads {
            for (code, n) in load.statuses.iter().filter(|(code, _)| *code != "OK") {
                *self.0.entry(code.clone()).or_default() += n;
            }
        }
    }
}

/// `DEADLINE_EXCEEDED 1, UNAVAILABLE 12`, or `none`.
impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let counts: Vec<String> = self
            .0
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        f.write_str(&counts.join(", "))
    }
}

impl Loaded {
    /// Calls that reached the service or may have: all but the acknowledged
    /// were answered with an error.
    pub fn attempted(&self) -> u64 {
        self.calls + u64::from(CONNECTIONS)
    }
}

impl Load {
    /// Starts `sharedcare bench` loading `scenario` on `platform`, its files
    /// in `dir` (named after `label`).
    pub fn start(platform: &Processes, scenario: Scenario, dir: &Path, label: &str) -> Load {
        let file = |suffix: &str| dir.join(format!("{label}-{}.{suffix}", scenario.name()));
        let (acks, stdout, stderr) = (file("acks"), file("json"), file("stderr"));
        let mut command = Command::new(binary("sharedcare"));
        for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("SHAREDCARE_")) {
            command.env_remove(var);
        }
        let child = command
            .args(["--base-port", &platform.base_port().to_string(), "bench"])
            .args(["--scenario", scenario.name(), "--no-echo", "--json"])
            .args(["--warmup", "0", "--duration", "3600"])
            .args(["--rate", &RATE.to_string()])
            .args(["--in-flight", &IN_FLIGHT.to_string()])
            .args(["--connections", &CONNECTIONS.to_string()])
            .args(["--call-timeout", &CALL_TIMEOUT_S.to_string()])
            .arg("--acks")
            .arg(&acks)
            .arg("--data-dir")
            .arg(platform.layout().data_dir())
            .stdin(Stdio::null())
            .stdout(output_file(&stdout))
            .stderr(output_file(&stderr))
            .spawn()
            .expect("start sharedcare bench");
        Load {
            scenario,
            child: Some(child),
            acks,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "--- bench {} stderr ---\n{}",
            self.scenario.name(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits until the bench is loading: a call after the first on each
    /// connection has been acknowledged.
    pub async fn wait_until_loading(&mut self) {
        let started = Instant::now();
        loop {
            let acked = std::fs::read_to_string(&self.acks)
                .map(|text| text.lines().count())
                .unwrap_or(0);
            if acked > CONNECTIONS as usize {
                return;
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait().expect("poll the bench")
            {
                panic!(
                    "sharedcare bench exited ({status}) before it was loading\n{}",
                    self.output()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "sharedcare bench was not loading within {START_TIMEOUT:?}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ctrl-C: the bench ends its run and reports it.
    pub async fn stop(mut self) -> Loaded {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "INT");
        // Calls in flight end within the call timeout.
        let deadline = Instant::now() + Duration::from_secs(u64::from(CALL_TIMEOUT_S) + 30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the bench") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sharedcare bench did not stop after Ctrl-C\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            status.success(),
            "sharedcare bench failed ({status})\n{}",
            self.output()
        );
        let report = std::fs::read_to_string(&self.stdout).expect("the bench's report");
        let report: serde_json::Value = serde_json::from_str(&report)
            .unwrap_or_else(|e| panic!("the bench's report is not JSON ({e}): {report}"));
        let run = &report["runs"][0];
        let statuses = run["statuses"]
            .as_object()
            .map(|codes| {
                codes
                    .iter()
                    .map(|(code, n)| (code.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let acks = std::fs::read_to_string(&self.acks)
            .expect("the acknowledgement log")
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("an acknowledgement is not JSON ({e}): {line}"))
            })
            .collect();
        Loaded {
            scenario: self.scenario,
            acks,
            calls: run["calls"].as_u64().unwrap_or(0),
            statuses,
        }
    }
}

/// What the crash tests load: the bench writing (create-record) and the
/// bench reading (get-record), beside each other.
pub struct WritesAndReads {
    writes: Load,
    reads: Load,
}

impl WritesAndReads {
    /// Both started, and both loading.
    pub async fn start(platform: &Processes, dir: &Path, label: &str) -> Self {
        let mut writes = Load::start(platform, Scenario::CreateRecord, dir, label);
        let mut reads = Load::start(platform, Scenario::GetRecord, dir, label);
        writes.wait_until_loading().await;
        reads.wait_until_loading().await;
        WritesAndReads { writes, reads }
    }

    /// Both stopped: what each did.
    pub async fn stop(self) -> Vec<Loaded> {
        vec![self.writes.stop().await, self.reads.stop().await]
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
