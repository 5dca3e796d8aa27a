//! Metrics, end to end over real sockets with the four real services: each
//! serves its own series on its own port (`telemetry.metrics_addr`), scraped
//! over HTTP and parsed. A record written and read, a read refused and a
//! forged token show up as counted RPCs (by method and status code),
//! latencies, token verifications and consent cache lookups; audit shows its
//! commits and tree size; the outbox and connection pool gauges are there;
//! with audit down, records' outbox says how long delivery has been failing.
//! No label value is a patient's identifier.

use std::{net::SocketAddr, time::Duration};

use sharedcare_kit::{
    error::code_name,
    testing::{Scraped, TestDatabase, assert_no_identifiers, scrape, scrape_raw, with_token},
};
use sharedcare_proto::records::v1::{
    self as records, records_service_client::RecordsServiceClient,
};
use sharedcare_tests::{Backend, Platform};

const NHS_NUMBER: &str = "999 000 0018";

fn metrics_addr(server: &sharedcare_kit::testing::TestServer) -> SocketAddr {
    server.metrics_addr.expect("metrics are served")
}

/// A counter's value, 0 when it has not been recorded yet.
fn count(scraped: &Scraped, name: &str, labels: &[(&str, &str)]) -> f64 {
    scraped.value(name, labels).unwrap_or(0.0)
}

/// Scrapes `addr` until `done` holds, for up to ten seconds.
async fn eventually(addr: SocketAddr, what: &str, done: impl Fn(&Scraped) -> bool) -> Scraped {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scraped = scrape(addr).await;
        if done(&scraped) {
            return scraped;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_service_serves_its_own_metrics_with_counted_rpcs_and_no_identifiers() {
    counted_rpcs_and_no_identifiers(Backend::Sqlite).await;
}

#[tokio::test]
async fn metrics_on_postgres() {
    let Some(db) = TestDatabase::postgres("metrics_on_postgres").await else {
        return;
    };
    counted_rpcs_and_no_identifiers(Backend::Postgres(db)).await;
}

/// One process has one recorder, and every platform's records is "records":
/// the tests take turns, so that counts before and after are theirs alone.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn counted_rpcs_and_no_identifiers(backend: Backend) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let p = Platform::start(backend).await;
    let admin = p.admin_token().await;
    p.organisation(&admin, "A81001").await;
    p.organisation(&admin, "B82002").await;
    let gp_pas = p.pas(&admin, "A81001").await;
    let gp = p.staff(&admin, "A81001", "R8000").await;
    let stranger = p.staff(&admin, "B82002", "R8000").await;
    let (patient_id, record) = p.cared_for_patient(&gp_pas, &gp).await;
    let record_id = record.record_id;
    let records_metrics = metrics_addr(&p.records);
    let before = scrape(records_metrics).await;

    let mut client = RecordsServiceClient::new(p.records.channel.clone());
    let get = || records::GetRecordRequest {
        patient_id: patient_id.clone(),
        record_id: record_id.clone(),
        purpose: 0,
        break_glass_reason: String::new(),
    };
    for _ in 0..2 {
        client
            .get_record(with_token(get(), &gp))
            .await
            .expect("the GP reads the record");
    }
    let refused = client
        .get_record(with_token(get(), &stranger))
        .await
        .expect_err("another organisation's clinician is refused");
    let refused_code = code_name(refused.code());
    assert_ne!(refused_code, "OK");
    let forged = client
        .get_record(with_token(get(), "not.a.token"))
        .await
        .expect_err("a forged token is refused");
    assert_eq!(forged.code(), tonic::Code::Unauthenticated);

    let after = scrape(records_metrics).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        count(&after, name, labels) - count(&before, name, labels)
    };
    let rpc = |code| {
        [
            ("service", "records"),
            ("method", "GetRecord"),
            ("code", code),
        ]
    };
    assert_eq!(delta("sharedcare_rpc_requests_total", &rpc("OK")), 2.0);
    assert_eq!(
        delta("sharedcare_rpc_requests_total", &rpc(refused_code)),
        1.0
    );
    assert!(
        delta("sharedcare_rpc_requests_total", &rpc("UNAUTHENTICATED")) >= 1.0,
        "the forged token's call is counted"
    );
    let get_record = [("service", "records"), ("method", "GetRecord")];
    assert!(delta("sharedcare_rpc_duration_seconds_count", &get_record) >= 4.0);
    assert!(
        after
            .value("sharedcare_rpc_duration_seconds_sum", &get_record)
            .is_some()
    );
    let buckets: Vec<_> = after
        .find("sharedcare_rpc_duration_seconds_bucket", &get_record)
        .collect();
    assert!(buckets.len() > 5, "a histogram with buckets: {buckets:?}");
    let inf = after.value(
        "sharedcare_rpc_duration_seconds_bucket",
        &[
            ("service", "records"),
            ("method", "GetRecord"),
            ("le", "+Inf"),
        ],
    );
    assert_eq!(
        inf,
        after.value("sharedcare_rpc_duration_seconds_count", &get_record)
    );
    assert_eq!(
        after
            .types
            .get("sharedcare_rpc_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert_eq!(
        after
            .types
            .get("sharedcare_rpc_requests_total")
            .map(String::as_str),
        Some("counter")
    );
    // Tokens: the GP's and the stranger's verified, the forged one not.
    let tokens = |result| [("service", "records"), ("result", result)];
    assert!(delta("sharedcare_token_verifications_total", &tokens("valid")) >= 3.0);
    assert!(delta("sharedcare_token_verifications_total", &tokens("invalid")) >= 1.0);
    // Every read asked the decision cache (hit or miss).
    let lookups = |result| [("service", "records"), ("result", result)];
    assert!(
        delta("sharedcare_consent_cache_lookups_total", &lookups("hit"))
            + delta("sharedcare_consent_cache_lookups_total", &lookups("miss"))
            >= 3.0
    );
    for state in ["idle", "in_use"] {
        assert!(
            after
                .value(
                    "sharedcare_db_pool_connections",
                    &[("service", "records"), ("state", state)]
                )
                .is_some_and(|n| n >= 0.0),
            "records' pool: {state}"
        );
    }
    for gauge in [
        "sharedcare_outbox_pending_events",
        "sharedcare_outbox_oldest_event_age_seconds",
        "sharedcare_outbox_delivery_failing_seconds",
    ] {
        assert!(
            after.value(gauge, &[("service", "records")]).is_some(),
            "{gauge}"
        );
    }
    assert_eq!(
        after.value(
            "sharedcare_outbox_delivery_failing_seconds",
            &[("service", "records")]
        ),
        Some(0.0),
        "audit is up"
    );

    // audit: the reads' events committed, and the log's size.
    let audit = eventually(metrics_addr(&p.audit), "audit committed events", |s| {
        count(
            s,
            "sharedcare_audit_batch_size_count",
            &[("service", "audit")],
        ) >= 1.0
            && count(s, "sharedcare_audit_tree_size", &[("service", "audit")]) >= 3.0
    })
    .await;
    assert!(
        audit
            .value(
                "sharedcare_audit_commit_duration_seconds_count",
                &[("service", "audit")]
            )
            .is_some_and(|n| n >= 1.0)
    );
    assert!(
        audit
            .value("sharedcare_audit_batch_size_sum", &[("service", "audit")])
            .is_some_and(|n| n >= 3.0)
    );
    assert!(
        count(
            &audit,
            "sharedcare_rpc_requests_total",
            &[
                ("service", "audit"),
                ("method", "AppendBatch"),
                ("code", "OK")
            ]
        ) >= 1.0,
        "records' relay appends to audit"
    );

    // Each endpoint shows its own service only, and nothing identifying.
    for (service, server) in [
        ("identity", &p.identity),
        ("consent", &p.consent),
        ("records", &p.records),
        ("audit", &p.audit),
    ] {
        let scraped = scrape(metrics_addr(server)).await;
        assert!(
            scraped.find("sharedcare_rpc_requests_total", &[]).count() > 0,
            "{service} counts its RPCs"
        );
        for sample in &scraped.samples {
            assert_eq!(
                sample.labels.get("service").map(String::as_str),
                Some(service),
                "{service}'s endpoint: {sample:?}"
            );
        }
        assert_no_identifiers(
            &scraped,
            &[&patient_id, &record_id, NHS_NUMBER, "9990000018", "O'Brien"],
        );
    }
    // identity and consent verified tokens and keep their pools' gauges.
    for (service, server) in [("identity", &p.identity), ("consent", &p.consent)] {
        let scraped = scrape(metrics_addr(server)).await;
        assert!(
            count(
                &scraped,
                "sharedcare_token_verifications_total",
                &[("service", service), ("result", "valid")]
            ) >= 1.0,
            "{service}"
        );
        assert!(
            scraped
                .value(
                    "sharedcare_db_pool_connections",
                    &[("service", service), ("state", "idle")]
                )
                .is_some(),
            "{service}"
        );
    }
    let (status, _) = scrape_raw(records_metrics, "/elsewhere").await;
    assert_eq!(status, 404);

    // audit down: records' outbox holds the read's event and says for how
    // long delivery has been failing.
    p.audit.shutdown().await;
    let _ = client.get_record(with_token(get(), &gp)).await;
    let down = eventually(records_metrics, "delivery reported failing", |s| {
        count(
            s,
            "sharedcare_outbox_delivery_failing_seconds",
            &[("service", "records")],
        ) > 0.0
    })
    .await;
    assert!(
        count(
            &down,
            "sharedcare_outbox_pending_events",
            &[("service", "records")]
        ) >= 1.0
    );
    assert!(
        count(
            &down,
            "sharedcare_outbox_oldest_event_age_seconds",
            &[("service", "records")]
        ) > 0.0
    );
    p.stop().await;
}
