//! Nothing personal leaves in telemetry. `sharedcare dev` runs as a shell
//! would start it for an operator: JSON logs at `info`, each service's
//! metrics served, traces sent by the standard `OTEL_*` variables to an
//! OTLP receiver in this test. The whole demo runs against it. Then every
//! log line, every exported span (name, attributes, events) and every
//! metrics page is scanned for each NHS number, name, date of birth and
//! patient id the demo used and the text of each resource it wrote: none
//! may appear. Each was first found in the demo's own narration, and the
//! telemetry must hold real volume from all four services, so the scan is
//! never of nothing.

mod support;

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::Duration,
};

use sharedcare_kit::testing::{OtlpReceiver, scrape_raw};
use support::{BIN, CLIENT_VARS, Dev, free_base_port};

/// What the demo's narration printed for its patient: `NHS number N, Jane
/// F, born D` at registration, and her patient id.
fn the_demo_patient(narration: &str) -> Vec<String> {
    let registration = narration
        .lines()
        .find_map(|line| line.split_once("NHS number ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no registration line in the narration:\n{narration}"));
    // "999 012 3456, Jane Quillfeather, born 1984-06-02, GP practice A81001"
    let mut parts = registration.split(", ");
    let nhs: String = parts
        .next()
        .expect("NHS number")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let name = parts.next().expect("name").trim().to_owned();
    let born = parts
        .next()
        .and_then(|b| b.strip_prefix("born "))
        .expect("date of birth")
        .trim()
        .to_owned();
    let (given, family) = name.split_once(' ').expect("given and family name");
    assert_eq!(nhs.len(), 10, "{registration}");
    let mut secrets = vec![
        nhs.clone(),
        // As it is written for people, too: 999 012 3456.
        format!("{} {} {}", &nhs[..3], &nhs[3..6], &nhs[6..]),
        given.to_owned(),
        family.to_owned(),
        born,
    ];
    // Her patient id: the uuid on the line that says she was created.
    let id = narration
        .lines()
        .skip_while(|l| !l.contains("NHS number "))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_hexdigit() || c == '-')))
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .unwrap_or_else(|| panic!("no patient id in the narration:\n{narration}"))
        .to_owned();
    secrets.push(id);
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_leaves_nothing_personal_in_logs_spans_or_metrics() {
    let (receiver, otlp) = OtlpReceiver::start().await;
    let data_dir = tempfile::tempdir().expect("data dir");
    let logs = tempfile::tempdir().expect("logs");
    let base_port = free_base_port();
    let metrics_port = loop {
        let port = free_base_port();
        if port.abs_diff(base_port) >= 4 {
            break port;
        }
    };
    let mut dev = Dev::start_in(
        data_dir.path(),
        logs.path(),
        base_port,
        // With the request log (`sharedcare::rpc`, debug) and everything
        // else at info.
        "info,sharedcare::rpc=debug",
        &["--metrics", &metrics_port.to_string()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    // dev's own health polling runs its own runtime.
    tokio::task::block_in_place(|| dev.wait_until_serving(base_port));

    let mut demo = Command::new(BIN);
    demo.args(["--base-port", &base_port.to_string(), "demo", "--data-dir"])
        .arg(data_dir.path())
        .stdin(Stdio::null());
    for var in CLIENT_VARS {
        demo.env_remove(var);
    }
    let demo = demo.output().expect("run the demo");
    let narration = String::from_utf8_lossy(&demo.stdout).into_owned();
    assert!(
        demo.status.success(),
        "demo failed\n{narration}\n{}\n{}",
        String::from_utf8_lossy(&demo.stderr),
        dev.output()
    );
    let mut secrets = the_demo_patient(&narration);
    secrets.extend(
        [
            // The hospital's typo of her given name.
            "Jnae",
            // What the records said.
            "Systolic blood pressure",
            "Human immunodeficiency virus infection",
            "Referral to social services",
        ]
        .map(str::to_owned),
    );

    let mut metrics = String::new();
    for offset in 0..4u16 {
        let addr = format!("127.0.0.1:{}", metrics_port + offset)
            .parse()
            .expect("address");
        let (status, page) = scrape_raw(addr, "/metrics").await;
        assert_eq!(status, 200, "{page}");
        metrics.push_str(&page);
    }
    let status = tokio::task::block_in_place(|| dev.terminate());
    assert!(status.success(), "{status}\n{}", dev.output());
    // Whatever dev exported before it stopped (it flushes on the way out).
    let mut spans = receiver.spans();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = receiver.spans();
        if now.len() == spans.len() && !now.is_empty() {
            break;
        }
        spans = now;
    }
    let logged = dev.output();

    // Real volume, from every service, so that the scan means something.
    let services: BTreeSet<&str> = spans
        .iter()
        .filter_map(|s| s.attributes.get("rpc.service"))
        .filter_map(|s| s.strip_prefix("sharedcare."))
        .filter_map(|s| s.split('.').next())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["audit", "consent", "identity", "records"]),
        "spans from every service"
    );
    for service in ["identity", "consent", "records", "audit"] {
        assert!(
            metrics.contains(&format!("service=\"{service}\"")),
            "{service}'s metrics"
        );
    }
    // Request log lines are JSON carrying their request's trace id: the
    // same trace the spans were exported under.
    let traced: BTreeSet<String> = spans
        .iter()
        .map(|s| s.trace_id.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let answered: Vec<serde_json::Value> = logged
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"answered\""))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert!(answered.len() > 20, "request log lines: {}", answered.len());
    let joined = answered
        .iter()
        .filter_map(|line| line["span"]["trace_id"].as_str())
        .filter(|id| traced.contains(*id))
        .count();
    assert!(
        joined * 2 > answered.len(),
        "most request log lines name an exported trace: {joined} of {}\n{:?}",
        answered.len(),
        answered.first()
    );

    for secret in &secrets {
        for line in logged.lines() {
            assert!(
                !line.contains(secret.as_str()),
                "a log line holds {secret}: {line}"
            );
        }
        for span in &spans {
            let exported = format!("{} {:?} {:?}", span.name, span.attributes, span.events);
            assert!(
                !exported.contains(secret.as_str()),
                "span {} holds {secret}: {exported}",
                span.name
            );
        }
        for line in metrics.lines() {
            assert!(
                !line.contains(secret.as_str()),
                "a metric holds {secret}: {line}"
            );
        }
    }
}
