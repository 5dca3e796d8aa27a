//! `sharedcare dev --metrics <BASE_PORT>`: the real binary serves each
//! service's Prometheus metrics on its own loopback port, says where in its
//! banner, and each port shows that service's series only.

mod support;

use std::net::SocketAddr;

use sharedcare_kit::testing::{assert_no_identifiers, scrape};
use support::{Dev, free_base_port};

#[test]
fn dev_serves_each_services_metrics_on_its_own_port() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let base_port = free_base_port();
    let metrics_port = free_base_port();
    let mut dev = Dev::start_with(
        &data_dir,
        temp.path(),
        base_port,
        &["--metrics", &metrics_port.to_string()],
    );
    dev.wait_until_serving(base_port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    for (offset, service) in ["identity", "consent", "records", "audit"]
        .into_iter()
        .enumerate()
    {
        let addr = SocketAddr::from(([127, 0, 0, 1], metrics_port + offset as u16));
        let scraped = runtime.block_on(scrape(addr));
        // Its health was polled until SERVING: a counted RPC of its own.
        let checks = scraped
            .value(
                "sharedcare_rpc_requests_total",
                &[("service", service), ("method", "Check"), ("code", "OK")],
            )
            .unwrap_or(0.0);
        assert!(checks >= 1.0, "{service}: {scraped:?}\n{}", dev.output());
        for sample in &scraped.samples {
            assert_eq!(
                sample.labels.get("service").map(String::as_str),
                Some(service),
                "{service}'s port: {sample:?}"
            );
        }
        assert_no_identifiers(&scraped, &[]);
    }
    drop(runtime);
    let status = dev.terminate();
    assert!(status.success(), "{status}\n{}", dev.output());
    let output = dev.output();
    assert!(
        output.contains(&format!(
            "metrics http://127.0.0.1:{}/metrics",
            metrics_port + 2
        )),
        "the banner says where records' metrics are:\n{output}"
    );
}
