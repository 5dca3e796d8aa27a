//! Overload, end to end: `sharedcare dev` (64 requests in flight per
//! service) flooded with `sharedcare bench --overload 3` — three times the
//! OK calls/s its closed loop measured, as an open loop — on an authorised
//! read and a write. What is beyond the bound is shed with
//! RESOURCE_EXHAUSTED and nothing else goes wrong; the calls admitted are
//! answered within a bound far below the request timeout (the figure is
//! the report's; the bound here only catches an unbounded queue); health
//! says SERVING throughout; and dev is still up and serving afterwards.

mod support;

use serde_json::Value;
use support::{Dev, free_base_port};

/// Far below the 30 s request timeout a queue without a bound would reach.
const ADMITTED_P99_BOUND_MS: f64 = 5_000.0;

fn check_flood(flood: &Value) {
    let statuses = flood["statuses"].as_object().expect("statuses");
    for (status, _) in statuses {
        assert!(
            status == "OK" || status == "RESOURCE_EXHAUSTED",
            "only OK and RESOURCE_EXHAUSTED under overload: {flood:#}"
        );
    }
    assert!(
        statuses.get("RESOURCE_EXHAUSTED").and_then(Value::as_u64) > Some(0),
        "three times capacity is shed in part: {flood:#}"
    );
    assert!(
        statuses.get("OK").and_then(Value::as_u64) > Some(0),
        "and served in part: {flood:#}"
    );
    let p99 = flood["admitted_latency_ms"]["p99"].as_f64().expect("p99");
    assert!(
        p99 < ADMITTED_P99_BOUND_MS,
        "admitted calls' p99 is bounded: {flood:#}"
    );
    let health = &flood["health"];
    assert!(health["checks"].as_u64() > Some(0), "{flood:#}");
    assert_eq!(
        health["serving"], health["checks"],
        "health said SERVING to every probe: {flood:#}"
    );
    assert_eq!(flood["not_started"], 0, "{flood:#}");
}

#[test]
fn beyond_capacity_calls_are_shed_and_the_admitted_answered_promptly() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let base_port = free_base_port();
    let mut dev = Dev::start_in(
        &data_dir,
        temp.path(),
        base_port,
        "warn",
        &[],
        &[("SHAREDCARE_SERVER__CONCURRENCY_LIMIT", "64")],
    );
    dev.wait_until_serving(base_port);

    let report = support::bench(
        &[
            "--base-port",
            &base_port.to_string(),
            "bench",
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--scenario",
            "get-record",
            "--scenario",
            "create-record",
            "--overload",
            "3",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--json",
        ],
        || dev.output(),
    );
    let floods = report["floods"].as_array().expect("floods");
    assert_eq!(floods.len(), 2, "{report:#}");
    for flood in floods {
        check_flood(flood);
    }

    assert!(dev.exited().is_none(), "dev survived\n{}", dev.output());
    dev.wait_until_serving(base_port);
    let status = dev.terminate();
    assert!(status.success(), "{status}\n{}", dev.output());
}
