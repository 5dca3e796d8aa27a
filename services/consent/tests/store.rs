//! The store conformance suite: each behaviour is written once against
//! `&dyn ConsentStore` and runs on SQLite and on PostgreSQL (when
//! SHAREDCARE_TEST_DATABASE_URL is set; otherwise it says it was skipped).

use chrono::{DateTime, Duration, TimeZone, Utc};
use sharedcare_consent::{
    domain::{
        CareRelationship, CareRelationshipKind, Directive, DirectiveSource, Effect, OdsCode,
        PatientId, Period, Provenance, Purpose, RecordCategory,
    },
    store::{ConsentStore, SqlStore},
};
use sharedcare_kit::{error::Code, testing::TestDatabase};
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
        recorded_by: "principal-1".into(),
        recorded_by_organisation: ods("RR8"),
        ended_by: None,
    }
}

fn directive(patient_id: &str, created_at: DateTime<Utc>) -> Directive {
    Directive {
        id: uuid::Uuid::now_v7().to_string(),
        patient_id: patient(patient_id),
        effect: Effect::Deny,
        purposes: vec![],
        organisation: None,
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
    let newest = relationship("p-1", t0() + Duration::microseconds(1_500), None);
    let newer = relationship("p-1", t0() + Duration::microseconds(500), None);
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
    let someone_else = directive("p-2", t0());
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

/// Runs each behaviour on a fresh SQLite file and a fresh PostgreSQL database.
macro_rules! conformance {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let db = sharedcare_kit::testing::TestDatabase::sqlite();
                    let store = super::SqlStore::connect(db.url(), 2).await.expect("connect");
                    super::$behaviour(&store).await;
                    store.close().await;
                }
            )*
        }
        // The in-memory cache around SQLite, as `open` runs it there.
        mod cached_sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let db = sharedcare_kit::testing::TestDatabase::sqlite();
                    let store = super::SqlStore::connect(db.url(), 2).await.expect("connect");
                    let cached = sharedcare_consent::store::Cached::new(store);
                    super::$behaviour(&cached).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some(db) =
                        sharedcare_kit::testing::TestDatabase::postgres(stringify!($behaviour)).await
                    else {
                        return;
                    };
                    let store = super::SqlStore::connect(db.url(), 2).await.expect("connect");
                    super::$behaviour(&store).await;
                    store.close().await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    relationships_read_back_newest_first_and_per_patient,
    directives_keep_every_field,
    a_directive_is_revoked_once,
    a_relationship_ends_once,
);

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
