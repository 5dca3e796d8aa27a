//! PostgreSQL restarted under load: the four services as processes on a
//! PostgreSQL server of the test's own, `sharedcare bench` writing and
//! reading, and the server shut down immediately (every connection
//! dropped, as a crash or a failover drops them), held down, and started
//! again on the same port. While it is down every service answers a write
//! UNAVAILABLE — promptly, not after a hang, and never INTERNAL or UNKNOWN;
//! once it is back every service takes writes again by itself within 5 s;
//! nothing acknowledged is lost (the checks of `sharedcare_tests::crash`);
//! and no service process ever exits or restarts.
//!
//! Runs where the PostgreSQL tests run (`SHAREDCARE_TEST_DATABASE_URL`
//! set), with the server programs (`initdb`, `postgres`) of that machine.
//! Two restarts by default; `SHAREDCARE_CRASH_ROUNDS` restarts at full
//! length.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use sharedcare_kit::testing::{TEST_DATABASE_VAR, with_token};
use sharedcare_proto::{
    audit::v1::{
        Action, AppendRequest, AuditEvent, Outcome, audit_service_client::AuditServiceClient,
    },
    common::v1::{Actor, PrincipalKind, Purpose},
    consent::v1::{self as consent, consent_service_client::ConsentServiceClient},
    identity::v1::{CreateOrganisationRequest, identity_service_client::IdentityServiceClient},
    records::v1::records_service_client::RecordsServiceClient,
};
use sharedcare_tests::{
    Backend, Layout, RECORDS_SECRET, Service, allergy,
    crash::{self, Observer, median_max},
    load::{Errors, Loaded, WritesAndReads},
    postgres::{PrivatePostgres, server_bin_dir},
    processes::Processes,
};
use tonic::{Code, Status};

/// Restarts when `SHAREDCARE_CRASH_ROUNDS` is not set.
const SHORT_RESTARTS: usize = 2;
/// How long the server stays down at least.
const HOLD_DOWN: Duration = Duration::from_secs(2);
/// The bound: every service takes writes again within this of the
/// server accepting connections.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// The services' request timeout (`server.request_timeout_ms`, as
/// deployed): no answer while the database is down may take longer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The client's own bound on a probe, beyond the request timeout, so a
/// hang shows as one.
const PROBE_TIMEOUT: Duration = Duration::from_secs(40);
/// How long the load runs before the server goes down, and after every
/// service took a write again.
const LOAD_AROUND: Duration = Duration::from_millis(500);

/// A write to each service, as the platform's callers make them.
struct Probes {
    admin: String,
    gp: String,
    patient: String,
    patient_id: String,
    records_service: String,
    next: AtomicU32,
}

impl Probes {
    async fn new(platform: &Processes) -> Self {
        let admin = platform.admin_token().await;
        platform.organisation(&admin, "A81001").await;
        let gp_pas = platform.pas(&admin, "A81001").await;
        let gp = platform.staff(&admin, "A81001", "R8000").await;
        let (patient_id, _) = platform.cared_for_patient(&gp_pas, &gp).await;
        let patient = platform.patient(&admin, &patient_id).await;
        let records_service = platform.token("records", RECORDS_SECRET).await;
        Probes {
            admin,
            gp,
            patient,
            patient_id,
            records_service,
            next: AtomicU32::new(rand::random::<u32>() % 50_000),
        }
    }

    /// One write to `service`: identity creates an organisation, consent
    /// records the patient's directive, records stores an allergy, audit
    /// appends an event.
    async fn write(&self, platform: &Processes, service: Service) -> Result<(), Status> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let call = async {
            match service {
                Service::Identity => IdentityServiceClient::new(platform.identity.clone())
                    .create_organisation(with_token(
                        CreateOrganisationRequest {
                            ods_code: format!("P{:05}", n % 100_000),
                            name: format!("Probe organisation {n}"),
                        },
                        &self.admin,
                    ))
                    .await
                    .map(drop),
                Service::Consent => ConsentServiceClient::new(platform.consent.clone())
                    .record_directive(with_token(
                        consent::RecordDirectiveRequest {
                            directive: Some(consent::Directive {
                                patient_id: self.patient_id.clone(),
                                effect: consent::Effect::Permit as i32,
                                purposes: vec![Purpose::Research as i32],
                                note: format!("probe {n}"),
                                ..Default::default()
                            }),
                        },
                        &self.patient,
                    ))
                    .await
                    .map(drop),
                Service::Records => RecordsServiceClient::new(platform.records.clone())
                    .create_record(with_token(allergy(&self.patient_id), &self.gp))
                    .await
                    .map(drop),
                Service::Audit => AuditServiceClient::new(platform.audit.clone())
                    .append(with_token(
                        AppendRequest {
                            event: Some(self.event()),
                        },
                        &self.records_service,
                    ))
                    .await
                    .map(drop),
            }
        };
        tokio::time::timeout(PROBE_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the probe's own bound")))
    }

    fn event(&self) -> AuditEvent {
        AuditEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            occur_time: Some(std::time::SystemTime::now().into()),
            actor: Some(Actor {
                principal_id: "probe".into(),
                kind: PrincipalKind::Staff as i32,
                organisation_ods_code: "A81001".into(),
                role: "R8000".into(),
                ..Default::default()
            }),
            patient_id: self.patient_id.clone(),
            action: Action::Read as i32,
            resource_type: "AllergyIntolerance".into(),
            record_id: format!("probe-{}", uuid::Uuid::new_v4()),
            purpose: Purpose::DirectCare as i32,
            outcome: Outcome::Success as i32,
            source_service: "records".into(),
            ..Default::default()
        }
    }
}

/// One restart's figures.
struct Restart {
    /// Per service: how long its write took while the server was down.
    outage: Vec<(Service, Duration)>,
    /// Per service: from the server accepting connections to its first
    /// write that succeeded.
    recovery: Vec<(Service, Duration)>,
    down_for: Duration,
    loads: Vec<Loaded>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_ride_out_a_postgres_restart() {
    if std::env::var(TEST_DATABASE_VAR).is_err() {
        eprintln!("SKIPPED services_ride_out_a_postgres_restart: {TEST_DATABASE_VAR} is not set");
        return;
    }
    let bin = server_bin_dir().unwrap_or_else(|| {
        panic!(
            "{TEST_DATABASE_VAR} is set, but PostgreSQL's server programs (initdb, postgres) \
             are not found (pg_config --bindir, /usr/lib/postgresql/<version>/bin): this test \
             runs a server of its own"
        )
    });
    let test = "postgres restarts";
    let restarts = crash::rounds(SHORT_RESTARTS);
    let files = tempfile::tempdir().expect("temp dir");
    let mut server = PrivatePostgres::start(bin).await;
    let mut layout = Layout::new(Backend::PostgresAt(server.url()), None);
    // As deployed (the tests' default is the same): an answer is due
    // within it whatever the database does.
    layout.set(
        "SHAREDCARE_SERVER__REQUEST_TIMEOUT_MS",
        &REQUEST_TIMEOUT.as_millis().to_string(),
    );
    let mut platform = Processes::start_with(layout).await;
    let observer = Observer::new(&platform).await;
    let probes = Probes::new(&platform).await;
    let pids = platform.pids();
    let fail = |platform: &Processes, restart: usize, what: String| -> ! {
        panic!("{test}, restart {restart}: {what}\n{}", platform.logs())
    };

    let mut figures = Vec::new();
    let mut all_acks = Vec::new();
    for restart in 1..=restarts {
        let label = format!("restart{restart}");
        let load = WritesAndReads::start(&platform, files.path(), &label).await;
        tokio::time::sleep(LOAD_AROUND).await;

        server.stop_immediately().await;
        let down = Instant::now();
        // While it is down, each service says so.
        let outage = futures::future::join_all(Service::ALL.map(|service| {
            let probes = &probes;
            let platform = &platform;
            async move {
                let started = Instant::now();
                (
                    service,
                    probes.write(platform, service).await,
                    started.elapsed(),
                )
            }
        }))
        .await;
        for (service, answer, took) in &outage {
            match answer {
                Err(status) if status.code() == Code::Unavailable && *took <= REQUEST_TIMEOUT => {}
                other => fail(
                    &platform,
                    restart,
                    format!(
                        "{service}, written to while PostgreSQL was down, answered {other:?} \
                         after {took:?} (UNAVAILABLE within {REQUEST_TIMEOUT:?} expected)"
                    ),
                ),
            }
        }
        for (service, answer, took) in &outage {
            if let Err(status) = answer {
                eprintln!(
                    "{test}: restart {restart}: {service} while down, after {:.2} s: {}",
                    took.as_secs_f64(),
                    status.message()
                );
            }
        }
        tokio::time::sleep(HOLD_DOWN.saturating_sub(down.elapsed())).await;

        server.start_again().await;
        let down_for = down.elapsed();
        let back = Instant::now();
        // Each service takes writes again, by itself.
        let recovery = futures::future::join_all(Service::ALL.map(|service| {
            let probes = &probes;
            let platform = &platform;
            async move {
                loop {
                    let answer = probes.write(platform, service).await;
                    if answer.is_ok() || back.elapsed() > RECOVERY_BOUND * 4 {
                        return (service, answer, back.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }))
        .await;
        for (service, answer, took) in &recovery {
            if answer.is_err() || *took > RECOVERY_BOUND {
                fail(
                    &platform,
                    restart,
                    format!(
                        "{service} took a write {took:?} after PostgreSQL was back \
                         (within {RECOVERY_BOUND:?} expected); its last answer: {answer:?}"
                    ),
                );
            }
        }
        tokio::time::sleep(LOAD_AROUND).await;
        let loads = load.stop().await;

        // No service exited, none was restarted.
        if let Err(e) = platform.check_running() {
            fail(&platform, restart, e);
        }
        assert_eq!(
            platform.pids(),
            pids,
            "the services' processes are the same"
        );
        let checked = match observer.check(&platform, &loads, &[]).await {
            Ok(checked) => checked,
            Err(e) => fail(&platform, restart, e),
        };
        let round = Restart {
            outage: outage.iter().map(|(s, _, t)| (*s, *t)).collect(),
            recovery: recovery.iter().map(|(s, _, t)| (*s, *t)).collect(),
            down_for,
            loads,
        };
        eprintln!(
            "{test}: restart {restart}/{restarts}: down {:.2} s; writes while down answered \
             UNAVAILABLE after {}; a write succeeded again after {}; load acknowledged {} \
             writes, {} reads, errors {}; checks passed",
            round.down_for.as_secs_f64(),
            per_service(&round.outage),
            per_service(&round.recovery),
            checked.writes,
            checked.reads,
            Errors::of(&round.loads),
        );
        all_acks.extend(round.loads.iter().flat_map(|l| l.acks.clone()));
        figures.push(round);
    }

    if let Err(e) = observer.check(&platform, &[], &all_acks).await {
        fail(&platform, restarts, format!("after the last restart: {e}"));
    }
    for service in Service::ALL {
        let times: Vec<Duration> = figures
            .iter()
            .flat_map(|r| &r.recovery)
            .filter(|(s, _)| *s == service)
            .map(|(_, t)| *t)
            .collect();
        let (median, max) = median_max(&times);
        eprintln!(
            "{test}: {service}: a write succeeded again after PostgreSQL was back: median \
             {:.2} s, max {:.2} s over {} restarts",
            median.as_secs_f64(),
            max.as_secs_f64(),
            times.len()
        );
    }
    platform.stop().await;
    drop(server);
}

/// `identity 0.12 s, consent 0.30 s, ...`.
fn per_service(times: &[(Service, Duration)]) -> String {
    times
        .iter()
        .map(|(s, t)| format!("{s} {:.2} s", t.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}
