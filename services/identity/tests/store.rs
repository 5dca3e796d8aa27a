//! The IdentityStore conformance suite: each behaviour is written once
//! against `&dyn IdentityStore` and runs on every backend (`kit::testing`):
//! memory, SQLite and PostgreSQL (when SHAREDCARE_TEST_DATABASE_URL is set;
//! otherwise it says it was skipped), each time on a fresh database.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use sharedcare_identity::{
    config::IdentityConfig,
    domain::{
        Demographics, Gender, MergeEvent, MergeKind, NhsNumber, NotSamePerson, OdsCode,
        Organisation, Patient, Principal,
    },
    store::{self, IdentityStore, OUTBOX_TABLE, PendingRegistration, Registered, StoredSigningKey},
};
use sharedcare_kit::{
    crypto::{BlindIndex, Kek, Keyring},
    error::Code,
    outbox::{Outbox, OutboxSettings},
    testing::{MemoryAudit, TestBackend, on_every_backend, outbox_drained, outbox_rows},
};
use sharedcare_proto::{
    audit::v1::AuditEvent,
    common::v1::{PrincipalKind, Purpose},
};

/// Stores keep time to the microsecond (PostgreSQL's precision).
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0)
        .single()
        .expect("valid")
        + Duration::microseconds(1_500)
}

/// A registration's audit event (identity stores it in its outbox).
fn audit() -> AuditEvent {
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        ..AuditEvent::default()
    }
}

/// The `n`th valid NHS number of the test range (999 000 0000 onwards).
fn nhs_number(n: usize) -> NhsNumber {
    (999_000_000u64..)
        .filter_map(|prefix| {
            let digits = prefix.to_string();
            let sum: u64 = digits
                .bytes()
                .zip((2..=10).rev())
                .map(|(d, weight)| u64::from(d - b'0') * weight)
                .sum();
            let check = (11 - sum % 11) % 11;
            (check < 10)
                .then(|| NhsNumber::parse("nhs_number", &format!("{digits}{check}")).ok())
                .flatten()
        })
        .nth(n)
        .expect("enough numbers")
}

fn patient(nhs: usize, family_name: &str) -> Patient {
    Patient {
        id: uuid::Uuid::now_v7().to_string(),
        nhs_number: nhs_number(nhs),
        demographics: Demographics {
            given_names: vec!["Ann".into()],
            family_name: family_name.into(),
            birth_date: NaiveDate::from_ymd_opt(1960, 2, 29).expect("date"),
            gender: Gender::Female,
            postcode: None,
            ..Default::default()
        },
        created_at: t0(),
        updated_at: t0(),
        superseded_by: None,
        version: 1,
    }
}

fn ods(code: &str) -> OdsCode {
    OdsCode::parse("ods_code", code).expect("valid")
}

fn staff(client_id: &str) -> Principal {
    Principal {
        id: uuid::Uuid::now_v7().to_string(),
        kind: PrincipalKind::Staff,
        display_name: "Dr A Clinician".into(),
        organisation: Some(ods("A81001")),
        role: "R8000".into(),
        scopes: vec!["patients.read".into(), "records.read".into()],
        purposes: vec![Purpose::DirectCare, Purpose::Research],
        patient_id: None,
        client_id: client_id.into(),
        secret_hash: vec![1, 2, 3],
        created_at: t0(),
    }
}

async fn a_patient_is_registered_once_per_nhs_number(store: &dyn IdentityStore) {
    let first = patient(1, "Smith");
    let event = audit();
    assert_eq!(
        store
            .register_patient(first.clone(), event.clone())
            .await
            .expect("register"),
        Registered::Created(first.clone())
    );
    assert_eq!(
        store.get_patient(&first.id).await.expect("get"),
        Some(first.clone())
    );
    assert_eq!(
        store
            .find_patient_by_nhs_number(&first.nhs_number)
            .await
            .expect("find"),
        Some(first.clone())
    );
    // Details are given once: the same number again finds the first, and
    // stores no audit event (so even a taken event id does not matter).
    let again = patient(1, "Jones");
    assert_eq!(
        store
            .register_patient(again.clone(), event)
            .await
            .expect("register"),
        Registered::Existing(first)
    );
    assert_eq!(store.get_patient(&again.id).await.expect("get"), None);
    assert_eq!(store.get_patient("no-such-id").await.expect("get"), None);
    assert_eq!(
        store
            .find_patient_by_nhs_number(&nhs_number(2))
            .await
            .expect("find"),
        None
    );
}

/// A registration and its audit event are stored together or not at all.
async fn a_registration_is_never_made_unaudited(store: &dyn IdentityStore) {
    let taken = audit();
    store
        .register_patient(patient(1, "Smith"), taken.clone())
        .await
        .expect("register");
    let other = patient(2, "Jones");
    store
        .register_patient(other.clone(), taken)
        .await
        .expect_err("event id taken");
    assert_eq!(store.get_patient(&other.id).await.expect("get"), None);
    assert_eq!(
        store
            .find_patient_by_nhs_number(&other.nhs_number)
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        store
            .register_patient(other.clone(), audit())
            .await
            .expect("register"),
        Registered::Created(other)
    );
}

async fn patients_keep_every_field(store: &dyn IdentityStore) {
    let full = Patient {
        demographics: Demographics {
            given_names: vec!["Zoë".into(), "Mary-Ann".into()],
            family_name: "O'Brien".into(),
            birth_date: NaiveDate::from_ymd_opt(2001, 12, 31).expect("date"),
            gender: Gender::Other,
            postcode: Some("LS1 4AP".into()),
            ..Default::default()
        },
        updated_at: t0() + Duration::days(3),
        superseded_by: Some("survivor-id".into()),
        ..patient(1, "")
    };
    let mut unspecified = patient(2, "Doe");
    unspecified.demographics.gender = Gender::Unspecified;
    for p in [&full, &unspecified] {
        store
            .register_patient(p.clone(), audit())
            .await
            .expect("register");
        assert_eq!(
            store.get_patient(&p.id).await.expect("get").as_ref(),
            Some(p)
        );
    }
}

/// Of concurrent registrations of one number exactly one creates the
/// patient; the others find it.
async fn concurrent_registrations_create_one_patient(store: &dyn IdentityStore) {
    let results = futures::future::join_all(
        (0..8).map(|_| store.register_patient(patient(1, "Smith"), audit())),
    )
    .await;
    let mut created = Vec::new();
    let mut found = Vec::new();
    for result in results {
        match result.expect("register") {
            Registered::Created(p) => created.push(p),
            Registered::Existing(p) => found.push(p),
        }
    }
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(found.iter().all(|p| *p == created[0]));
}

async fn organisations_are_unique_by_ods_code(store: &dyn IdentityStore) {
    let org = Organisation {
        ods_code: ods("A81001"),
        name: "The Surgery".into(),
        created_at: t0(),
    };
    assert_eq!(
        store
            .create_organisation(org.clone())
            .await
            .expect("create"),
        org
    );
    let err = store
        .create_organisation(Organisation {
            name: "Another".into(),
            ..org.clone()
        })
        .await
        .expect_err("taken");
    assert_eq!(err.code, Code::AlreadyExists);
    assert!(err.message.contains("A81001"), "{}", err.message);
    assert_eq!(
        store.get_organisation(&org.ods_code).await.expect("get"),
        Some(org)
    );
    assert_eq!(
        store.get_organisation(&ods("RR8")).await.expect("get"),
        None
    );
}

async fn principals_are_unique_by_client_id_and_id(store: &dyn IdentityStore) {
    let clinician = staff("clinician");
    assert_eq!(
        store
            .create_principal(clinician.clone())
            .await
            .expect("create"),
        clinician
    );
    assert_eq!(
        store
            .get_principal_by_client_id("clinician")
            .await
            .expect("get"),
        Some(clinician.clone())
    );
    let patient_principal = Principal {
        kind: PrincipalKind::Patient,
        organisation: None,
        role: String::new(),
        scopes: vec![],
        purposes: vec![],
        patient_id: Some("patient-1".into()),
        ..staff("patient-app-1")
    };
    store
        .create_principal(patient_principal.clone())
        .await
        .expect("create");
    assert_eq!(
        store
            .get_principal_by_client_id("patient-app-1")
            .await
            .expect("get"),
        Some(patient_principal)
    );
    for duplicate in [
        Principal {
            role: "R8001".into(),
            ..staff("clinician")
        },
        Principal {
            id: clinician.id.clone(),
            ..staff("someone-else")
        },
    ] {
        let err = store.create_principal(duplicate).await.expect_err("taken");
        assert_eq!(err.code, Code::AlreadyExists);
    }
    assert_eq!(
        store
            .get_principal_by_client_id("clinician")
            .await
            .expect("get"),
        Some(clinician)
    );
    assert_eq!(
        store
            .get_principal_by_client_id("someone-else")
            .await
            .expect("get"),
        None
    );
}

/// Bootstrap principals are replaced in place: the id their tokens carry
/// and the time they were first created stay.
async fn an_upsert_keeps_a_principals_id_and_creation(store: &dyn IdentityStore) {
    let first = staff("pas");
    assert_eq!(
        store.upsert_principal(first.clone()).await.expect("upsert"),
        first
    );
    assert_eq!(
        store.get_principal_by_client_id("pas").await.expect("get"),
        Some(first.clone())
    );
    let second = Principal {
        kind: PrincipalKind::Application,
        display_name: "PAS".into(),
        organisation: Some(ods("RR8")),
        role: String::new(),
        scopes: vec!["patients.write".into()],
        purposes: vec![Purpose::DirectCare],
        secret_hash: vec![9; 32],
        created_at: t0() + Duration::days(1),
        ..staff("pas")
    };
    let upserted = store
        .upsert_principal(second.clone())
        .await
        .expect("upsert");
    assert_eq!(upserted.id, first.id);
    assert_eq!(
        store.get_principal_by_client_id("pas").await.expect("get"),
        Some(Principal {
            id: first.id,
            created_at: first.created_at,
            ..second
        })
    );
}

fn person(given: &str, family: &str, birth: (i32, u32, u32), postcode: &str) -> Demographics {
    Demographics {
        given_names: vec![given.into()],
        family_name: family.into(),
        birth_date: NaiveDate::from_ymd_opt(birth.0, birth.1, birth.2).expect("date"),
        gender: Gender::Female,
        postcode: (!postcode.is_empty()).then(|| postcode.into()),
        ..Default::default()
    }
}

fn registered(nhs: usize, demographics: Demographics) -> Patient {
    Patient {
        demographics,
        ..patient(nhs, "")
    }
}

fn ids(patients: &[Patient]) -> Vec<&str> {
    let mut ids: Vec<&str> = patients.iter().map(|p| p.id.as_str()).collect();
    ids.sort();
    ids
}

/// Candidates come from the blocking keys a patient was registered under:
/// a variant of one person finds them, an unrelated person finds no one.
async fn candidates_come_from_blocking_keys(store: &dyn IdentityStore) {
    let kate = registered(1, person("Katherine", "Smith", (1980, 4, 3), "LS1 4AP"));
    let twin = registered(2, person("Zoe", "Smith", (1980, 4, 3), "LS1 4AP"));
    let other = registered(3, person("Oliver", "Jones", (1975, 11, 23), "M1 1AE"));
    for p in [&kate, &twin, &other] {
        store
            .register_patient(p.clone(), audit())
            .await
            .expect("register");
    }
    // Kate, moved and going by her nickname, with day and month swapped.
    let variant = registered(4, person("Kate", "Smyth", (1980, 3, 4), "M1 1AE"));
    let found = store
        .candidates(&variant.blocking_keys(), 100)
        .await
        .expect("candidates");
    assert!(ids(&found).contains(&kate.id.as_str()), "{found:?}");
    assert!(!ids(&found).contains(&other.id.as_str()));
    // Found whole: what matching scores is the stored patient.
    assert!(found.contains(&kate));
    let stranger = registered(5, person("Ahmed", "Khan", (2001, 7, 9), "B1 1AA"));
    assert_eq!(
        store
            .candidates(&stranger.blocking_keys(), 100)
            .await
            .expect("candidates"),
        vec![]
    );
    assert_eq!(
        store.candidates(&[], 100).await.expect("candidates"),
        vec![]
    );
    // Never more than asked for.
    let both = store
        .candidates(&kate.blocking_keys(), 1)
        .await
        .expect("candidates");
    assert_eq!(both.len(), 1);
}

/// A "not the same person" link is one per pair, whichever way round, kept
/// with its reason, and stored with its audit events or not at all.
async fn not_same_person_links_are_kept_once(store: &dyn IdentityStore) {
    let a = patient(1, "Smith");
    let b = patient(2, "Smith");
    let c = patient(3, "Smith");
    for p in [&a, &b, &c] {
        store
            .register_patient(p.clone(), audit())
            .await
            .expect("register");
    }
    let link = NotSamePerson::new(&b.id, &a.id, "twins", "staff-1", t0());
    let taken = audit();
    assert!(
        store
            .mark_not_same_person(link.clone(), vec![taken.clone(), audit()])
            .await
            .expect("mark")
    );
    assert!(
        !store
            .mark_not_same_person(
                NotSamePerson::new(&a.id, &b.id, "again", "staff-2", t0()),
                vec![audit(), audit()],
            )
            .await
            .expect("mark again"),
        "one link per pair"
    );
    assert_eq!(
        store.not_same_person_links(&a.id).await.expect("links"),
        vec![link.clone()]
    );
    assert_eq!(
        store.not_same_person_links(&b.id).await.expect("links"),
        vec![link]
    );
    assert_eq!(
        store.not_same_person_links(&c.id).await.expect("links"),
        vec![]
    );
    // An event id already used: nothing stored.
    store
        .mark_not_same_person(
            NotSamePerson::new(&a.id, &c.id, "parent", "staff-1", t0()),
            vec![audit(), taken],
        )
        .await
        .expect_err("event id taken");
    assert_eq!(
        store.not_same_person_links(&c.id).await.expect("links"),
        vec![]
    );
}

/// A new patient registered apart from others carries its links from the
/// start.
async fn a_patient_may_be_registered_apart_from_others(store: &dyn IdentityStore) {
    let a = patient(1, "Smith");
    store
        .register_patient(a.clone(), audit())
        .await
        .expect("register");
    let b = patient(2, "Smith");
    let link = NotSamePerson::new(&b.id, &a.id, "checked", "staff-1", t0());
    assert_eq!(
        store
            .register_patient_apart(b.clone(), vec![link.clone()], audit())
            .await
            .expect("register"),
        Registered::Created(b.clone())
    );
    assert_eq!(
        store.not_same_person_links(&a.id).await.expect("links"),
        vec![link]
    );
}

fn merge(kind: MergeKind, superseded: &Patient, surviving: &Patient) -> MergeEvent {
    MergeEvent {
        sequence: 0,
        kind,
        superseded: superseded.id.clone(),
        surviving: surviving.id.clone(),
        recorded_by: "staff-1".into(),
        recorded_at: t0(),
    }
}

fn code_and_message(e: sharedcare_kit::Error) -> (Code, String) {
    (e.code, e.message)
}

/// A merge points the superseded patient at the survivor, logs it in order
/// and can be undone; a refused merge stores nothing.
async fn merges_are_logged_in_order_and_undone(store: &dyn IdentityStore) {
    let [a, b, c, d] = [1, 2, 3, 4].map(|n| patient(n, "Smith"));
    for p in [&a, &b, &c, &d] {
        store
            .register_patient(p.clone(), audit())
            .await
            .expect("register");
    }
    let first = store
        .merge_patients(merge(MergeKind::Merged, &a, &b), vec![audit(), audit()])
        .await
        .expect("merge");
    assert_eq!(first.kind, MergeKind::Merged);
    assert!(first.sequence > 0);
    let merged = store.get_patient(&a.id).await.expect("get").expect("a");
    assert_eq!(merged.superseded_by.as_deref(), Some(b.id.as_str()));
    assert_eq!(
        store
            .find_patient_by_nhs_number(&a.nhs_number)
            .await
            .expect("find")
            .map(|p| p.superseded_by),
        Some(Some(b.id.clone())),
        "the old number still finds the old patient, pointing on"
    );

    // Refusals, each naming its field; nothing stored by any.
    let refusals = [
        (
            merge(MergeKind::Merged, &a, &c),
            Code::FailedPrecondition,
            "superseded_patient_id",
        ),
        (
            merge(MergeKind::Merged, &c, &a),
            Code::FailedPrecondition,
            "surviving_patient_id",
        ),
        (
            merge(MergeKind::Merged, &patient(9, "Nobody"), &c),
            Code::NotFound,
            "superseded_patient_id",
        ),
        (
            merge(MergeKind::Merged, &c, &patient(9, "Nobody")),
            Code::NotFound,
            "surviving_patient_id",
        ),
    ];
    for (m, code, field) in refusals {
        let (got, message) = code_and_message(
            store
                .merge_patients(m, vec![audit(), audit()])
                .await
                .expect_err(field),
        );
        assert_eq!(got, code, "{message}");
        assert!(message.starts_with(field), "{message}");
    }
    store
        .mark_not_same_person(
            NotSamePerson::new(&c.id, &d.id, "twins", "staff-1", t0()),
            vec![audit(), audit()],
        )
        .await
        .expect("mark");
    let (got, message) = code_and_message(
        store
            .merge_patients(merge(MergeKind::Merged, &c, &d), vec![audit(), audit()])
            .await
            .expect_err("kept apart"),
    );
    assert_eq!(got, Code::FailedPrecondition);
    assert!(message.contains("not the same person"), "{message}");
    assert_eq!(
        store
            .get_patient(&c.id)
            .await
            .expect("get")
            .expect("c")
            .superseded_by,
        None
    );
    // An audit event that cannot be stored refuses the merge as well.
    let taken = audit();
    store
        .merge_patients(
            merge(MergeKind::Merged, &c, &b),
            vec![taken.clone(), audit()],
        )
        .await
        .expect("merge c");
    store
        .unmerge_patient(merge(MergeKind::Unmerged, &c, &b), vec![taken, audit()])
        .await
        .expect_err("event id taken");
    assert_eq!(
        store
            .get_patient(&c.id)
            .await
            .expect("get")
            .expect("c")
            .superseded_by
            .as_deref(),
        Some(b.id.as_str())
    );

    // Unmerge: only a merged patient, only from where it points.
    let (got, message) = code_and_message(
        store
            .unmerge_patient(merge(MergeKind::Unmerged, &d, &b), vec![audit(), audit()])
            .await
            .expect_err("not merged"),
    );
    assert_eq!(got, Code::FailedPrecondition, "{message}");
    let undone = store
        .unmerge_patient(merge(MergeKind::Unmerged, &a, &b), vec![audit(), audit()])
        .await
        .expect("unmerge");
    assert_eq!(
        store
            .get_patient(&a.id)
            .await
            .expect("get")
            .expect("a")
            .superseded_by,
        None
    );

    let log = store.merges_after(0, 10).await.expect("log");
    let kinds: Vec<(MergeKind, &str)> = log
        .iter()
        .map(|m| (m.kind, m.superseded.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (MergeKind::Merged, a.id.as_str()),
            (MergeKind::Merged, c.id.as_str()),
            (MergeKind::Unmerged, a.id.as_str()),
        ]
    );
    assert!(log.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(log[0], first);
    assert_eq!(log[2], undone);
    assert_eq!(
        store.merges_after(log[0].sequence, 1).await.expect("log"),
        vec![log[1].clone()]
    );
    assert_eq!(
        store.merges_after(undone.sequence, 10).await.expect("log"),
        vec![]
    );
}

async fn principals_are_found_by_id(store: &dyn IdentityStore) {
    let created = store.create_principal(staff("gp")).await.expect("create");
    assert_eq!(
        store.get_principal(&created.id).await.expect("get"),
        Some(created)
    );
    assert_eq!(store.get_principal("no-such-id").await.expect("get"), None);
}

fn signing_key(created_at: DateTime<Utc>) -> StoredSigningKey {
    let key = sharedcare_kit::keys::SigningKey::generate();
    StoredSigningKey {
        kid: key.kid().to_owned(),
        pkcs8_pem: key.to_pkcs8_pem().expect("pem"),
        created_at,
    }
}

async fn rotated_signing_keys_are_kept_oldest_first(store: &dyn IdentityStore) {
    assert_eq!(store.signing_keys().await.expect("list"), []);
    let later = signing_key(t0() + Duration::seconds(60));
    let earlier = signing_key(t0());
    store.add_signing_key(later.clone()).await.expect("add");
    store.add_signing_key(earlier.clone()).await.expect("add");
    assert_eq!(
        store.signing_keys().await.expect("list"),
        [earlier.clone(), later]
    );
    let err = store
        .add_signing_key(StoredSigningKey {
            created_at: t0() + Duration::seconds(120),
            ..earlier
        })
        .await
        .expect_err("kid taken");
    assert_eq!(err.code, Code::AlreadyExists);
    assert_eq!(store.signing_keys().await.expect("list").len(), 2);
}

async fn a_principal_is_revoked_once(store: &dyn IdentityStore) {
    let later = t0() + Duration::seconds(30);
    assert_eq!(store.revocation("p1").await.expect("read"), None);
    assert_eq!(
        store.revoke_principal("p1", t0()).await.expect("revoke"),
        (t0(), false)
    );
    // Again: the first revocation stands.
    assert_eq!(
        store.revoke_principal("p1", later).await.expect("revoke"),
        (t0(), true)
    );
    store.revoke_principal("p2", later).await.expect("revoke");
    assert_eq!(store.revocation("p1").await.expect("read"), Some(t0()));
    assert_eq!(
        store.revocations_since(t0()).await.expect("list"),
        [("p1".to_owned(), t0()), ("p2".to_owned(), later)]
    );
    assert_eq!(
        store
            .revocations_since(t0() + Duration::seconds(1))
            .await
            .expect("list"),
        [("p2".to_owned(), later)]
    );
}

/// Demographics are versioned: a change replaces the version it names,
/// keeps the one before, re-indexes the patient for matching, and keeps
/// every detail; a stale or merged patient's change stores nothing.
async fn demographics_are_versioned(store: &dyn IdentityStore) {
    use sharedcare_identity::domain::{ContactPoint, ContactSystem, LocalIdentifier};
    let first = registered(1, person("Katherine", "Smith", (1980, 4, 3), "LS1 4AP"));
    store
        .register_patient(first.clone(), audit())
        .await
        .expect("register");
    let mut married = first.clone();
    married.version = 2;
    married.updated_at = t0() + Duration::days(1);
    married.demographics = Demographics {
        family_name: "Jones".into(),
        previous_family_names: vec!["Smith".into()],
        death_date: None,
        address_lines: vec!["1 Park Row".into(), "Leeds".into()],
        telecom: vec![ContactPoint {
            system: ContactSystem::Email,
            value: "k@example.org".into(),
        }],
        gp_practice: Some(ods("B82002")),
        identifiers: vec![LocalIdentifier {
            system: "https://trust.example/Id/mrn".into(),
            value: "MRN-1".into(),
            issuing_organisation: "RR8".into(),
        }],
        restricted: true,
        ..first.demographics.clone()
    };
    assert_eq!(
        store
            .update_patient(married.clone(), audit())
            .await
            .expect("update"),
        married
    );
    assert_eq!(
        store.get_patient(&first.id).await.expect("get"),
        Some(married.clone())
    );
    assert_eq!(
        store
            .patient_versions(&first.id, 10)
            .await
            .expect("versions"),
        vec![married.clone(), first.clone()]
    );
    assert_eq!(
        store
            .patient_versions(&first.id, 1)
            .await
            .expect("versions"),
        vec![married.clone()]
    );
    // Found by the new name, and by the old one (kept as previous).
    let as_jones = registered(9, person("Katherine", "Jones", (1980, 4, 3), ""));
    assert!(
        ids(&store
            .candidates(&as_jones.blocking_keys(), 10)
            .await
            .expect("found"))
        .contains(&first.id.as_str())
    );

    // Stale: nothing stored.
    let mut stale = married.clone();
    stale.demographics.family_name = "Brown".into();
    let (code, message) = code_and_message(
        store
            .update_patient(stale, audit())
            .await
            .expect_err("stale"),
    );
    assert_eq!(code, Code::FailedPrecondition);
    assert!(
        message.contains("if_match") && message.contains('2'),
        "{message}"
    );
    let mut unknown = married.clone();
    unknown.id = "no-such-patient".into();
    let (code, _) = code_and_message(
        store
            .update_patient(unknown, audit())
            .await
            .expect_err("unknown"),
    );
    assert_eq!(code, Code::NotFound);
    assert_eq!(
        store.get_patient(&first.id).await.expect("get"),
        Some(married.clone())
    );
    // Merged away: updated through the survivor only.
    let other = patient(2, "Smith");
    store
        .register_patient(other.clone(), audit())
        .await
        .expect("register");
    store
        .merge_patients(
            merge(MergeKind::Merged, &first, &other),
            vec![audit(), audit()],
        )
        .await
        .expect("merge");
    let mut after_merge = store.get_patient(&first.id).await.expect("get").expect("p");
    after_merge.version = 3;
    let (code, message) = code_and_message(
        store
            .update_patient(after_merge, audit())
            .await
            .expect_err("merged"),
    );
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.starts_with("patient_id"), "{message}");
}

/// A registration with a practice, and each version that changes it,
/// queue the patient for consent; the queue leases what it hands out and
/// forgets a patient only for the latest version queued.
async fn gp_registrations_are_queued_for_consent(store: &dyn IdentityStore) {
    let pending = |p: &Patient, version: i64| PendingRegistration {
        patient_id: p.id.clone(),
        version,
    };
    let lease = || Utc::now() + Duration::seconds(30);
    let mut with_gp = registered(1, person("Ann", "Smith", (1960, 2, 29), ""));
    with_gp.demographics.gp_practice = Some(ods("A81001"));
    let without = patient(2, "Jones");
    for p in [&with_gp, &without] {
        store
            .register_patient(p.clone(), audit())
            .await
            .expect("register");
    }
    let claimed = store.claim_registrations(10, lease()).await.expect("claim");
    assert_eq!(
        claimed,
        vec![pending(&with_gp, 1)],
        "only the one with a GP"
    );
    assert!(
        store
            .claim_registrations(10, lease())
            .await
            .expect("claim")
            .is_empty(),
        "leased: not handed out twice"
    );

    // Changed again before consent heard: the later version is queued, and
    // delivering the earlier one does not forget it.
    let mut renamed = with_gp.clone();
    renamed.version = 2;
    renamed.demographics.given_names = vec!["Anne".into()];
    store
        .update_patient(renamed.clone(), audit())
        .await
        .expect("renamed");
    let mut moved = renamed.clone();
    moved.version = 3;
    moved.demographics.gp_practice = Some(ods("B82002"));
    store
        .update_patient(moved.clone(), audit())
        .await
        .expect("moved");
    store
        .registration_delivered(&pending(&with_gp, 1))
        .await
        .expect("delivered");
    assert_eq!(
        store.claim_registrations(10, lease()).await.expect("claim"),
        vec![pending(&with_gp, 3)],
        "a change re-queues, free of the old lease"
    );
    store
        .registration_delivered(&pending(&with_gp, 3))
        .await
        .expect("delivered");

    // A version that leaves the practice alone queues nothing; one that
    // removes it does. A lease that has run out is handed out again.
    let mut renamed_again = moved.clone();
    renamed_again.version = 4;
    renamed_again.demographics.given_names = vec!["Ann".into()];
    store
        .update_patient(renamed_again.clone(), audit())
        .await
        .expect("renamed");
    assert!(
        store
            .claim_registrations(10, lease())
            .await
            .expect("claim")
            .is_empty()
    );
    let mut deregistered = renamed_again.clone();
    deregistered.version = 5;
    deregistered.demographics.gp_practice = None;
    store
        .update_patient(deregistered, audit())
        .await
        .expect("deregistered");
    let expired = Utc::now() - Duration::seconds(1);
    assert_eq!(
        store.claim_registrations(10, expired).await.expect("claim"),
        vec![pending(&with_gp, 5)]
    );
    assert_eq!(
        store.claim_registrations(10, lease()).await.expect("claim"),
        vec![pending(&with_gp, 5)],
        "its lease ran out"
    );
    store
        .registration_delivered(&pending(&with_gp, 5))
        .await
        .expect("delivered");
    assert!(
        store
            .claim_registrations(10, expired)
            .await
            .expect("claim")
            .is_empty()
    );
}

/// The store `open` builds for `backend`.
async fn open(backend: &TestBackend) -> store::Opened {
    store::open(
        backend.backend(),
        backend.url(),
        4,
        Keyring::new(Kek::generate(), []),
        BlindIndex::generate(),
    )
    .await
    .expect("open")
}

/// Runs each behaviour on every backend, on a fresh database each time.
macro_rules! conformance {
    ($($behaviour:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $behaviour() {
                on_every_backend(stringify!($behaviour), async |backend| {
                    super::$behaviour(open(backend).await.store.as_ref()).await;
                })
                .await;
            }
        )*
    };
}

mod conforms {
    use super::*;

    conformance!(
        a_patient_is_registered_once_per_nhs_number,
        a_registration_is_never_made_unaudited,
        patients_keep_every_field,
        concurrent_registrations_create_one_patient,
        organisations_are_unique_by_ods_code,
        principals_are_unique_by_client_id_and_id,
        an_upsert_keeps_a_principals_id_and_creation,
        candidates_come_from_blocking_keys,
        not_same_person_links_are_kept_once,
        a_patient_may_be_registered_apart_from_others,
        merges_are_logged_in_order_and_undone,
        demographics_are_versioned,
        principals_are_found_by_id,
        rotated_signing_keys_are_kept_oldest_first,
        a_principal_is_revoked_once,
        gp_registrations_are_queued_for_consent,
    );
}

/// Wherever `open` keeps a backend's outbox, the relay delivers a
/// registration's event from it.
#[tokio::test]
async fn registrations_reach_audit_from_every_backends_outbox() {
    on_every_backend("identity outbox", async |backend| {
        let opened = open(backend).await;
        let sink = Arc::new(MemoryAudit::default());
        let outbox = Outbox::start(
            opened.outbox.clone(),
            opened.writes.clone(),
            OUTBOX_TABLE,
            sink.clone(),
            OutboxSettings {
                poll: std::time::Duration::from_millis(10),
                ..OutboxSettings::default()
            },
        );
        let event = audit();
        opened
            .store
            .register_patient(patient(1, "Smith"), event.clone())
            .await
            .expect("register");
        outbox.wake();
        outbox_drained(&opened.outbox, OUTBOX_TABLE).await;
        assert_eq!(sink.delivered(), [event]);
    })
    .await;
}

/// `database.backend = "memory"` keeps the index in memory (what the
/// bootstrap file creates never reaches the data dir) and its outbox in a
/// SQLite file under the data dir.
#[tokio::test]
async fn open_keeps_the_memory_backends_outbox_in_the_data_dir() {
    use sea_orm::{ConnectionTrait, Statement};
    let dir = tempfile::tempdir().expect("temp dir");
    let bootstrap = dir.path().join("bootstrap.toml");
    std::fs::write(
        &bootstrap,
        "[[organisations]]\nods_code = \"X26\"\nname = \"Platform\"\n",
    )
    .expect("write");
    let env = HashMap::from([
        (
            "SHAREDCARE_DATABASE__BACKEND".to_owned(),
            "memory".to_owned(),
        ),
        (
            "SHAREDCARE_DATABASE__DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
        (
            "SHAREDCARE_IDENTITY__BOOTSTRAP_FILE".to_owned(),
            bootstrap.display().to_string(),
        ),
    ]);
    let cfg = IdentityConfig::load(&env).expect("valid");
    sharedcare_identity::open(&cfg).await.expect("opens");
    let url = sharedcare_kit::db::sqlite_url(&dir.path().join("identity.db"));
    let db = sea_orm::Database::connect(url.as_str())
        .await
        .expect("connect");
    assert_eq!(outbox_rows(&db, OUTBOX_TABLE).await, 0);
    let organisations = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT ods_code FROM identity_organisations",
        ))
        .await
        .expect("query");
    assert!(organisations.is_empty(), "the index is not on disk");
}

/// Patients registered before blocking keys were kept (M0004) are indexed
/// when the SQL store next opens, so every patient can be a candidate.
#[tokio::test]
async fn patients_without_blocking_keys_are_indexed_on_open() {
    use sea_orm::ConnectionTrait;
    use sharedcare_kit::config::StorageBackend;
    on_every_backend("identity key backfill", async |backend| {
        if backend.backend() == StorageBackend::Memory {
            return; // nothing at rest to backfill
        }
        let (kek, index) = (Kek::generate(), BlindIndex::generate());
        let open_with_keys = async || {
            store::open(
                backend.backend(),
                backend.url(),
                4,
                Keyring::new(kek.clone(), []),
                index.clone(),
            )
            .await
            .expect("open")
        };
        let first = open_with_keys().await;
        let kate = registered(1, person("Katherine", "Smith", (1980, 4, 3), "LS1 4AP"));
        first
            .store
            .register_patient(kate.clone(), audit())
            .await
            .expect("register");
        first
            .outbox
            .execute_unprepared("DELETE FROM identity_patient_keys")
            .await
            .expect("forget the keys");
        assert_eq!(
            first
                .store
                .candidates(&kate.blocking_keys(), 10)
                .await
                .expect("candidates"),
            vec![]
        );
        drop(first);
        let reopened = open_with_keys().await;
        assert_eq!(
            reopened
                .store
                .candidates(&kate.blocking_keys(), 10)
                .await
                .expect("candidates"),
            vec![kate]
        );
    })
    .await;
}

/// A rotated key's private half is sealed at rest in the SQL store (the
/// memory store keeps nothing at rest).
#[tokio::test]
async fn rotated_signing_keys_are_sealed_at_rest() {
    use sea_orm::{ConnectionTrait, Statement};
    on_every_backend("sealed signing keys", async |backend| {
        let opened = open(backend).await;
        let key = signing_key(t0());
        opened
            .store
            .add_signing_key(key.clone())
            .await
            .expect("add");
        let db = &opened.outbox;
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT kid, sealed FROM identity_signing_keys",
            ))
            .await
            .expect("query");
        let in_memory = backend.backend() == sharedcare_kit::config::StorageBackend::Memory;
        assert_eq!(rows.len(), usize::from(!in_memory));
        for row in rows {
            let sealed: Vec<u8> = row.try_get("", "sealed").expect("sealed");
            let seed = &key.pkcs8_pem.as_bytes()[30..60];
            assert!(
                !sealed.windows(seed.len()).any(|w| w == seed)
                    && !String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"),
                "the private key is not stored in clear"
            );
        }
    })
    .await;
}

/// A patient from before versions were kept (no version rows) keeps its
/// first version when it is first changed.
#[tokio::test]
async fn a_patient_from_before_versions_keeps_its_first_version() {
    use sea_orm::ConnectionTrait;
    use sharedcare_kit::config::StorageBackend;
    on_every_backend("first version kept", async |backend| {
        if backend.backend() == StorageBackend::Memory {
            return; // nothing from before
        }
        let opened = open(backend).await;
        let first = patient(1, "Smith");
        opened
            .store
            .register_patient(first.clone(), audit())
            .await
            .expect("register");
        opened
            .outbox
            .execute_unprepared("DELETE FROM identity_patient_versions")
            .await
            .expect("as before M0007");
        assert_eq!(
            opened
                .store
                .patient_versions(&first.id, 10)
                .await
                .expect("versions"),
            vec![first.clone()]
        );
        let mut second = first.clone();
        second.version = 2;
        second.demographics.family_name = "Jones".into();
        opened
            .store
            .update_patient(second.clone(), audit())
            .await
            .expect("update");
        assert_eq!(
            opened
                .store
                .patient_versions(&first.id, 10)
                .await
                .expect("versions"),
            vec![second, first]
        );
    })
    .await;
}
