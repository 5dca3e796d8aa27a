//! identity over real gRPC sockets, with in-process fakes of consent and
//! audit (the real ones are the cross-service tests' in `tests/`).

mod support;

use support::*;

#[tokio::test]
async fn a_patient_is_registered_once_and_read_back() {
    let f = Fixture::start().await;
    let token = f.staff("A81001", "R8000").await;
    let mut client = f.client();
    let first = client
        .register_patient(with_token(jane("943 476 5919"), &token))
        .await
        .expect("registered")
        .into_inner();
    assert!(first.created);
    let patient = first.patient.expect("patient");
    assert_eq!(patient.nhs_number, "9434765919");
    assert_eq!(
        patient
            .demographics
            .as_ref()
            .expect("demographics")
            .postcode,
        "LS1 4AP"
    );

    let again = client
        .register_patient(with_token(jane("9434765919"), &token))
        .await
        .expect("registered")
        .into_inner();
    assert!(!again.created, "details are given once");
    assert_eq!(
        again.patient.expect("patient").patient_id,
        patient.patient_id
    );

    let read = client
        .get_patient(with_token(
            pb::GetPatientRequest {
                patient_id: patient.patient_id.clone(),
            },
            &token,
        ))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(
        read.patient.expect("patient").patient_id,
        patient.patient_id
    );

    // Registration, the match returned and the read are each audited.
    let events = f.events().await;
    let seen: Vec<(i32, i32)> = events.iter().map(|e| (e.action, e.outcome)).collect();
    assert_eq!(
        seen,
        vec![
            (Action::Create as i32, Outcome::Success as i32),
            (Action::Read as i32, Outcome::Success as i32),
            (Action::Read as i32, Outcome::Success as i32),
        ]
    );
    for event in &events {
        assert_eq!(event.patient_id, patient.patient_id);
        assert_eq!(event.resource_type, "Patient");
        assert_eq!(event.source_service, "identity");
        assert_eq!(event.purpose, Purpose::DirectCare as i32);
        let actor = event.actor.as_ref().expect("actor");
        assert_eq!(actor.organisation_ods_code, "A81001");
        assert_eq!(actor.role, "R8000");
    }
    assert_eq!(events[2].decision_id, "decision-permit");
}

#[tokio::test]
async fn invalid_nhs_numbers_are_refused_and_nothing_is_stored() {
    let f = Fixture::start().await;
    let token = f.staff("A81001", "R8000").await;
    for bad in ["9434765918", "1111111111", "94347659", "abcdefghij"] {
        let status = f
            .client()
            .register_patient(with_token(jane(bad), &token))
            .await
            .expect_err(bad);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        assert!(
            status.message().starts_with("nhs_number"),
            "{}",
            status.message()
        );
    }
    // No number finds a registered patient or nothing: a new one needs one.
    let status = f
        .client()
        .register_patient(with_token(jane(""), &token))
        .await
        .expect_err("no number");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with("nhs_number"),
        "{}",
        status.message()
    );
    let mut missing = jane("9434765919");
    missing.demographics.as_mut().expect("d").birth_date = "29/02/1980".into();
    let status = f
        .client()
        .register_patient(with_token(missing, &token))
        .await
        .expect_err("bad date");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("demographics.birth_date"));
    let nhs = NhsNumber::parse("n", "9434765919").expect("valid");
    assert_plaintext_absent(&f, &[]).await;
    assert!(
        f.store
            .find_patient_by_nhs_number(&nhs)
            .await
            .expect("query")
            .is_none()
    );
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let f = Fixture::start().await;
    let status = f
        .client()
        .get_patient(pb::GetPatientRequest {
            patient_id: "x".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Signed by a key identity never published.
    let forger = TestAuthority::new();
    let forged = forger.token(
        PrincipalKind::Admin,
        "X26",
        "admin",
        &["admin", "patients.read"],
    );
    let status = f
        .client()
        .get_patient(with_token(
            pb::GetPatientRequest {
                patient_id: "x".into(),
            },
            &forged,
        ))
        .await
        .expect_err("forged");
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = f
        .client()
        .get_patient(with_token(
            pb::GetPatientRequest {
                patient_id: "x".into(),
            },
            "not-a-jwt",
        ))
        .await
        .expect_err("garbage");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn tokens_need_matching_credentials_and_granted_scopes() {
    let f = Fixture::start().await;
    let status = f
        .client()
        .issue_token(pb::IssueTokenRequest {
            client_id: "admin".into(),
            client_secret: "wrong".into(),
            scopes: vec![],
            purpose: 0,
            ..Default::default()
        })
        .await
        .expect_err("wrong secret");
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = f
        .client()
        .issue_token(pb::IssueTokenRequest {
            client_id: "admin".into(),
            client_secret: ADMIN_SECRET.into(),
            scopes: vec!["records.write".into()],
            purpose: 0,
            ..Default::default()
        })
        .await
        .expect_err("scope not granted");
    assert_eq!(status.code(), Code::InvalidArgument);

    let jwks = f
        .client()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("public")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].crv, "Ed25519");
}

#[tokio::test]
async fn staff_principals_act_for_an_existing_organisation() {
    let f = Fixture::start().await;
    let admin = f.admin().await;
    let mut client = f.client();
    let status = client
        .create_principal(with_token(
            pb::CreatePrincipalRequest {
                kind: PrincipalKind::Staff as i32,
                display_name: "Dr Who".into(),
                organisation_ods_code: "A81001".into(),
                role: "R8000".into(),
                scopes: vec![],
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("no such organisation");
    assert_eq!(status.code(), Code::FailedPrecondition);

    client
        .create_organisation(with_token(
            pb::CreateOrganisationRequest {
                ods_code: "a81001".into(),
                name: "Test Surgery".into(),
            },
            &admin,
        ))
        .await
        .expect("organisation");
    let status = client
        .create_organisation(with_token(
            pb::CreateOrganisationRequest {
                ods_code: "A81001".into(),
                name: "Again".into(),
            },
            &admin,
        ))
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists);

    let created = client
        .create_principal(with_token(
            pb::CreatePrincipalRequest {
                kind: PrincipalKind::Staff as i32,
                display_name: "Dr Who".into(),
                organisation_ods_code: "A81001".into(),
                role: "R8000".into(),
                scopes: vec![],
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("principal")
        .into_inner();
    let principal = created.principal.expect("principal");
    let staff = f.token(&principal.client_id, &created.client_secret).await;

    // Staff may register patients but not administer the platform.
    client
        .register_patient(with_token(jane("9434765919"), &staff))
        .await
        .expect("staff registers");
    let status = client
        .create_organisation(with_token(
            pb::CreateOrganisationRequest {
                ods_code: "RR8".into(),
                name: "Trust".into(),
            },
            &staff,
        ))
        .await
        .expect_err("not admin");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("admin"));
}

#[tokio::test]
async fn oversize_calls_fail_cleanly_and_the_server_keeps_serving() {
    let f = Fixture::start().await;
    let staff = f.staff("A81001", "R8000").await;
    let mut huge = jane("9434765919");
    huge.demographics.as_mut().expect("d").family_name = "x".repeat(100 * 1024);
    let status = f
        .client()
        .register_patient(with_token(huge, &staff))
        .await
        .expect_err("oversize");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );

    f.client()
        .register_patient(with_token(jane("9434765919"), &staff))
        .await
        .expect("still serving");
}

/// Reads the patients table raw: none of `needles` (nor the test patient's
/// NHS number) may appear in it.
async fn assert_plaintext_absent(f: &Fixture, needles: &[&str]) {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(f.db.url())
        .await
        .expect("connect");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT * FROM identity_patients",
        ))
        .await
        .expect("rows");
    for row in rows {
        let index: String = row.try_get("", "nhs_index").expect("index");
        let sealed: Vec<u8> = row.try_get("", "sealed").expect("sealed");
        for needle in needles.iter().chain(&["9434765919"]) {
            assert!(!index.contains(needle), "{needle} in the index");
            assert!(
                !sealed.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} at rest"
            );
        }
    }
    db.close().await.ok();
}

#[tokio::test]
async fn patients_are_encrypted_at_rest() {
    let f = Fixture::start().await;
    let token = f.staff("A81001", "R8000").await;
    f.client()
        .register_patient(with_token(jane("943 476 5919"), &token))
        .await
        .expect("registered");
    assert_plaintext_absent(&f, &["Smith", "Jane", "1980-02-29", "LS1 4AP"]).await;
}

#[tokio::test]
async fn nonsense_is_refused_naming_the_field_and_nothing_is_stored() {
    let f = Fixture::start().await;
    let admin = f.admin().await;
    let mut client = f.client();
    let expect_invalid = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    };

    for (ods_code, name) in [("A8-001", "Surgery"), ("", "Surgery"), ("A81001", " ")] {
        let status = client
            .create_organisation(with_token(
                pb::CreateOrganisationRequest {
                    ods_code: ods_code.into(),
                    name: name.into(),
                },
                &admin,
            ))
            .await
            .expect_err("bad organisation");
        expect_invalid(
            status,
            if ods_code == "A81001" {
                "name"
            } else {
                "ods_code"
            },
        );
    }
    let status = client
        .get_organisation(with_token(
            pb::GetOrganisationRequest {
                ods_code: "A81001".into(),
            },
            &admin,
        ))
        .await
        .expect_err("nothing was stored");
    assert_eq!(status.code(), Code::NotFound);

    let principal = |kind: PrincipalKind, role: &str, scopes: &[&str]| pb::CreatePrincipalRequest {
        kind: kind as i32,
        display_name: "Someone".into(),
        organisation_ods_code: "X26".into(),
        role: role.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let with_purposes = |kind: PrincipalKind, purposes: &[i32]| pb::CreatePrincipalRequest {
        purposes: purposes.to_vec(),
        ..principal(kind, "R8000", &[])
    };
    let mut bad_kind = principal(PrincipalKind::Staff, "R8000", &[]);
    bad_kind.kind = 42;
    let mut patient_at_org = patient_request("some-patient");
    patient_at_org.organisation_ods_code = "X26".into();
    let mut patient_with_role = patient_request("some-patient");
    patient_with_role.role = "R8000".into();
    let mut staff_for_patient = principal(PrincipalKind::Staff, "R8000", &[]);
    staff_for_patient.patient_id = "some-patient".into();
    let mut patient_writer = patient_request("some-patient");
    patient_writer.scopes = vec!["records.write".into()];
    for (request, field) in [
        (principal(PrincipalKind::Admin, "admin", &[]), "kind"),
        (principal(PrincipalKind::Unspecified, "", &[]), "kind"),
        (bad_kind, "kind"),
        (principal(PrincipalKind::Staff, "", &[]), "role"),
        (principal(PrincipalKind::Staff, "R8000 OR 1=1", &[]), "role"),
        (
            principal(PrincipalKind::Staff, "R8000", &["root"]),
            "scopes",
        ),
        (principal(PrincipalKind::Service, "", &["admin"]), "scopes"),
        (with_purposes(PrincipalKind::Staff, &[99]), "purposes"),
        (
            with_purposes(PrincipalKind::Staff, &[Purpose::PatientAccess as i32]),
            "purposes",
        ),
        (
            with_purposes(PrincipalKind::Service, &[Purpose::DirectCare as i32]),
            "purposes",
        ),
        (patient_at_org, "organisation_ods_code"),
        (patient_with_role, "role"),
        (patient_writer, "scopes"),
        (
            pb::CreatePrincipalRequest {
                purposes: vec![Purpose::DirectCare as i32],
                ..patient_request("some-patient")
            },
            "purposes",
        ),
        (patient_request(""), "patient_id"),
        (staff_for_patient, "patient_id"),
    ] {
        let status = client
            .create_principal(with_token(request, &admin))
            .await
            .expect_err(field);
        expect_invalid(status, field);
    }
    assert_eq!(f.principal_rows().await, 1, "only the bootstrap admin");

    let status = client
        .issue_token(pb::IssueTokenRequest {
            client_id: String::new(),
            client_secret: "x".into(),
            scopes: vec![],
            purpose: 0,
            ..Default::default()
        })
        .await
        .expect_err("no client id");
    expect_invalid(status, "client_id");
    let staff = f.staff("A81001", "R8000").await;
    let status = client
        .get_patient(with_token(
            pb::GetPatientRequest {
                patient_id: String::new(),
            },
            &staff,
        ))
        .await
        .expect_err("no id");
    expect_invalid(status, "patient_id");
    assert!(f.events().await.is_empty(), "nothing was read");
}

#[tokio::test]
async fn a_patient_principal_is_bound_to_its_patient() {
    let f = Fixture::start().await;
    let staff = f.staff("A81001", "R8000").await;
    let jane = f.register(jane("9434765919"), &staff).await;
    let bob = f
        .register(person("9990000018", "Bob", "Jones", "1950-01-01"), &staff)
        .await;

    let status = f
        .create(patient_request("no-such-patient"))
        .await
        .expect_err("unknown patient");
    assert_eq!(status.code(), Code::FailedPrecondition);

    let (principal, secret) = f
        .create(patient_request(&jane.patient_id))
        .await
        .expect("patient principal");
    assert_eq!(principal.kind, PrincipalKind::Patient as i32);
    assert_eq!(principal.patient_id, jane.patient_id);
    assert_eq!(principal.organisation_ods_code, "");
    assert_eq!(principal.purposes, vec![Purpose::PatientAccess as i32]);

    let token = f.token(&principal.client_id, &secret).await;
    let claims = f.verify(&token).await;
    assert_eq!(claims.kind, PrincipalKind::Patient);
    assert_eq!(claims.patient.as_deref(), Some(jane.patient_id.as_str()));
    assert_eq!(claims.purpose, Some(Purpose::PatientAccess));
    assert_eq!(claims.purposes, [Purpose::PatientAccess].into());
    assert!(claims.capabilities.is_empty());
    assert!(claims.organisation.is_empty());
    assert!(!claims.scopes.contains("records.write"));
    let status = f
        .issue(&principal.client_id, &secret, Purpose::DirectCare)
        .await
        .expect_err("a patient acts for patient access only");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Their own demographics, without asking consent; nobody else's.
    let own = f
        .client()
        .get_patient(with_token(get(&jane.patient_id), &token))
        .await
        .expect("own")
        .into_inner()
        .patient
        .expect("patient");
    assert_eq!(own.patient_id, jane.patient_id);
    let before = f.events().await.len();
    let status = f
        .client()
        .get_patient(with_token(get(&bob.patient_id), &token))
        .await
        .expect_err("another patient");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(!status.message().contains("Bob"), "{}", status.message());
    assert!(f.consent.asked.lock().expect("lock").is_empty());

    // Both audited, as the patient.
    let events = f.events().await;
    let read = &events[before - 1];
    assert_eq!(
        (read.patient_id.as_str(), read.outcome),
        (jane.patient_id.as_str(), Outcome::Success as i32)
    );
    assert_eq!(read.purpose, Purpose::PatientAccess as i32);
    let actor = read.actor.as_ref().expect("actor");
    assert_eq!(actor.kind, PrincipalKind::Patient as i32);
    assert_eq!(actor.patient_id, jane.patient_id);
    let denied = events.last().expect("denial");
    assert_eq!(
        (denied.patient_id.as_str(), denied.outcome),
        (bob.patient_id.as_str(), Outcome::Denied as i32)
    );

    // A patient may not register anyone.
    let status = f
        .client()
        .register_patient(with_token(
            person("9990000026", "Eve", "Smith", "1990-01-01"),
            &token,
        ))
        .await
        .expect_err("patients do not register patients");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_token_names_only_a_permitted_purpose() {
    let f = Fixture::start().await;
    f.organisation("A81001").await;
    let (staff, staff_secret) = f
        .create(staff_request("A81001", "R8000"))
        .await
        .expect("staff");
    assert_eq!(staff.purposes, vec![Purpose::DirectCare as i32]);
    let status = f
        .issue(&staff.client_id, &staff_secret, Purpose::Research)
        .await
        .expect_err("research is not permitted");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("purpose `research` is not permitted to this client"),
        "{}",
        status.message()
    );
    let status = f
        .client()
        .issue_token(pb::IssueTokenRequest {
            client_id: staff.client_id.clone(),
            client_secret: staff_secret.clone(),
            scopes: vec![],
            purpose: 42,
            ..Default::default()
        })
        .await
        .expect_err("no such purpose");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("purpose"));

    // A research body: research only, its tokens say so.
    f.organisation("RB1").await;
    let (research, secret) = f
        .create(pb::CreatePrincipalRequest {
            kind: PrincipalKind::Application as i32,
            display_name: "Research body".into(),
            organisation_ods_code: "RB1".into(),
            purposes: vec![Purpose::Research as i32],
            ..Default::default()
        })
        .await
        .expect("application");
    assert_eq!(research.purposes, vec![Purpose::Research as i32]);
    let claims = f.verify(&f.token(&research.client_id, &secret).await).await;
    assert_eq!(claims.purpose, Some(Purpose::Research));
    assert_eq!(claims.purposes, [Purpose::Research].into());
    let status = f
        .issue(&research.client_id, &secret, Purpose::DirectCare)
        .await
        .expect_err("direct care is not permitted");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("direct_care"));

    // A service has no purpose of its own; asking for one is refused.
    let (service, secret) = f
        .create(pb::CreatePrincipalRequest {
            kind: PrincipalKind::Service as i32,
            display_name: "records".into(),
            organisation_ods_code: "X26".into(),
            ..Default::default()
        })
        .await
        .expect("service");
    assert!(service.purposes.is_empty());
    let claims = f.verify(&f.token(&service.client_id, &secret).await).await;
    assert_eq!(claims.purpose, None);
    assert!(claims.purposes.is_empty());
    assert!(
        f.issue(&service.client_id, &secret, Purpose::DirectCare)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn capabilities_come_from_the_role_map_for_staff_only() {
    let f = Fixture::start().await;
    let clinician = f.verify(&f.staff("A81001", "R8000").await).await;
    assert_eq!(
        clinician.capabilities,
        [Capability::RecordDirectives, Capability::Refer].into()
    );
    let clerk = f.verify(&f.staff("A81001", "r8008").await).await;
    assert_eq!(clerk.capabilities, [Capability::AssertRelationships].into());
    let student = f.verify(&f.staff("A81001", "R8004").await).await;
    assert!(
        student.capabilities.is_empty(),
        "a role with no capabilities"
    );
    // A role the map does not name is not one staff may hold.
    let status = f
        .client()
        .create_principal(with_token(
            staff_request("A81001", "R9999"),
            &f.admin().await,
        ))
        .await
        .expect_err("unknown role");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("R9999"), "{}", status.message());

    let (app, secret) = f
        .create(pb::CreatePrincipalRequest {
            kind: PrincipalKind::Application as i32,
            display_name: "PAS".into(),
            organisation_ods_code: "A81001".into(),
            role: "R8000".into(),
            scopes: vec![
                "patients.read".into(),
                "patients.write".into(),
                "consent.write".into(),
            ],
            ..Default::default()
        })
        .await
        .expect("application");
    let claims = f.verify(&f.token(&app.client_id, &secret).await).await;
    assert!(
        claims.capabilities.is_empty(),
        "a role gives capabilities to staff only"
    );
    assert!(claims.scopes.contains("consent.write"));
}

#[tokio::test]
async fn admin_administers_but_reads_no_patient() {
    let f = Fixture::start().await;
    let admin = f.admin().await;
    let claims = f.verify(&admin).await;
    assert_eq!(claims.scopes, ["admin".to_owned()].into());
    assert_eq!(claims.purpose, None);

    let staff = f.staff("A81001", "R8000").await;
    let jane = f.register(jane("9434765919"), &staff).await;
    let status = f
        .client()
        .register_patient(with_token(
            person("9990000018", "Bob", "Jones", "1950-01-01"),
            &admin,
        ))
        .await
        .expect_err("admin registers nobody");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = f
        .client()
        .get_patient(with_token(get(&jane.patient_id), &admin))
        .await
        .expect_err("admin reads nobody");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("GetPatient"),
        "{}",
        status.message()
    );
    assert!(f.consent.asked.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn registering_again_returns_the_patient_only_for_matching_details() {
    let f = Fixture::start().await;
    let staff = f.staff("A81001", "R8000").await;
    let sian = f
        .register(person("9434765919", "Siân", "Llŷr", "1980-02-29"), &staff)
        .await;

    // Case, spacing and accents do not matter.
    let again = f
        .client()
        .register_patient(with_token(
            person("943 476 5919", "SIAN", "  LLYR ", "1980-02-29"),
            &staff,
        ))
        .await
        .expect("matching details")
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.patient.expect("patient").patient_id, sian.patient_id);

    // Anything else is refused, revealing nothing stored.
    let before = f.events().await.len();
    for (family, birth_date) in [("Smith", "1980-02-29"), ("Llyr", "1980-03-01")] {
        let status = f
            .client()
            .register_patient(with_token(
                person("9434765919", "Siân", family, birth_date),
                &staff,
            ))
            .await
            .expect_err("other details");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "this NHS number is registered with other details"
        );
        for stored in ["Siân", "Sian", "Llŷr", "1980", &sian.patient_id] {
            assert!(!status.message().contains(stored), "{stored} revealed");
        }
    }
    // The attempts are on the patient's access report.
    let events = f.events().await;
    assert_eq!(events.len(), before + 2);
    for event in &events[before..] {
        assert_eq!(event.patient_id, sian.patient_id);
        assert_eq!(event.outcome, Outcome::Denied as i32);
        assert_eq!(event.outcome_reason, "DETAILS_DO_NOT_MATCH");
    }
}

#[tokio::test]
async fn staff_reads_are_decided_by_consent_and_audited_or_refused() {
    let f = Fixture::start().await;
    let staff = f.staff("A81001", "R8000").await;
    let jane = f.register(jane("9434765919"), &staff).await;
    let reads = |events: &[AuditEvent]| {
        events
            .iter()
            .filter(|e| e.action == Action::Read as i32)
            .cloned()
            .collect::<Vec<_>>()
    };

    // Permitted: the data, with the decision in audit.
    let read = f
        .client()
        .get_patient(with_token(get(&jane.patient_id), &staff))
        .await
        .expect("permitted")
        .into_inner();
    assert_eq!(read.patient.expect("patient").patient_id, jane.patient_id);
    {
        let asked = f.consent.asked.lock().expect("lock");
        let (patient, actor, purpose, category) = asked.last().expect("consent asked");
        assert_eq!(patient, &jane.patient_id);
        assert_eq!(actor.organisation_ods_code, "A81001");
        assert_eq!(*purpose, Purpose::DirectCare);
        assert_eq!(*category, RecordCategory::General);
    }
    let events = reads(&f.events().await);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, Outcome::Success as i32);
    assert_eq!(events[0].decision_id, "decision-permit");

    // Denied: PERMISSION_DENIED with consent's reason, and audited.
    f.answer(Answer::Deny);
    let status = f
        .client()
        .get_patient(with_token(get(&jane.patient_id), &staff))
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("NO_CARE_RELATIONSHIP"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("Smith"));
    let events = reads(&f.events().await);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].outcome, Outcome::Denied as i32);
    assert_eq!(events[1].outcome_reason, "NO_CARE_RELATIONSHIP");
    assert_eq!(events[1].decision_id, "decision-deny");

    // Consent comes before NOT_FOUND: existence is data too.
    let status = f
        .client()
        .get_patient(with_token(get("no-such-patient"), &staff))
        .await
        .expect_err("denied");
    assert_eq!(status.code(), Code::PermissionDenied);

    // consent down: UNAVAILABLE, no data.
    f.answer(Answer::Down);
    let status = f
        .client()
        .get_patient(with_token(get(&jane.patient_id), &staff))
        .await
        .expect_err("consent down");
    assert_eq!(status.code(), Code::Unavailable);

    // audit down: a read is served only while its event can wait, durable,
    // in identity's outbox; once audit has been unreachable longer than the
    // bound, UNAVAILABLE and no data (fail closed), for reads and
    // registrations alike.
    f.answer(Answer::Permit);
    f.audit.set_down(true);
    f.client()
        .get_patient(with_token(get(&jane.patient_id), &staff))
        .await
        .expect("within the bound");
    for _ in 0..500 {
        if f.outbox.admit().is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = f
        .client()
        .get_patient(with_token(get(&jane.patient_id), &staff))
        .await
        .expect_err("audit down");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(!status.message().contains("Smith"));
    let status = f
        .client()
        .register_patient(with_token(self::jane("9434765919"), &staff))
        .await
        .expect_err("audit down");
    assert_eq!(status.code(), Code::Unavailable);
    f.audit.set_down(false);
    for _ in 0..500 {
        if f.outbox.admit().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // An application of a related organisation reads the same way.
    let (app, secret) = f
        .create(pb::CreatePrincipalRequest {
            kind: PrincipalKind::Application as i32,
            display_name: "PAS".into(),
            organisation_ods_code: "A81001".into(),
            ..Default::default()
        })
        .await
        .expect("application");
    let app = f.token(&app.client_id, &secret).await;
    f.client()
        .get_patient(with_token(get(&jane.patient_id), &app))
        .await
        .expect("permitted application");
}

#[tokio::test]
async fn identity_calls_consent_and_audit_with_a_service_token_it_signs_itself() {
    let f = Fixture::start().await;
    let own = SelfTokens::new(f.tokens.clone());
    let token = own.token().await.expect("token");
    assert_eq!(own.token().await.expect("cached"), token, "cached");
    let claims = f.verify(&token).await;
    assert_eq!(claims.id, "identity");
    assert_eq!(claims.kind, PrincipalKind::Service);
    assert_eq!(
        claims.scopes,
        [
            "consent.evaluate".to_owned(),
            "audit.append".to_owned(),
            "consent.registrations".to_owned()
        ]
        .into()
    );
    assert!(claims.purposes.is_empty());
    assert!(claims.capabilities.is_empty());
}

#[tokio::test]
async fn a_platform_service_resolves_a_patient_id_and_nonsense_is_refused() {
    let f = Fixture::start().await;
    let staff = f.staff("A81001", "R8000").await;
    let jane = f.register(jane("9434765919"), &staff).await;
    let (service, secret) = f
        .create(pb::CreatePrincipalRequest {
            kind: PrincipalKind::Service as i32,
            display_name: "consent service".into(),
            organisation_ods_code: "X26".into(),
            ..Default::default()
        })
        .await
        .expect("service principal");
    let service = f.token(&service.client_id, &secret).await;
    let resolve = |patient_id: &str| {
        with_token(
            pb::ResolvePatientRequest {
                patient_id: patient_id.into(),
            },
            &service,
        )
    };
    let before = f.events().await.len();

    let resolved = f
        .client()
        .resolve_patient(resolve(&jane.patient_id))
        .await
        .expect("known")
        .into_inner();
    assert_eq!(resolved.patient_id, jane.patient_id);
    assert_eq!(resolved.superseded_by, "");

    for (bad, code) in [
        ("", Code::InvalidArgument),
        (&"p".repeat(65), Code::InvalidArgument),
        ("no-such-patient", Code::NotFound),
    ] {
        let status = f
            .client()
            .resolve_patient(resolve(bad))
            .await
            .expect_err("nonsense");
        assert_eq!(status.code(), code, "{bad:?}");
        assert!(
            status.message().contains("patient_id"),
            "{}",
            status.message()
        );
    }
    // Existence only, to a platform service: no demographics, nothing logged.
    assert_eq!(f.events().await.len(), before);

    // Not for staff: it is no way round GetPatient's consent check.
    let status = f
        .client()
        .resolve_patient(with_token(
            pb::ResolvePatientRequest {
                patient_id: jane.patient_id.clone(),
            },
            &staff,
        ))
        .await
        .expect_err("staff");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn issue_token_is_rate_limited_per_client() {
    let f = Fixture::start().await;
    for _ in 0..ISSUE_LIMIT {
        f.issue("admin", ADMIN_SECRET, Purpose::Unspecified)
            .await
            .expect("within the limit");
    }
    let status = f
        .issue("admin", ADMIN_SECRET, Purpose::Unspecified)
        .await
        .expect_err("past the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("20 tokens a minute"),
        "{}",
        status.message()
    );
    // A wrong secret counts the same: guessing is slowed as much.
    let status = f
        .issue("admin", "not-the-secret", Purpose::Unspecified)
        .await
        .expect_err("past the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    // Another client is not held back by this one.
    let status = f
        .issue("someone-else", "guess", Purpose::Unspecified)
        .await
        .expect_err("unknown client");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn introspect_token_says_whether_a_token_is_active_and_what_it_says() {
    let f = Fixture::start().await;
    let clinician = f.staff("A81001", "R8000").await;
    let (service, secret) = f
        .create(pb::CreatePrincipalRequest {
            kind: PrincipalKind::Service as i32,
            display_name: "Resource server".into(),
            organisation_ods_code: "X26".into(),
            scopes: vec!["tokens.introspect".into()],
            ..Default::default()
        })
        .await
        .expect("service");
    let service = f.token(&service.client_id, &secret).await;
    let introspect = |token: &str, as_who: &str| {
        let request = with_token(
            pb::IntrospectTokenRequest {
                token: token.into(),
            },
            as_who,
        );
        let mut client = f.client();
        async move { client.introspect_token(request).await }
    };

    let active = introspect(&clinician, &service)
        .await
        .expect("answered")
        .into_inner();
    assert!(active.active);
    let actor = active.actor.expect("actor");
    assert_eq!(
        (actor.organisation_ods_code.as_str(), actor.role.as_str()),
        ("A81001", "R8000")
    );
    // Exactly what every service's auth layer reads from it.
    assert_eq!(actor, f.verify(&clinician).await.actor());
    assert!(active.scopes.contains(&"records.read".to_owned()));
    assert_eq!(active.purposes, [Purpose::DirectCare as i32]);
    let expires = active.expire_time.expect("expiry").seconds;
    let now = chrono::Utc::now().timestamp();
    assert!((now + 800..=now + 900).contains(&expires), "{expires}");

    // Forged, altered or nonsense: inactive, and nothing more said.
    let forged = sharedcare_kit::testing::TestAuthority::new().token(
        PrincipalKind::Staff,
        "A81001",
        "R8000",
        &["records.read"],
    );
    let mut altered = clinician.clone();
    altered.pop();
    altered.push(if clinician.ends_with('A') { 'B' } else { 'A' });
    for token in [forged.as_str(), altered.as_str(), "not.a.token"] {
        let answer = introspect(token, &service)
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(answer, pb::IntrospectTokenResponse::default(), "{token}");
    }

    let status = introspect(" ", &service).await.expect_err("no token");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("token"),
        "{}",
        status.message()
    );
    // Only services holding tokens.introspect.
    let status = introspect(&service, &clinician)
        .await
        .expect_err("staff may not");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}
