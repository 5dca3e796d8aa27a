//! What the crash tests share: how long they run, the seed of their
//! choices, and the checks after each round, made as an outsider would
//! make them — through the APIs, the audit log and `sharedcare audit
//! verify` — plus a look at the services' outbox tables:
//!
//! - every acknowledged write, and every record an acknowledged read
//!   returned, is readable with the content acknowledged;
//! - every acknowledged write is in the audit log exactly once, and every
//!   acknowledged read is in it (no fewer READ entries than reads
//!   acknowledged, no more than were attempted);
//! - no event is in the log twice (the outboxes deliver at least once;
//!   audit takes each event id once);
//! - every outbox drains: nothing lost in one, nothing parked;
//! - `sharedcare audit verify` passes, and each run extends the tree head
//!   the last one verified.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use futures::StreamExt;
use sea_orm::{ConnectionTrait, Statement};
use sharedcare_kit::testing::with_token;
use sharedcare_proto::{
    audit::v1::{Action, ListEntriesRequest, Outcome, audit_service_client::AuditServiceClient},
    common::v1::{PrincipalKind, Purpose},
    identity::v1::CreatePrincipalRequest,
    records::v1::{GetRecordRequest, records_service_client::RecordsServiceClient},
};
use tokio::sync::Mutex;

use crate::{
    Service,
    load::{Ack, Loaded, Scenario},
    processes::{Processes, binary},
};

/// Rounds (crash rounds; database restarts) at full length, e.g. 20; the
/// short form when unset.
pub const ROUNDS_VAR: &str = "SHAREDCARE_CRASH_ROUNDS";
/// The seed of a run's random choices, to replay it.
pub const SEED_VAR: &str = "SHAREDCARE_CRASH_SEED";

/// The bench's practice (`sharedcare bench` creates it; the reader works
/// there, so it may read what the bench wrote).
const BENCH_PRACTICE: &str = "BENCH1";
/// The outbox tables, by the service whose database holds them.
const OUTBOXES: [(Service, &str); 4] = [
    (Service::Identity, "identity_audit_outbox"),
    (Service::Identity, "identity_gp_registrations"),
    (Service::Consent, "consent_audit_outbox"),
    (Service::Records, "records_audit_outbox"),
];
/// How long the outboxes get to drain after a round.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// `SHAREDCARE_CRASH_ROUNDS`, or `short`.
pub fn rounds(short: usize) -> usize {
    match std::env::var(ROUNDS_VAR) {
        Ok(n) => n
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{ROUNDS_VAR}={n} is not a number of rounds")),
        Err(_) => short,
    }
}

/// `SHAREDCARE_CRASH_SEED`, or a fresh one; said on stderr either way.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_VAR) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={s} is not a number")),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {seed} (replay with {SEED_VAR}={seed})");
    seed
}

/// The median and the largest of `values`.
pub fn median_max(values: &[Duration]) -> (Duration, Duration) {
    let mut sorted = values.to_vec();
    sorted.sort();
    (
        sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
        sorted.last().copied().unwrap_or_default(),
    )
}

/// What the audit log held at the last look, read incrementally.
#[derive(Default)]
struct Scan {
    after: i64,
    event_ids: HashSet<String>,
    duplicates: Vec<String>,
    /// record id → CREATE/SUCCESS entries naming it.
    creates: HashMap<String, u32>,
    /// record id → READ/SUCCESS entries naming it, by anyone but the
    /// observer's reader.
    reads: HashMap<String, u64>,
}

/// What a check counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checked {
    pub writes: usize,
    pub reads: usize,
    pub entries: i64,
}

/// The test's own principals and state: an auditor (lists the log, runs
/// `audit verify`) and a reader at the bench's practice (reads back what
/// was acknowledged).
pub struct Observer {
    auditor: String,
    reader: String,
    reader_id: String,
    state: PathBuf,
    scan: Mutex<Scan>,
    _dir: tempfile::TempDir,
}

impl Observer {
    pub async fn new(platform: &Processes) -> Self {
        let admin = platform.admin_token().await;
        // Made here (the bench finds it made) so the reader can work there.
        platform.organisation(&admin, BENCH_PRACTICE).await;
        let auditor = platform.staff(&admin, "X26", "platform-auditor").await;
        let (reader_id, client_id, secret) = platform
            .credentials(
                &admin,
                CreatePrincipalRequest {
                    kind: PrincipalKind::Staff as i32,
                    display_name: "crash test reader".into(),
                    organisation_ods_code: BENCH_PRACTICE.into(),
                    role: "R8000".into(),
                    ..Default::default()
                },
            )
            .await;
        let reader = platform.token(&client_id, &secret).await;
        let dir = tempfile::tempdir().expect("temp dir");
        Observer {
            auditor,
            reader,
            reader_id,
            state: dir.path().join("audit-verify.state"),
            scan: Mutex::default(),
            _dir: dir,
        }
    }

    /// Every check above, after `loads` (this round's) stopped; `earlier`
    /// are the acknowledgements of earlier rounds, read back again too.
    pub async fn check(
        &self,
        platform: &Processes,
        loads: &[Loaded],
        earlier: &[Ack],
    ) -> Result<Checked, String> {
        drained(platform).await?;
        let entries = self.audited(platform, loads).await?;
        let acks: Vec<&Ack> = loads.iter().flat_map(|l| &l.acks).chain(earlier).collect();
        self.readable(platform, &acks).await?;
        self.verify(platform)?;
        Ok(Checked {
            writes: count(loads, Scenario::CreateRecord),
            reads: count(loads, Scenario::GetRecord),
            entries,
        })
    }

    /// Each acknowledged record, once, read back as the reader: same
    /// version, same content.
    async fn readable(&self, platform: &Processes, acks: &[&Ack]) -> Result<(), String> {
        let mut distinct: BTreeMap<(&str, i64), &Ack> = BTreeMap::new();
        for ack in acks {
            if let Some(seen) = distinct.insert((&ack.record_id, ack.version), ack)
                && seen.sha256 != ack.sha256
            {
                return Err(format!(
                    "record {} version {} was acknowledged with two contents",
                    ack.record_id, ack.version
                ));
            }
        }
        let records = RecordsServiceClient::new(platform.records.clone());
        let failures: Vec<String> = futures::stream::iter(distinct.into_values())
            .map(|ack| {
                let mut records = records.clone();
                async move {
                    let answer = records
                        .get_record(with_token(
                            GetRecordRequest {
                                patient_id: ack.patient_id.clone(),
                                record_id: ack.record_id.clone(),
                                purpose: Purpose::Unspecified as i32,
                                break_glass_reason: String::new(),
                            },
                            &self.reader,
                        ))
                        .await;
                    let record = match answer {
                        Ok(answer) => answer.into_inner().record.unwrap_or_default(),
                        Err(status) => {
                            return Some(format!(
                                "acknowledged record {} is not readable: {:?} {}",
                                ack.record_id,
                                status.code(),
                                status.message()
                            ));
                        }
                    };
                    let sha = sha256(&record.resource_json);
                    (record.version != ack.version || sha != ack.sha256).then(|| {
                        format!(
                            "record {} reads as version {} ({sha}), acknowledged as version {} \
                             ({})",
                            ack.record_id, record.version, ack.version, ack.sha256
                        )
                    })
                }
            })
            .buffer_unordered(8)
            .filter_map(|failure| async move { failure })
            .collect()
            .await;
        match failures.first() {
            None => Ok(()),
            Some(first) => Err(format!(
                "{} acknowledged records are lost or changed, e.g. {first}",
                failures.len()
            )),
        }
    }

    /// Reads the log on from the last look, then checks the loads' calls
    /// against it; the log's length.
    async fn audited(&self, platform: &Processes, loads: &[Loaded]) -> Result<i64, String> {
        let mut scan = self.scan.lock().await;
        let mut audit = AuditServiceClient::new(platform.audit.clone());
        loop {
            let entries = audit
                .list_entries(with_token(
                    ListEntriesRequest {
                        after_sequence: scan.after,
                        page_size: 500,
                    },
                    &self.auditor,
                ))
                .await
                .map_err(|s| format!("listing the audit log: {s:?}"))?
                .into_inner()
                .entries;
            let Some(last) = entries.last() else {
                break;
            };
            scan.after = last.sequence;
            for event in entries.into_iter().filter_map(|e| e.event) {
                if !scan.event_ids.insert(event.event_id.clone()) {
                    scan.duplicates.push(event.event_id.clone());
                }
                let success = event.outcome == Outcome::Success as i32;
                let by_reader = event
                    .actor
                    .as_ref()
                    .is_some_and(|a| a.principal_id == self.reader_id);
                if success && event.action == Action::Create as i32 {
                    *scan.creates.entry(event.record_id).or_default() += 1;
                } else if success && event.action == Action::Read as i32 && !by_reader {
                    *scan.reads.entry(event.record_id).or_default() += 1;
                }
            }
        }
        if let Some(id) = scan.duplicates.first() {
            return Err(format!(
                "{} events are in the audit log more than once, e.g. {id}",
                scan.duplicates.len()
            ));
        }
        if let Some((id, n)) = scan.creates.iter().find(|(_, n)| **n > 1) {
            return Err(format!(
                "record {id} was created {n} times in the audit log"
            ));
        }
        for load in loads {
            match load.scenario {
                Scenario::CreateRecord => {
                    let missing: Vec<&str> = load
                        .acks
                        .iter()
                        .filter(|a| !scan.creates.contains_key(&a.record_id))
                        .map(|a| a.record_id.as_str())
                        .collect();
                    if let Some(first) = missing.first() {
                        return Err(format!(
                            "{} acknowledged writes are not in the audit log, e.g. {first}",
                            missing.len()
                        ));
                    }
                }
                Scenario::GetRecord => {
                    let mut acked: HashMap<&str, u64> = HashMap::new();
                    for ack in &load.acks {
                        *acked.entry(&ack.record_id).or_default() += 1;
                    }
                    for (record, acked) in acked {
                        let logged = scan.reads.get(record).copied().unwrap_or(0);
                        if logged < acked || logged > load.attempted() {
                            return Err(format!(
                                "record {record}: {acked} reads acknowledged, {} attempted, \
                                 {logged} in the audit log",
                                load.attempted()
                            ));
                        }
                    }
                }
            }
        }
        Ok(scan.after)
    }

    /// `sharedcare audit verify` as the auditor, with the state file of the
    /// last run.
    fn verify(&self, platform: &Processes) -> Result<(), String> {
        let key = platform
            .layout()
            .data_dir()
            .join(sharedcare_audit::VERIFIER_KEY_FILE);
        let mut command = Command::new(binary("sharedcare"));
        for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("SHAREDCARE_")) {
            command.env_remove(var);
        }
        let output = command
            .args(["--base-port", &platform.base_port().to_string()])
            .args(["audit", "verify", "--public-key-file"])
            .arg(key)
            .arg("--state-file")
            .arg(&self.state)
            .env("SHAREDCARE_TOKEN", &self.auditor)
            .output()
            .map_err(|e| format!("running sharedcare audit verify: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && stdout.contains("audit log verified") {
            return Ok(());
        }
        Err(format!(
            "sharedcare audit verify failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn count(loads: &[Loaded], scenario: Scenario) -> usize {
    loads
        .iter()
        .filter(|l| l.scenario == scenario)
        .map(|l| l.acks.len())
        .sum()
}

pub fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Waits (bounded) until every outbox table is empty: everything in one
/// was delivered, and nothing was parked as undeliverable.
async fn drained(platform: &Processes) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let mut waiting = Vec::new();
        for (service, table) in OUTBOXES {
            let url = platform.layout().db_url(service);
            let rows = rows(&url, table).await?;
            if rows > 0 {
                waiting.push(format!("{table}: {rows}"));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            return Err(format!(
                "outboxes not drained within {DRAIN_TIMEOUT:?}: {}",
                waiting.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rows(url: &str, table: &str) -> Result<i64, String> {
    let db = sea_orm::Database::connect(url)
        .await
        .map_err(|e| format!("connecting to check {table}: {e}"))?;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .map_err(|e| format!("counting {table}: {e}"))?;
    db.close().await.ok();
    row.and_then(|r| r.try_get::<i64>("", "n").ok())
        .ok_or_else(|| format!("counting {table}: no count"))
}
