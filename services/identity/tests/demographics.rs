//! Demographics over real gRPC: every detail kept, changed only with the
//! version in hand (history kept), a restricted record's address, telecom
//! and GP practice withheld from every caller without `view_restricted`
//! in every RPC that returns a patient, and bad details refused naming the
//! field with nothing stored.

mod support;

use support::*;

const NHS: &str = "9434765919";

fn full_details() -> pb::Demographics {
    pb::Demographics {
        given_names: vec!["Zoë".into()],
        family_name: "Nguyễn".into(),
        birth_date: "1975-11-23".into(),
        gender: pb::Gender::Female as i32,
        postcode: "LS1 4AP".into(),
        previous_family_names: vec!["O'Brien".into()],
        death_date: String::new(),
        address_lines: vec!["1 Park Row".into(), "Leeds".into()],
        telecom: vec![
            pb::ContactPoint {
                system: pb::ContactSystem::Phone as i32,
                value: "+44 113 496 0000".into(),
            },
            pb::ContactPoint {
                system: pb::ContactSystem::Email as i32,
                value: "zoe@example.org".into(),
            },
        ],
        // Registered at the practice that registers her in these tests.
        gp_practice_ods_code: "A81001".into(),
        identifiers: vec![pb::LocalIdentifier {
            system: "https://trust.example/Id/mrn".into(),
            value: "MRN-0042".into(),
            issuing_ods_code: "RR8".into(),
        }],
        restricted: false,
    }
}

fn register(d: pb::Demographics) -> pb::RegisterPatientRequest {
    pb::RegisterPatientRequest {
        nhs_number: NHS.into(),
        demographics: Some(d),
        confirm_new_patient: false,
    }
}

fn update(id: &str, if_match: i64, d: pb::Demographics) -> pb::UpdateDemographicsRequest {
    pb::UpdateDemographicsRequest {
        patient_id: id.into(),
        demographics: Some(d),
        if_match,
    }
}

#[tokio::test]
async fn demographics_change_only_from_the_version_in_hand_and_history_is_kept() {
    let f = Fixture::start().await;
    let clinician = f.staff("A81001", "R8000").await;
    let tracer = f.staff("A81001", "tracer").await;
    let registrar = f.staff("A81001", "R8008").await;
    let first = f.register(register(full_details()), &registrar).await;
    assert_eq!(first.version, 1);
    let kept = first.demographics.clone().expect("demographics");
    assert_eq!(kept, full_details(), "every detail kept, names intact");

    // Married: a new family name, the old one kept as previous.
    let married = pb::Demographics {
        family_name: "Smith".into(),
        previous_family_names: vec!["Nguyễn".into(), "O'Brien".into()],
        ..full_details()
    };
    let second = f
        .client()
        .update_demographics(with_token(
            update(&first.patient_id, 1, married.clone()),
            &clinician,
        ))
        .await
        .expect("updated")
        .into_inner()
        .patient
        .expect("patient");
    assert_eq!(second.version, 2);
    assert_eq!(second.demographics, Some(married.clone()));

    // The version in hand is no longer current: refused, nothing stored.
    let status = f
        .client()
        .update_demographics(with_token(
            update(&first.patient_id, 1, full_details()),
            &clinician,
        ))
        .await
        .expect_err("stale");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with("if_match"),
        "{}",
        status.message()
    );
    assert!(status.message().contains('2'), "{}", status.message());

    let versions = f
        .client()
        .list_patient_versions(with_token(
            pb::ListPatientVersionsRequest {
                patient_id: first.patient_id.clone(),
            },
            &clinician,
        ))
        .await
        .expect("versions")
        .into_inner()
        .versions;
    let numbers: Vec<i64> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, vec![2, 1]);
    assert_eq!(versions[1].demographics, Some(full_details()));

    // The trace finds her by her maiden name too.
    let found = f
        .client()
        .trace_patient(with_token(
            pb::TracePatientRequest {
                demographics: Some(pb::Demographics {
                    given_names: vec!["Zoe".into()],
                    family_name: "Nguyen".into(),
                    birth_date: "1975-11-23".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &tracer,
        ))
        .await
        .expect("traced")
        .into_inner()
        .matches;
    assert_eq!(found.len(), 1);
    let family = found[0]
        .fields
        .iter()
        .find(|c| c.field == "family_name")
        .expect("family compared");
    assert_eq!(family.how, "previous family name");
    f.answer(Answer::Deny);
    let status = f
        .client()
        .update_demographics(with_token(
            update(&first.patient_id, 2, full_details()),
            &clinician,
        ))
        .await
        .expect_err("consent refuses");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_restricted_record_withholds_address_telecom_and_gp_practice() {
    let f = Fixture::start().await;
    let clinician = f.staff("A81001", "R8000").await;
    let guardian = f.staff("A81001", "guardian").await;
    let tracer = f.staff("A81001", "tracer").await;
    let registrar = f.staff("A81001", "R8008").await;
    let restricted = pb::Demographics {
        restricted: true,
        ..full_details()
    };
    let registered = f
        .client()
        .register_patient(with_token(register(restricted.clone()), &registrar))
        .await
        .expect("registered")
        .into_inner()
        .patient
        .expect("patient");
    let assert_withheld = |p: &pb::Patient, who: &str| {
        assert!(p.details_withheld, "{who}");
        let d = p.demographics.as_ref().expect("demographics");
        assert!(d.address_lines.is_empty(), "{who}");
        assert!(d.telecom.is_empty(), "{who}");
        assert!(d.postcode.is_empty(), "{who}");
        assert!(d.gp_practice_ods_code.is_empty(), "{who}");
        assert_eq!(d.family_name, "Nguyễn", "{who}: the name is not withheld");
    };
    assert_withheld(&registered, "RegisterPatient");
    let id = registered.patient_id.clone();
    let get = |token: &str| {
        let mut client = f.client();
        let request = with_token(get(&id), token);
        async move {
            client
                .get_patient(request)
                .await
                .expect("read")
                .into_inner()
                .patient
                .expect("patient")
        }
    };
    assert_withheld(&get(&clinician).await, "GetPatient");
    let seen = get(&guardian).await;
    assert!(!seen.details_withheld);
    assert_eq!(seen.demographics, Some(restricted.clone()));

    // The trace still finds them, and says nothing of where they live.
    let traced = f
        .client()
        .trace_patient(with_token(
            pb::TracePatientRequest {
                demographics: Some(pb::Demographics {
                    given_names: vec!["Zoe".into()],
                    family_name: "Nguyen".into(),
                    birth_date: "1975-11-23".into(),
                    postcode: "LS1 4AP".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &tracer,
        ))
        .await
        .expect("traced")
        .into_inner()
        .matches;
    assert_eq!(traced.len(), 1);
    assert_withheld(traced[0].patient.as_ref().expect("patient"), "TracePatient");
    assert!(traced[0].fields.iter().all(|c| c.field != "postcode"));

    // A change by someone who cannot see the details leaves them as they
    // were, and cannot lift the restriction.
    let renamed = pb::Demographics {
        given_names: vec!["Zoe".into()],
        restricted: true,
        postcode: String::new(),
        address_lines: vec![],
        telecom: vec![],
        gp_practice_ods_code: String::new(),
        ..full_details()
    };
    let changed = f
        .client()
        .update_demographics(with_token(update(&id, 1, renamed), &clinician))
        .await
        .expect("updated")
        .into_inner()
        .patient
        .expect("patient");
    assert_withheld(&changed, "UpdateDemographics");
    let after = get(&guardian).await;
    let d = after.demographics.expect("demographics");
    assert_eq!(d.given_names, vec!["Zoe"]);
    assert_eq!(d.address_lines, restricted.address_lines);
    assert_eq!(d.telecom, restricted.telecom);
    let status = f
        .client()
        .update_demographics(with_token(update(&id, 2, full_details()), &clinician))
        .await
        .expect_err("lifting");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("view_restricted"));
    let versions = f
        .client()
        .list_patient_versions(with_token(
            pb::ListPatientVersionsRequest { patient_id: id },
            &clinician,
        ))
        .await
        .expect("versions")
        .into_inner()
        .versions;
    for v in &versions {
        assert_withheld(v, "ListPatientVersions");
    }
}

#[tokio::test]
async fn bad_details_are_refused_naming_the_field_and_nothing_is_stored() {
    let f = Fixture::start().await;
    let clinician = f.staff("A81001", "R8000").await;
    let future = (chrono::Utc::now().date_naive() + chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    let cases: Vec<(pb::Demographics, &str)> = vec![
        (
            pb::Demographics {
                death_date: "1970-01-01".into(),
                ..full_details()
            },
            "demographics.death_date",
        ),
        (
            pb::Demographics {
                death_date: future,
                ..full_details()
            },
            "demographics.death_date",
        ),
        (
            pb::Demographics {
                telecom: vec![pb::ContactPoint {
                    system: pb::ContactSystem::Phone as i32,
                    value: "call me".into(),
                }],
                ..full_details()
            },
            "demographics.telecom[0].value",
        ),
        (
            pb::Demographics {
                telecom: vec![pb::ContactPoint {
                    system: pb::ContactSystem::Email as i32,
                    value: "not-an-address".into(),
                }],
                ..full_details()
            },
            "demographics.telecom[0].value",
        ),
        (
            pb::Demographics {
                telecom: vec![pb::ContactPoint {
                    system: 0,
                    value: "0113 496 0000".into(),
                }],
                ..full_details()
            },
            "demographics.telecom[0].system",
        ),
        (
            pb::Demographics {
                gp_practice_ods_code: "not an ods code!".into(),
                ..full_details()
            },
            "demographics.gp_practice_ods_code",
        ),
        (
            pb::Demographics {
                identifiers: vec![pb::LocalIdentifier {
                    system: "mrn".into(),
                    value: "1".into(),
                    issuing_ods_code: "RR8".into(),
                }],
                ..full_details()
            },
            "demographics.identifiers[0].system",
        ),
        (
            pb::Demographics {
                address_lines: vec!["a".into(); 6],
                ..full_details()
            },
            "demographics.address_lines",
        ),
        (
            pb::Demographics {
                address_lines: vec!["1 Park\u{0} Row".into()],
                ..full_details()
            },
            "demographics.address_lines",
        ),
        (
            pb::Demographics {
                previous_family_names: vec!["x".repeat(101)],
                ..full_details()
            },
            "demographics.previous_family_names",
        ),
    ];
    for (d, field) in cases {
        let status = f
            .client()
            .register_patient(with_token(register(d), &clinician))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    assert!(f.events().await.is_empty(), "nothing registered or audited");
}

#[tokio::test]
async fn nonsense_updates_and_version_lists_are_refused_and_change_nothing() {
    let f = Fixture::start().await;
    let clinician = f.staff("A81001", "R8000").await;
    let registrar = f.staff("A81001", "R8008").await;
    let registered = f.register(register(full_details()), &registrar).await;
    let id = registered.patient_id.clone();
    let before = f.events().await.len();
    let bad_updates = [
        (
            update(&id, 0, full_details()),
            Code::InvalidArgument,
            "if_match",
        ),
        (
            update("", 1, full_details()),
            Code::InvalidArgument,
            "patient_id",
        ),
        (
            pb::UpdateDemographicsRequest {
                demographics: None,
                ..update(&id, 1, full_details())
            },
            Code::InvalidArgument,
            "demographics",
        ),
        (
            update(
                &id,
                1,
                pb::Demographics {
                    telecom: vec![pb::ContactPoint {
                        system: pb::ContactSystem::Email as i32,
                        value: "nobody".into(),
                    }],
                    ..full_details()
                },
            ),
            Code::InvalidArgument,
            "demographics.telecom[0].value",
        ),
        (
            update(
                &id,
                1,
                pb::Demographics {
                    birth_date: "2999-01-01".into(),
                    ..full_details()
                },
            ),
            Code::InvalidArgument,
            "demographics.birth_date",
        ),
    ];
    for (request, code, field) in bad_updates {
        let status = f
            .client()
            .update_demographics(with_token(request, &clinician))
            .await
            .expect_err(field);
        assert_eq!(status.code(), code, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    // An unknown patient: NOT_FOUND, the attempt audited, nothing changed.
    let status = f
        .client()
        .update_demographics(with_token(
            update("no-such-patient", 1, full_details()),
            &clinician,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    for (patient_id, code) in [
        ("", Code::InvalidArgument),
        ("no-such-patient", Code::NotFound),
    ] {
        let status = f
            .client()
            .list_patient_versions(with_token(
                pb::ListPatientVersionsRequest {
                    patient_id: patient_id.into(),
                },
                &clinician,
            ))
            .await
            .expect_err(patient_id);
        assert_eq!(status.code(), code, "{patient_id:?}");
        assert!(
            status.message().starts_with("patient_id"),
            "{}",
            status.message()
        );
    }
    let now = f
        .client()
        .get_patient(with_token(get(&id), &clinician))
        .await
        .expect("read")
        .into_inner()
        .patient
        .expect("patient");
    assert_eq!(now.version, 1, "nothing changed");
    assert_eq!(now.demographics, Some(full_details()));
    let changes = f.events().await[before..]
        .iter()
        .filter(|e| e.action == Action::Update as i32 && e.outcome == Outcome::Success as i32)
        .count();
    assert_eq!(changes, 0, "no change audited as made");
}
