//! kill -9 under write load loses nothing acknowledged: `sharedcare dev`
//! (all four services in one process, on SQLite) takes CreateRecord calls
//! from several clients and is killed with SIGKILL mid-stream, then started
//! again on the same data dir. Every write acknowledged before the kill is
//! readable with the content that was sent, every one is in the audit log
//! exactly once (the outbox lost and duplicated nothing), and `sharedcare
//! audit verify` passes over the log, before and after.

mod support;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sharedcare_proto::{
    audit::v1::{Action, ListEntriesRequest, Outcome, audit_service_client::AuditServiceClient},
    common::v1::Purpose,
    records::v1::{
        CreateRecordRequest, GetRecordRequest, records_service_client::RecordsServiceClient,
    },
};
use support::{Dev, admin_token, audit_verify, cli, field, free_base_port, principal_token};
use tonic::transport::{Channel, Endpoint};

const WRITERS: usize = 4;
/// Acknowledged writes to wait for before the kill.
const ACKED_BEFORE_KILL: usize = 60;

fn observation(patient_id: &str, writer: usize, n: usize) -> String {
    serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": format!("crash test writer {writer} write {n}")},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "valueQuantity": {"value": n, "unit": "/min"}
    })
    .to_string()
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

fn channel(port: u16) -> Channel {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("url")
        .connect_lazy()
}

struct Setup {
    patient: String,
    clinician: String,
    auditor: String,
}

/// A practice, its PAS, a clinician and an auditor; a registered patient
/// the practice is GP for — through the CLI, as the README does it.
fn set_up(dev: &Dev, data_dir: &Path, base_port: u16) -> Setup {
    let admin = admin_token(dev, data_dir, base_port);
    let principal = |args: &[&str]| principal_token(dev, base_port, &admin, args);
    cli(
        dev,
        base_port,
        Some(&admin),
        &[
            "org",
            "create",
            "--ods",
            "C81001",
            "--name",
            "Crash Surgery",
        ],
    );
    let pas = principal(&[
        "--kind",
        "application",
        "--ods",
        "C81001",
        "--name",
        "Crash PAS",
        "--scope",
        "patients.write",
        "--scope",
        "consent.write",
        "--scope",
        "patients.read",
    ]);
    let clinician = principal(&[
        "--kind", "staff", "--ods", "C81001", "--role", "R8000", "--name", "Dr Crash",
    ]);
    let auditor = principal(support::PLATFORM_AUDITOR);
    let registered = cli(
        dev,
        base_port,
        Some(&pas),
        &[
            "patient",
            "register",
            "--nhs-number",
            "999 000 0018",
            "--given",
            "Kim",
            "--family",
            "Crash",
            "--birth-date",
            "1970-01-01",
        ],
    );
    let patient = field(&registered, "patient_id:").to_owned();
    cli(
        dev,
        base_port,
        Some(&pas),
        &[
            "care-relationship",
            "--patient",
            &patient,
            "--ods",
            "C81001",
            "--kind",
            "registered-gp",
        ],
    );
    Setup {
        patient,
        clinician,
        auditor,
    }
}

fn verify_audit_log(dev: &Dev, data_dir: &Path, base_port: u16, auditor: &str, state: &Path) {
    let verified = audit_verify(dev, data_dir, base_port, auditor, state, &[]);
    assert!(verified.contains("audit log verified"), "{verified}");
}

/// record id → how many CREATE/SUCCESS entries name it.
async fn created_in_audit(audit: &mut AuditServiceClient<Channel>, auditor: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let entries = audit
            .list_entries(bearer(
                ListEntriesRequest {
                    after_sequence: after,
                    page_size: 500,
                },
                auditor,
            ))
            .await
            .expect("list entries")
            .into_inner()
            .entries;
        let Some(last) = entries.last() else {
            return ids;
        };
        after = last.sequence;
        for entry in &entries {
            let event = entry.event.as_ref().expect("event");
            if event.action == Action::Create as i32 && event.outcome == Outcome::Success as i32 {
                ids.push(event.record_id.clone());
            }
        }
    }
}

#[test]
fn kill_9_under_write_load_loses_no_acknowledged_write_or_audit_event() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let state = temp.path().join("audit-verify.state");
    let base_port = free_base_port();
    let mut dev = Dev::start(&data_dir, temp.path(), base_port);
    dev.wait_until_serving(base_port);
    let setup = set_up(&dev, &data_dir, base_port);
    verify_audit_log(&dev, &data_dir, base_port, &setup.auditor, &state);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // (record id, the value it was written with)
    let acked: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let acked = acked.clone();
            let patient = setup.patient.clone();
            let token = setup.clinician.clone();
            runtime.spawn(async move {
                let mut records = RecordsServiceClient::new(channel(base_port + 2));
                for n in 0.. {
                    let request = CreateRecordRequest {
                        patient_id: patient.clone(),
                        resource_json: observation(&patient, writer, n),
                        category: 0,
                        purpose: Purpose::Unspecified as i32,
                        idempotency_key: String::new(),
                    };
                    match records.create_record(bearer(request, &token)).await {
                        Ok(response) => {
                            let record = response.into_inner().record.expect("record");
                            acked.lock().expect("lock").push((record.record_id, n));
                        }
                        // The process is gone: stop writing.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < ACKED_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "too few writes acknowledged\n{}",
            dev.output()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    dev.kill();
    runtime.block_on(async {
        for writer in writers {
            writer.await.expect("writer");
        }
    });
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    let mut dev = Dev::start(&data_dir, temp.path(), base_port);
    dev.wait_until_serving(base_port);
    runtime.block_on(async {
        // Every acknowledged write is there, with the content sent.
        let mut records = RecordsServiceClient::new(channel(base_port + 2));
        for (record_id, n) in &acked {
            let record = records
                .get_record(bearer(
                    GetRecordRequest {
                        patient_id: setup.patient.clone(),
                        record_id: record_id.clone(),
                        purpose: Purpose::Unspecified as i32,
                        break_glass_reason: String::new(),
                    },
                    &setup.clinician,
                ))
                .await
                .unwrap_or_else(|s| panic!("acknowledged record {record_id} is lost: {s:?}"))
                .into_inner()
                .record
                .expect("record");
            let resource: serde_json::Value =
                serde_json::from_str(&record.resource_json).expect("json");
            assert_eq!(resource["valueQuantity"]["value"], *n, "{record_id}");
        }
        // Every acknowledged write reaches the log exactly once, once the
        // outbox has been relayed.
        let mut audit = AuditServiceClient::new(channel(base_port + 3));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logged = created_in_audit(&mut audit, &setup.auditor).await;
            let missing: Vec<&String> = acked
                .iter()
                .map(|(id, _)| id)
                .filter(|id| !logged.contains(id))
                .collect();
            if missing.is_empty() {
                for (id, _) in &acked {
                    let times = logged.iter().filter(|l| *l == id).count();
                    assert_eq!(times, 1, "record {id} is in the audit log {times} times");
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} acknowledged writes never reached the audit log, e.g. {}\n{}",
                missing.len(),
                missing[0],
                dev.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The log still verifies, and extends the head verified before the kill.
    verify_audit_log(&dev, &data_dir, base_port, &setup.auditor, &state);
    let status = dev.terminate();
    assert!(
        status.success(),
        "dev stops cleanly ({status})\n{}",
        dev.output()
    );
}
