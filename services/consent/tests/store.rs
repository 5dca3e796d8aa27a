//! The store conformance suite: each behaviour is written once against
//! `&dyn ConsentStore` and runs on every backend (`kit::testing`): memory,
//! SQLite and PostgreSQL (when SHAREDCARE_TEST_DATABASE_URL is set;
//! otherwise it says it was skipped), bare and inside the cache.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Duration, TimeZone, Utc};
use sharedcare_consent::{
    config::ConsentConfig,
    domain::{
        CareRelationship, CareRelationshipKind, Directive, DirectiveKind, DirectiveSource, Effect,
        OdsCode, PatientId, Period, Provenance, Purpose, RecordCategory,
    },
    store::{self, Backend, Cached, ConsentStore, LoggedChange, OUTBOX_TABLE, SqlStore},
};
use sharedcare_kit::{
    error::Code,
    outbox::{Outbox, OutboxSettings},
    testing::{
        MemoryAudit, TestBackend, TestDatabase, on_every_backend, outbox_drained, outbox_rows,
    },
};
use sharedcare_proto::audit::v1::AuditEvent;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0)
        .single()
        .expect("valid")
}

/// A change's audit event (consent stores it in its outbox with the change).
fn audit() -> AuditEvent {
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        ..AuditEvent::default()
    }
}

fn patient(id: &str) -> PatientId {
    PatientId::parse("patient_id", id).expect("valid")
}

fn ods(code: &str) -> OdsCode {
    OdsCode::parse("ods", code).expect("valid")
}

fn relationship(
    patient_id: &str,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
) -> CareRelationship {
    CareRelationship {
        id: uuid::Uuid::now_v7().to_string(),
        patient_id: patient(patient_id),
        organisation: ods("A81001"),
        kind: CareRelationshipKind::HospitalEpisode,
        period: Period { start, end },
        staff_member: None,
        team: None,
        reason: None,
        recorded_by: "principal-1".into(),
        recorded_by_organisation: ods("RR8"),
        ended_by: None,
    }
}

fn directive(patient_id: &str, created_at: DateTime<Utc>) -> Directive {
    Directive {
        id: uuid::Uuid::now_v7().to_string(),
        patient_id: patient(patient_id),
        kind: DirectiveKind::Patient,
        effect: Effect::Deny,
        purposes: vec![],
        organisation: None,
        staff_member: None,
        staff_role: None,
        categories: vec![],
        period: Period {
            start: created_at,
            end: None,
        },
        note: String::new(),
        created_at,
        revoked_at: None,
        provenance: Provenance {
            recorded_by: "staff-1".into(),
            organisation: Some(ods("A81001")),
            source: DirectiveSource::Clinician,
        },
        revoked_by: None,
    }
}

async fn relationships_read_back_newest_first_and_per_patient(store: &dyn ConsentStore) {
    let older = relationship(
        "p-1",
        t0() - Duration::days(400),
        Some(t0() - Duration::days(30)),
    );
    // A break-glass grant keeps its staff member and reason; a team is kept.
    let newest = CareRelationship {
        kind: CareRelationshipKind::BreakGlass,
        staff_member: Some("staff-9".into()),
        reason: Some("unconscious in A&E — “no ID”".into()),
        ..relationship("p-1", t0() + Duration::microseconds(1_500), None)
    };
    let newer = CareRelationship {
        team: Some("Community mental health team (north)".into()),
        ..relationship("p-1", t0() + Duration::microseconds(500), None)
    };
    let someone_else = relationship("p-2", t0(), None);
    for r in [&older, &newest, &newer, &someone_else] {
        let stored = store
            .insert_relationship(r.clone(), audit())
            .await
            .expect("insert");
        assert_eq!(&stored, r);
    }
    let listed = store
        .list_relationships(&patient("p-1"))
        .await
        .expect("list");
    assert_eq!(listed, vec![newest, newer, older]);
    assert_eq!(
        store
            .list_relationships(&patient("p-2"))
            .await
            .expect("list"),
        vec![someone_else]
    );
    assert!(
        store
            .list_relationships(&patient("nobody"))
            .await
            .expect("list")
            .is_empty()
    );
}

async fn directives_keep_every_field(store: &dyn ConsentStore) {
    let full = Directive {
        effect: Effect::Permit,
        purposes: vec![Purpose::Research, Purpose::Planning],
        organisation: Some(ods("RR8")),
        staff_member: Some("staff-7".into()),
        staff_role: Some("R8000".into()),
        categories: vec![RecordCategory::MentalHealth, RecordCategory::SocialCare],
        period: Period {
            start: t0() - Duration::days(1),
            end: Some(t0() + Duration::days(365)),
        },
        note: "Agreed at clinic — “happy to help research”".into(),
        ..directive("p-1", t0())
    };
    let minimal = directive("p-1", t0() + Duration::seconds(1));
    let someone_else = Directive {
        kind: DirectiveKind::NationalOptOut,
        ..directive("p-2", t0())
    };
    for d in [&full, &minimal, &someone_else] {
        assert_eq!(
            &store
                .insert_directive(d.clone(), audit())
                .await
                .expect("insert"),
            d
        );
    }
    assert_eq!(
        store.get_directive(&full.id).await.expect("get"),
        Some(full.clone())
    );
    assert_eq!(store.get_directive("no-such-id").await.expect("get"), None);
    assert_eq!(
        store.list_directives(&patient("p-1")).await.expect("list"),
        vec![minimal, full]
    );
    assert_eq!(
        store.list_directives(&patient("p-2")).await.expect("list"),
        vec![someone_else]
    );
}

async fn a_directive_is_revoked_once(store: &dyn ConsentStore) {
    let d = directive("p-1", t0());
    store
        .insert_directive(d.clone(), audit())
        .await
        .expect("insert");
    let at = t0() + Duration::hours(2);
    let revoked = store
        .revoke_directive(&d.id, at, "patient-1", audit())
        .await
        .expect("revoke");
    assert_eq!(revoked.revoked_at, Some(at));
    assert_eq!(
        revoked,
        Directive {
            revoked_at: Some(at),
            revoked_by: Some("patient-1".into()),
            ..d.clone()
        }
    );
    assert_eq!(
        store.get_directive(&d.id).await.expect("get"),
        Some(revoked.clone())
    );

    let again = store
        .revoke_directive(&d.id, at + Duration::hours(1), "someone-else", audit())
        .await
        .expect_err("already revoked");
    assert_eq!(again.code, Code::FailedPrecondition);
    assert_eq!(
        store
            .get_directive(&d.id)
            .await
            .expect("get")
            .and_then(|d| d.revoked_at),
        Some(at),
        "the first revocation stands"
    );

    let unknown = store
        .revoke_directive("no-such-id", at, "patient-1", audit())
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code, Code::NotFound);

    // Revoked directives stay listed: they are the patient's history.
    assert_eq!(
        store.list_directives(&patient("p-1")).await.expect("list"),
        vec![revoked]
    );
}

async fn a_relationship_ends_once(store: &dyn ConsentStore) {
    let r = relationship("p-1", t0(), None);
    store
        .insert_relationship(r.clone(), audit())
        .await
        .expect("insert");
    assert_eq!(
        store.get_relationship(&r.id).await.expect("get"),
        Some(r.clone())
    );
    let at = t0() + Duration::hours(2);
    let ended = store
        .end_relationship(&r.id, at, "pas-1", audit())
        .await
        .expect("end");
    assert_eq!(ended.period.end, Some(at));
    assert_eq!(ended.ended_by.as_deref(), Some("pas-1"));
    let again = store
        .end_relationship(&r.id, at + Duration::hours(1), "pas-2", audit())
        .await
        .expect_err("already ended");
    assert_eq!(again.code, Code::FailedPrecondition);
    let unknown = store
        .end_relationship("no-such-id", at, "pas-1", audit())
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code, Code::NotFound);
    assert_eq!(
        store
            .list_relationships(&patient("p-1"))
            .await
            .expect("list"),
        vec![ended]
    );
}

/// A change and its audit event are stored together or not at all: a
/// change whose event cannot be stored (its id is taken) is not made, and a
/// change refused stores no event.
async fn a_change_is_never_made_unaudited(store: &dyn ConsentStore) {
    let taken = audit();
    let r = relationship("p-1", t0(), None);
    store
        .insert_relationship(r.clone(), taken.clone())
        .await
        .expect("insert");
    let other = relationship("p-1", t0() + Duration::hours(1), None);
    store
        .insert_relationship(other.clone(), taken.clone())
        .await
        .expect_err("event id taken");
    assert_eq!(store.get_relationship(&other.id).await.expect("get"), None);
    let d = directive("p-1", t0());
    store
        .insert_directive(d.clone(), taken.clone())
        .await
        .expect_err("event id taken");
    assert_eq!(store.get_directive(&d.id).await.expect("get"), None);
    let at = t0() + Duration::hours(2);
    store
        .end_relationship(&r.id, at, "pas-1", taken.clone())
        .await
        .expect_err("event id taken");
    assert_eq!(
        store.get_relationship(&r.id).await.expect("get"),
        Some(r.clone()),
        "still open"
    );
    store
        .insert_directive(d.clone(), audit())
        .await
        .expect("insert");
    store
        .revoke_directive(&d.id, at, "patient-1", taken)
        .await
        .expect_err("event id taken");
    assert_eq!(
        store.get_directive(&d.id).await.expect("get"),
        Some(d.clone()),
        "not revoked"
    );
    assert_eq!(
        store
            .list_relationships(&patient("p-1"))
            .await
            .expect("list"),
        vec![r.clone()]
    );
    assert_eq!(
        store.list_directives(&patient("p-1")).await.expect("list"),
        vec![d]
    );

    // Refused changes leave their event's id free for the next change.
    let refused = audit();
    let unknown = store
        .revoke_directive("no-such-id", at, "patient-1", refused.clone())
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code, Code::NotFound);
    store
        .end_relationship(&r.id, at, "pas-1", refused.clone())
        .await
        .expect("end");
    let again = store
        .end_relationship(&r.id, at, "pas-1", audit())
        .await
        .expect_err("ended");
    assert_eq!(again.code, Code::FailedPrecondition);
}

/// Ids are unique across patients: a second row under a taken id is
/// refused and the first stands.
async fn an_id_is_stored_once(store: &dyn ConsentStore) {
    let r = relationship("p-1", t0(), None);
    store
        .insert_relationship(r.clone(), audit())
        .await
        .expect("insert");
    let d = directive("p-1", t0());
    store
        .insert_directive(d.clone(), audit())
        .await
        .expect("insert");
    let r2 = CareRelationship {
        id: r.id.clone(),
        ..relationship("p-2", t0() + Duration::days(1), None)
    };
    store
        .insert_relationship(r2, audit())
        .await
        .expect_err("id taken");
    let d2 = Directive {
        id: d.id.clone(),
        ..directive("p-2", t0() + Duration::days(1))
    };
    store
        .insert_directive(d2, audit())
        .await
        .expect_err("id taken");
    assert_eq!(
        store.get_relationship(&r.id).await.expect("get"),
        Some(r.clone())
    );
    assert_eq!(
        store.get_directive(&d.id).await.expect("get"),
        Some(d.clone())
    );
    assert!(
        store
            .list_relationships(&patient("p-2"))
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .list_directives(&patient("p-2"))
            .await
            .expect("list")
            .is_empty()
    );
}

/// Every change in the log, read a page of `page` at a time.
async fn logged(store: &dyn ConsentStore, page: u32) -> Vec<LoggedChange> {
    let mut all: Vec<LoggedChange> = Vec::new();
    loop {
        let after = all.last().map_or(0, |c| c.sequence);
        let next = store.changes_after(after, page).await.expect("changes");
        assert!(next.len() <= page as usize, "a page holds at most {page}");
        if next.is_empty() {
            return all;
        }
        all.extend(next);
    }
}

async fn each_write_appends_one_change_for_its_patient_in_order(store: &dyn ConsentStore) {
    assert_eq!(store.latest_change().await.expect("latest"), 0);
    assert!(
        store
            .changes_after(0, 10)
            .await
            .expect("changes")
            .is_empty()
    );
    let before = Utc::now() - Duration::seconds(1);

    let r = relationship("p-1", t0(), None);
    store
        .insert_relationship(r.clone(), audit())
        .await
        .expect("insert");
    let first = store.latest_change().await.expect("latest");
    assert!(first > 0);
    let d = directive("p-2", t0());
    store
        .insert_directive(d.clone(), audit())
        .await
        .expect("insert");
    store
        .end_relationship(&r.id, t0() + Duration::days(1), "principal-2", audit())
        .await
        .expect("end");
    store
        .revoke_directive(&d.id, t0() + Duration::days(1), "staff-2", audit())
        .await
        .expect("revoke");

    let all = logged(store, 100).await;
    let patients: Vec<&str> = all.iter().map(|c| c.patient_id.as_str()).collect();
    assert_eq!(patients, ["p-1", "p-2", "p-1", "p-2"]);
    let sequences: Vec<u64> = all.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences[0], first);
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert_eq!(
        store.latest_change().await.expect("latest"),
        sequences[3],
        "the head is the last change"
    );
    assert!(all.iter().all(|c| c.committed_at >= before));

    // Pages: after any sequence, what follows it, at most `limit`.
    assert_eq!(logged(store, 1).await, all);
    assert_eq!(logged(store, 3).await, all);
    assert_eq!(
        store
            .changes_after(sequences[1], 10)
            .await
            .expect("changes"),
        all[2..]
    );
    assert!(
        store
            .changes_after(sequences[3], 10)
            .await
            .expect("changes")
            .is_empty()
    );
}

async fn a_refused_write_appends_nothing(store: &dyn ConsentStore) {
    let r = relationship("p-1", t0(), None);
    store
        .insert_relationship(r.clone(), audit())
        .await
        .expect("insert");
    let d = directive("p-1", t0());
    store
        .insert_directive(d.clone(), audit())
        .await
        .expect("insert");
    store
        .revoke_directive(&d.id, t0(), "staff-2", audit())
        .await
        .expect("revoke");
    store
        .end_relationship(&r.id, t0() + Duration::days(1), "principal-2", audit())
        .await
        .expect("end");
    let head = store.latest_change().await.expect("latest");
    let before = logged(store, 100).await;
    assert_eq!(before.len(), 4);

    let refusals = [
        store
            .revoke_directive(&d.id, t0(), "staff-2", audit())
            .await
            .map(|_| ()),
        store
            .revoke_directive("no-such-directive", t0(), "staff-2", audit())
            .await
            .map(|_| ()),
        store
            .end_relationship(&r.id, t0() + Duration::days(2), "principal-2", audit())
            .await
            .map(|_| ()),
        store
            .end_relationship("no-such-relationship", t0(), "principal-2", audit())
            .await
            .map(|_| ()),
        store.insert_directive(d.clone(), audit()).await.map(|_| ()),
        store
            .insert_relationship(r.clone(), audit())
            .await
            .map(|_| ()),
    ];
    for refused in refusals {
        assert!(refused.is_err());
    }
    assert_eq!(store.latest_change().await.expect("latest"), head);
    assert_eq!(logged(store, 100).await, before);
}

/// The store on `backend`, bare or inside the cache (which `layered` puts
/// around the in-process backends, memory and SQLite).
async fn open(backend: &TestBackend, cached: bool) -> Box<dyn ConsentStore> {
    fn wrap<S: ConsentStore>(store: S, cached: bool) -> Box<dyn ConsentStore> {
        if cached {
            Box::new(Cached::new(
                store,
                sharedcare_consent::store::DEFAULT_MAX_PATIENTS,
            ))
        } else {
            Box::new(store)
        }
    }
    match store::open(backend.backend(), backend.url(), 2)
        .await
        .expect("open")
    {
        Backend::Sql(sql) => wrap(sql, cached),
        Backend::Memory(memory) => wrap(*memory, cached),
    }
}

/// Runs each behaviour on every backend, on a fresh database each time:
/// bare and inside the cache.
macro_rules! conformance {
    ($($behaviour:ident),* $(,)?) => {
        $(
            mod $behaviour {
                use super::*;

                #[tokio::test]
                async fn bare() {
                    on_every_backend(stringify!($behaviour), async |backend| {
                        super::$behaviour(open(backend, false).await.as_ref()).await;
                    })
                    .await;
                }

                #[tokio::test]
                async fn cached() {
                    on_every_backend(stringify!($behaviour), async |backend| {
                        super::$behaviour(open(backend, true).await.as_ref()).await;
                    })
                    .await;
                }
            }
        )*
    };
}

conformance!(
    relationships_read_back_newest_first_and_per_patient,
    directives_keep_every_field,
    a_directive_is_revoked_once,
    a_relationship_ends_once,
    a_change_is_never_made_unaudited,
    an_id_is_stored_once,
    each_write_appends_one_change_for_its_patient_in_order,
    a_refused_write_appends_nothing,
);

/// Two replicas writing at once on PostgreSQL: a watcher reading the change
/// log while they commit never skips a change (a later sequence committing
/// before an earlier one would make it).
#[tokio::test]
async fn postgres_change_log_follows_commit_order_across_replicas() {
    let Some(db) = TestDatabase::postgres("consent change log order").await else {
        return;
    };
    let replicas = [
        SqlStore::connect(db.url(), 4).await.expect("connect"),
        SqlStore::connect(db.url(), 4).await.expect("connect"),
    ];
    let done = std::sync::atomic::AtomicBool::new(false);
    let writers = (0..8).map(|w| {
        let store = &replicas[w % 2];
        async move {
            for i in 0..40 {
                store
                    .insert_directive(directive(&format!("p-{w}-{i}"), t0()), audit())
                    .await
                    .expect("write");
            }
        }
    });
    let watcher = async {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            let page = replicas[0].changes_after(after, 50).await.expect("changes");
            if let Some(last) = page.last() {
                after = last.sequence;
            }
            let empty = page.is_empty();
            seen.extend(page.into_iter().map(|c| c.sequence));
            if finished && empty {
                return seen;
            }
        }
    };
    let writing = async {
        futures::future::join_all(writers).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let (seen, ()) = futures::future::join(watcher, writing).await;
    let all: Vec<u64> = logged(&replicas[1], 100)
        .await
        .iter()
        .map(|c| c.sequence)
        .collect();
    assert_eq!(all.len(), 320);
    assert_eq!(seen, all, "the watcher saw every change, in order");
    for replica in replicas {
        replica.close().await;
    }
    db.cleanup().await;
}

/// Reopening a database runs the migrations again (a no-op) and finds what
/// was stored: an acknowledged write survives a restart.
async fn reopen(db: &TestDatabase) {
    let r = relationship("p-1", t0(), None);
    let first = SqlStore::connect(db.url(), 2).await.expect("connect");
    first
        .insert_relationship(r.clone(), audit())
        .await
        .expect("insert");
    first.close().await;
    let second = SqlStore::connect(db.url(), 2).await.expect("reconnect");
    assert_eq!(
        second
            .list_relationships(&patient("p-1"))
            .await
            .expect("list"),
        vec![r]
    );
    second.close().await;
}

#[tokio::test]
async fn data_survives_reopening_on_sqlite() {
    reopen(&TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn data_survives_reopening_on_postgres() {
    if let Some(db) = TestDatabase::postgres("data_survives_reopening_on_postgres").await {
        reopen(&db).await;
        db.cleanup().await;
    }
}

/// Wherever `open` keeps a backend's outbox, the relay delivers a change's
/// event from it.
#[tokio::test]
async fn changes_reach_audit_from_every_backends_outbox() {
    on_every_backend("consent outbox", async |backend| {
        let opened = store::open(backend.backend(), backend.url(), 2)
            .await
            .expect("open");
        let (db, writes) = opened.outbox();
        let sink = Arc::new(MemoryAudit::default());
        let outbox = Outbox::start(
            db.clone(),
            writes,
            OUTBOX_TABLE,
            sink.clone(),
            OutboxSettings {
                poll: std::time::Duration::from_millis(10),
                ..OutboxSettings::default()
            },
        );
        let (store, _changes) =
            sharedcare_consent::layered(opened, std::time::Duration::from_secs(1));
        let event = audit();
        store
            .insert_directive(directive("p-1", t0()), event.clone())
            .await
            .expect("insert");
        outbox.wake();
        outbox_drained(&db, OUTBOX_TABLE).await;
        assert_eq!(sink.delivered(), [event]);
    })
    .await;
}

/// `database.backend = "memory"` opens, with its outbox in a SQLite file
/// under the data dir.
#[tokio::test]
async fn open_keeps_the_memory_backends_outbox_in_the_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = HashMap::from([
        (
            "SHAREDCARE_AUTH__CLIENT_ID".to_owned(),
            "consent".to_owned(),
        ),
        (
            "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".to_owned(),
            "s3cret".to_owned(),
        ),
        (
            "SHAREDCARE_DATABASE__BACKEND".to_owned(),
            "memory".to_owned(),
        ),
        (
            "SHAREDCARE_DATABASE__DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
    ]);
    let cfg = ConsentConfig::load(&env).expect("valid");
    sharedcare_consent::open(&cfg).await.expect("opens");
    let url = sharedcare_kit::db::sqlite_url(&dir.path().join("consent.db"));
    let db = sea_orm::Database::connect(url.as_str())
        .await
        .expect("connect");
    assert_eq!(outbox_rows(&db, OUTBOX_TABLE).await, 0);
}
