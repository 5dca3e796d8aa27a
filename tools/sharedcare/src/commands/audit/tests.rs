//! Tampering with the stored log, directly in the database, is caught by
//! `sharedcare audit verify` and the first bad entry named — on SQLite and
//! on PostgreSQL. The verifier talks to a real audit service over a socket.

use std::sync::Arc;

use prost::Message;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use sharedcare_audit::{
    SCOPE_APPEND, SCOPE_READ,
    domain::{checkpoint::LogSigner, merkle::Frontier},
    heads::TreeHeads,
    store::{AuditLogStore, SqlStore},
};
use sharedcare_kit::{
    access::Capability,
    server::MessageLimits,
    testing::{TestAuthority, TestDatabase, TestServer, TestToken, spawn, with_token},
};
use sharedcare_proto::{
    audit::v1::{Action, AppendRequest, AuditEvent, Outcome},
    common::v1::{Actor, PrincipalKind, Purpose},
};

use super::*;

const ENTRIES: u64 = 8;

struct Log {
    db: DatabaseConnection,
    store: Arc<dyn AuditLogStore>,
    key: LogVerifierKey,
    auditor: Auditor,
    state: tempfile::TempDir,
    _server: TestServer,
}

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        event_id: format!("ev-{n}"),
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_750_000_000 + n as i64,
            nanos: 0,
        }),
        actor: Some(Actor {
            principal_id: "clinician-1".into(),
            kind: PrincipalKind::Staff as i32,
            organisation_ods_code: "A81001".into(),
            role: "R8000".into(),
            patient_id: String::new(),
            ..Actor::default()
        }),
        patient_id: format!("patient-{}", n % 3),
        action: Action::Read as i32,
        resource_type: "Observation".into(),
        purpose: Purpose::DirectCare as i32,
        outcome: Outcome::Success as i32,
        source_service: "records".into(),
        ..Default::default()
    }
}

impl Log {
    /// A log of [`ENTRIES`] entries behind a real audit server, verified
    /// once (so its head is kept in the state file).
    async fn start(url: &str) -> Log {
        let store: Arc<dyn AuditLogStore> =
            Arc::new(SqlStore::connect(url, 4).await.expect("connect"));
        let signer = LogSigner::new(
            "sharedcare.test/audit",
            ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        )
        .expect("signer");
        let key = signer.verifier();
        let authority = TestAuthority::new();
        let server = spawn(sharedcare_audit::spec(
            store.clone(),
            TreeHeads::new(store.clone(), signer),
            authority.verifier(),
            MessageLimits { max_bytes: 4 << 20 },
        ))
        .await;
        let appender = authority.token(PrincipalKind::Service, "X26", "", &[SCOPE_APPEND]);
        let mut client = AuditServiceClient::new(server.channel.clone());
        for n in 1..=ENTRIES {
            client
                .append(with_token(
                    AppendRequest {
                        event: Some(event(n)),
                    },
                    &appender,
                ))
                .await
                .expect("append");
        }
        let token = authority.sign(TestToken {
            kind: PrincipalKind::Staff,
            org: "X26",
            role: "platform-auditor",
            scopes: &[SCOPE_READ],
            purposes: &[Purpose::DirectCare],
            capabilities: &[Capability::PlatformAuditor],
            patient: "",
        });
        let mut log = Log {
            db: Database::connect(url).await.expect("connect"),
            store,
            key,
            auditor: Auditor { client, token },
            state: tempfile::tempdir().expect("tempdir"),
            _server: server,
        };
        let verified = log
            .verify(&[1, ENTRIES as i64])
            .await
            .expect("an honest log verifies");
        assert_eq!(verified.head.size, ENTRIES);
        assert_eq!(verified.proved, vec![1, ENTRIES]);
        log
    }

    async fn verify(&mut self, entries: &[i64]) -> anyhow::Result<Verified> {
        let state = self.state.path().join("last-head");
        self.auditor
            .verify_and_keep(&self.key, &state, entries)
            .await
    }

    async fn failure(&mut self) -> Failure {
        let err = self.verify(&[]).await.expect_err("tampering is caught");
        err.downcast_ref::<Failure>()
            .unwrap_or_else(|| panic!("a failure of the log, not {err:#}"))
            .clone()
    }

    async fn sql(&self, statements: &[&str]) {
        for sql in statements {
            self.db.execute_unprepared(sql).await.expect(sql);
        }
    }

    /// Rebuilds every node from the (tampered) entries, as someone with
    /// database access covering their tracks would.
    async fn rebuild_tree(&self) {
        let entries = self.store.entries(0, 1000).await.expect("entries");
        let leaves: Vec<_> = entries.iter().map(|e| e.leaf_hash()).collect();
        let formed = Frontier::empty().extend(&leaves).expect("tree");
        self.sql(&["DELETE FROM audit_nodes"]).await;
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => "INSERT INTO audit_nodes (level, idx, hash) VALUES ($1, $2, $3)",
            _ => "INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)",
        };
        for (addr, hash) in formed {
            self.db
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    sql,
                    [
                        i16::from(addr.level).into(),
                        (addr.index as i64).into(),
                        hash.to_vec().into(),
                    ],
                ))
                .await
                .expect("node");
        }
    }
}

const COPY_ROW: &str = "INSERT INTO audit_entries (sequence, event_id, patient_id, record_time_us, event) \
     SELECT {at}, 'forged', patient_id, record_time_us, event FROM audit_entries WHERE sequence = 1";

async fn tampering_is_caught(url: impl AsyncFn() -> Option<(String, Option<TestDatabase>)>) {
    let forged_at = |at: u64| COPY_ROW.replace("{at}", &at.to_string());
    let cases: Vec<(&str, Vec<String>, Failure)> = vec![
        (
            "an event's bytes edited",
            vec!["UPDATE audit_entries SET event = (SELECT event FROM audit_entries WHERE sequence = 1) WHERE sequence = 3".into()],
            Failure::Altered(3),
        ),
        (
            "a row moved to another patient",
            vec!["UPDATE audit_entries SET patient_id = 'patient-x' WHERE sequence = 4".into()],
            Failure::Altered(4),
        ),
        (
            "a record time edited",
            vec!["UPDATE audit_entries SET record_time_us = record_time_us + 1 WHERE sequence = 5".into()],
            Failure::Altered(5),
        ),
        (
            "a row deleted",
            vec!["DELETE FROM audit_entries WHERE sequence = 6".into()],
            Failure::Missing(6),
        ),
        (
            "two rows swapped",
            vec![
                "UPDATE audit_entries SET sequence = -2 WHERE sequence = 2".into(),
                "UPDATE audit_entries SET sequence = 2 WHERE sequence = 7".into(),
                "UPDATE audit_entries SET sequence = 7 WHERE sequence = -2".into(),
            ],
            Failure::Altered(2),
        ),
        (
            "a row inserted at the end",
            vec![forged_at(ENTRIES + 1)],
            Failure::Unsigned(ENTRIES + 1),
        ),
        (
            "a row inserted in the middle",
            vec![
                "UPDATE audit_entries SET sequence = -(sequence + 1) WHERE sequence >= 5".into(),
                "UPDATE audit_entries SET sequence = -sequence WHERE sequence < 0".into(),
                forged_at(5),
            ],
            Failure::Altered(5),
        ),
        (
            "the log rolled back",
            vec![
                "DELETE FROM audit_entries WHERE sequence > 4".into(),
                "DELETE FROM audit_nodes WHERE (idx + 1) * (1 << level) > 4".into(),
            ],
            Failure::Rollback { before: ENTRIES, now: 4 },
        ),
    ];
    for (what, statements, expected) in cases {
        let Some((url, db)) = url().await else { return };
        let mut log = Log::start(&url).await;
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        log.sql(&statements).await;
        assert_eq!(log.failure().await, expected, "{what}");
        // The message names the entry.
        assert!(expected.to_string().contains(char::is_numeric), "{what}");
        if let Some(db) = db {
            db.cleanup().await;
        }
    }

    // An entry edited and the whole tree rebuilt to match: the log is
    // self-consistent, but no longer extends the head verified before.
    let Some((url, db)) = url().await else { return };
    let mut log = Log::start(&url).await;
    log.sql(&["UPDATE audit_entries SET record_time_us = record_time_us + 1 WHERE sequence = 2"])
        .await;
    log.rebuild_tree().await;
    assert_eq!(
        log.failure().await,
        Failure::Rewritten {
            before: ENTRIES,
            now: ENTRIES
        }
    );
    // A state file edited to forget the last head does not verify.
    std::fs::write(
        log.state.path().join("last-head"),
        "sharedcare.test/audit\n1\nAAAA\n\n",
    )
    .expect("write");
    let err = log.verify(&[]).await.expect_err("refused");
    assert!(err.to_string().contains("does not verify"), "{err:#}");
    if let Some(db) = db {
        db.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_caught_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = std::sync::atomic::AtomicUsize::new(0);
    tampering_is_caught(async || {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("audit-{i}.db"));
        Some((format!("sqlite://{}?mode=rwc", path.display()), None))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_caught_on_postgres() {
    let n = std::sync::atomic::AtomicUsize::new(0);
    tampering_is_caught(async || {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let db = TestDatabase::postgres(&format!("audit_tamper_{i}")).await?;
        Some((db.url().to_owned(), Some(db)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_log_verifies_again_and_a_wrong_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("audit.db").display()
    );
    let mut log = Log::start(&url).await;
    // More entries: the new head extends the kept one.
    let appended = log
        .store
        .append(sharedcare_audit::domain::EncodedEvent {
            event_id: sharedcare_audit::domain::EventId::parse("event_id", "ev-9").expect("id"),
            patient_id: sharedcare_audit::domain::PatientId::parse("patient_id", "patient-0")
                .expect("patient"),
            bytes: event(9).encode_to_vec(),
            break_glass_by: None,
        })
        .await
        .expect("append");
    assert_eq!(appended.entry.sequence, ENTRIES + 1);
    let verified = log.verify(&[5]).await.expect("verifies");
    assert_eq!(verified.head.size, ENTRIES + 1);
    assert_eq!(verified.previous, Some(ENTRIES));
    assert_eq!(verified.proved, vec![5]);
    // Another log's key: the head itself is refused.
    let other = LogSigner::new(
        "sharedcare.test/audit",
        ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
    )
    .expect("signer")
    .verifier();
    let state = log.state.path().join("other");
    let err = log
        .auditor
        .verify_and_keep(&other, &state, &[])
        .await
        .expect_err("refused");
    assert!(
        matches!(err.downcast_ref::<Failure>(), Some(Failure::BadHead(_))),
        "{err:#}"
    );
    // An entry beyond the log.
    let err = log.verify(&[100]).await.expect_err("refused");
    assert!(err.to_string().contains("--entry 100"), "{err:#}");
}
