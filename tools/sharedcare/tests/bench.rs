//! `sharedcare bench` end to end, briefly (one second, four calls in
//! flight): the echo alone, plaintext and over mutual TLS; then
//! `get-record` against a real `sharedcare dev` on free ports, with the
//! setup through the platform's APIs; `trace-patient` over a few hundred
//! seeded people, twice (the second run reuses them). Checks the JSON
//! report and that every call succeeded; never how fast (not a timed test).

mod support;

use std::process::Command;

use serde_json::Value;
use support::{BIN, CLIENT_VARS, Dev, free_base_port};

/// Short and small: one second measured, no warm-up, four in flight on
/// two connections, and the report as JSON.
const SHORT: &[&str] = &[
    "--duration",
    "1",
    "--warmup",
    "0",
    "--in-flight",
    "4",
    "--connections",
    "2",
    "--json",
];

/// Runs `sharedcare <args>` briefly; its JSON report.
fn bench(args: &[&str], context: impl Fn() -> String) -> Value {
    support::bench(&[args, SHORT].concat(), context)
}

/// The run named `name` over `transport`: calls made, all of them OK.
fn assert_all_ok(report: &Value, name: &str, transport: &str) {
    let runs = report["runs"].as_array().expect("runs");
    let run = runs
        .iter()
        .find(|r| r["name"] == name && r["transport"] == transport)
        .unwrap_or_else(|| panic!("no {name} {transport} run in {report:#}"));
    let calls = run["calls"].as_u64().expect("calls");
    assert!(calls > 0, "{name} made calls: {run:#}");
    let statuses = run["statuses"].as_object().expect("statuses");
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        vec!["OK"],
        "only OK statuses: {run:#}"
    );
    assert_eq!(statuses["OK"].as_u64(), Some(calls), "{run:#}");
    for figure in ["calls_per_s", "elapsed_s"] {
        assert!(
            run[figure].as_f64().is_some_and(|v| v > 0.0),
            "{figure}: {run:#}"
        );
    }
    for percentile in ["p50", "p90", "p99", "p99_9"] {
        assert!(
            run["latency_ms"][percentile]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "{percentile}: {run:#}"
        );
    }
}

#[test]
fn echo_alone_plaintext_and_over_mutual_tls() {
    let pki = sharedcare_kit::tls::test_pki::TestPki::new();
    pki.issue("bench");
    let (ca, cert, key) = (pki.ca_file(), pki.cert_file("bench"), pki.key_file("bench"));
    let report = bench(
        &[
            "bench",
            "--scenario",
            "echo",
            "--tls-ca",
            ca.to_str().expect("utf-8 path"),
            "--tls-cert",
            cert.to_str().expect("utf-8 path"),
            "--tls-key",
            key.to_str().expect("utf-8 path"),
        ],
        String::new,
    );
    assert_all_ok(&report, "echo", "plaintext");
    assert_all_ok(&report, "echo", "tls");
    assert_eq!(report["settings"]["in_flight"], 4);
    assert_eq!(report["ratios"].as_array().map(Vec::len), Some(0));
}

#[test]
fn get_record_against_dev() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let base_port = free_base_port();
    let mut dev = Dev::start(&data_dir, temp.path(), base_port);
    dev.wait_until_serving(base_port);

    // `sharedcare bench` against dev, with these options.
    let port = base_port.to_string();
    let data = data_dir.to_str().expect("utf-8 path");
    let against_dev = |options: &[&str]| {
        let args = [
            &["--base-port", &port, "bench", "--data-dir", data],
            options,
        ]
        .concat();
        bench(&args, || dev.output())
    };

    let report = against_dev(&[
        "--scenario",
        "get-record",
        "--scenario",
        "create-record",
        "--scenario",
        "sqlite-insert",
        "--scenario",
        "audit-append-batch",
    ]);
    assert_all_ok(&report, "echo", "plaintext");
    for name in [
        "get-record",
        "create-record",
        "sqlite-insert",
        "audit-append-batch",
    ] {
        assert_all_ok(&report, name, "plaintext");
    }
    let ratio = &report["ratios"][0];
    assert_eq!(ratio["name"], "get-record", "{report:#}");
    assert!(
        ratio["calls_per_s"].as_f64().is_some_and(|v| v > 0.0),
        "{report:#}"
    );

    // trace-patient brings get-patient along and is read against it; its
    // people are registered once per data dir.
    for _ in 0..2 {
        let report = against_dev(&["--scenario", "trace-patient", "--seed-patients", "200"]);
        assert_all_ok(&report, "get-patient", "plaintext");
        assert_all_ok(&report, "trace-patient", "plaintext");
        let ratios = report["ratios"].as_array().expect("ratios");
        assert!(
            ratios.iter().any(|r| r["name"] == "trace-patient"
                && r["against"] == "get-patient"
                && r["calls_per_s"].as_f64().is_some_and(|v| v > 0.0)),
            "{report:#}"
        );
    }

    // Without echo, every acknowledged write in the log: the measured
    // calls and the first on each connection.
    let acks = temp.path().join("acks.jsonl");
    let acks_arg = acks.to_str().expect("utf-8 path");
    let report = against_dev(&[
        "--scenario",
        "create-record",
        "--no-echo",
        "--acks",
        acks_arg,
    ]);
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "no echo run: {report:#}");
    assert_all_ok(&report, "create-record", "plaintext");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&acks)
        .expect("the acknowledgement log")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(
        Some(lines.len() as u64),
        runs[0]["calls"].as_u64().map(|calls| calls + 2),
        "{report:#}"
    );
    for line in &lines {
        assert_eq!(
            (&line["rpc"], &line["version"]),
            (&"CreateRecord".into(), &1.into())
        );
        assert_eq!(line["sha256"].as_str().map(str::len), Some(64), "{line}");
    }

    // Open loop: the calls start on schedule, so no more than the rate
    // allows over the second (plus the calls already due at its end).
    let report = against_dev(&["--scenario", "get-record", "--rate", "40"]);
    assert_eq!(report["settings"]["rate_per_s"], 40.0, "{report:#}");
    assert_all_ok(&report, "get-record", "plaintext");
    let calls = report["runs"][1]["calls"].as_u64().expect("calls");
    assert!(
        (20..=45).contains(&calls),
        "about 40 calls in 1 s: {report:#}"
    );

    // A soak, briefly: both scenarios at once, a row a second, dev watched.
    let pid = dev.pid().to_string();
    let soak = against_dev(&[
        "--scenario",
        "get-record",
        "--scenario",
        "create-record",
        "--rate",
        "20",
        "--soak",
        "0.05",
        "--soak-interval",
        "1",
        "--watch-pid",
        &pid,
    ]);
    let rows = soak["rows"].as_array().expect("rows");
    assert!(rows.len() >= 2, "{soak:#}");
    for row in rows {
        let scenarios = row["scenarios"].as_array().expect("scenarios");
        assert_eq!(scenarios.len(), 2, "{soak:#}");
        for window in scenarios {
            assert_eq!(window["failed"], 0, "{soak:#}");
            assert!(window["calls_per_s"].as_f64() > Some(0.0), "{soak:#}");
        }
        assert!(
            row["processes"][0]["rss_mib"].as_f64() > Some(0.0),
            "{soak:#}"
        );
    }
    assert!(
        soak["processes"][0]["peak_rss_mib"].as_f64() > Some(0.0),
        "{soak:#}"
    );

    let status = dev.terminate();
    assert!(
        status.success(),
        "dev stops cleanly on SIGTERM after the load ({status})\n{}",
        dev.output()
    );
}

#[test]
fn a_remote_target_is_refused() {
    let mut command = Command::new(BIN);
    for var in CLIENT_VARS {
        command.env_remove(var);
    }
    let output = command
        .args([
            "--records-url",
            "http://192.0.2.1:50053",
            "bench",
            "--scenario",
            "get-record",
        ])
        .output()
        .expect("run sharedcare bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}
