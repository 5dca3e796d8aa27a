//! A GP registration as the platform meets it, end to end over real sockets
//! with the four real services: a practice registers a patient and is her
//! registered GP in consent with no further step; she moves, the new
//! practice registers her, and the relationship moves with her — the old
//! practice is refused, the new one sees her record. consent's
//! RecordGpRegistration is idempotent and refuses bad input naming the
//! field, changing nothing.

use sharedcare_kit::testing::with_token;
use sharedcare_proto::{
    consent::v1::{self as consent, consent_service_client::ConsentServiceClient},
    identity::v1::{self as identity, identity_service_client::IdentityServiceClient},
    records::v1::records_service_client::RecordsServiceClient,
};
use sharedcare_tests::{Backend, Platform, allergy, eventually, search};
use tonic::Code;

const NHS: &str = "999 000 0018";

fn register(practice: &str) -> identity::RegisterPatientRequest {
    identity::RegisterPatientRequest {
        nhs_number: NHS.into(),
        demographics: Some(identity::Demographics {
            given_names: vec!["Siân".into()],
            family_name: "O'Brien".into(),
            birth_date: "1961-07-14".into(),
            gender: identity::Gender::Female as i32,
            postcode: "LS1 4AP".into(),
            gp_practice_ods_code: practice.into(),
            ..Default::default()
        }),
        confirm_new_patient: false,
    }
}

/// The patient's registered-GP relationships, ended ones too, as
/// (practice, open, recorded by).
async fn registered_gps(
    client: &mut ConsentServiceClient<tonic::transport::Channel>,
    patient_id: &str,
    token: &str,
) -> Vec<(String, bool, String)> {
    let mut gps: Vec<(String, bool, String)> = client
        .list_care_relationships(with_token(
            consent::ListCareRelationshipsRequest {
                patient_id: patient_id.into(),
                include_ended: true,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("relationships")
        .into_inner()
        .relationships
        .into_iter()
        .filter(|r| r.kind == consent::CareRelationshipKind::RegisteredGp as i32)
        .map(|r| (r.organisation_ods_code, r.end_time.is_none(), r.recorded_by))
        .collect();
    gps.sort();
    gps
}

#[tokio::test]
async fn the_registered_gp_relationship_follows_the_patients_registration() {
    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    for ods in ["A81001", "B82002"] {
        p.organisation(&admin, ods).await;
    }
    let (first_pas, first_gp) = (
        p.pas(&admin, "A81001").await,
        p.staff(&admin, "A81001", "R8000").await,
    );
    let (second_pas, second_gp) = (
        p.pas(&admin, "B82002").await,
        p.staff(&admin, "B82002", "R8000").await,
    );
    let mut identity_client = IdentityServiceClient::new(p.identity.channel.clone());
    let mut consent_client = ConsentServiceClient::new(p.consent.channel.clone());
    let mut records_client = RecordsServiceClient::new(p.records.channel.clone());

    // Registered at her GP practice: no relationship is asserted by hand,
    // yet her GP may write to her record once consent has heard.
    let sian = identity_client
        .register_patient(with_token(register("A81001"), &first_pas))
        .await
        .expect("registered")
        .into_inner()
        .patient
        .expect("patient")
        .patient_id;
    eventually("the first practice writing to her record", async || {
        records_client
            .create_record(with_token(allergy(&sian), &first_gp))
            .await
            .ok()
    })
    .await;
    assert_eq!(
        registered_gps(&mut consent_client, &sian, &first_pas).await,
        vec![("A81001".to_owned(), true, "identity".to_owned())]
    );
    let status = records_client
        .search(with_token(search(&sian), &second_gp))
        .await
        .expect_err("not yet the second practice's patient");
    assert_eq!(status.code(), Code::PermissionDenied);

    // She moves: the new practice registers her, finding her by her number.
    let moved = identity_client
        .register_patient(with_token(register("B82002"), &second_pas))
        .await
        .expect("found")
        .into_inner();
    assert_eq!(
        moved.outcome,
        identity::RegisterOutcome::MatchedNhsNumber as i32
    );
    let found = eventually("the new practice reading her record", async || {
        let page = records_client
            .search(with_token(search(&sian), &second_gp))
            .await
            .ok()?
            .into_inner();
        Some(page.records.len())
    })
    .await;
    assert_eq!(found, 1, "the record her old practice wrote");
    let status = records_client
        .search(with_token(search(&sian), &first_gp))
        .await
        .expect_err("no longer the old practice's patient");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        registered_gps(&mut consent_client, &sian, &second_pas).await,
        vec![
            ("A81001".to_owned(), false, "identity".to_owned()),
            ("B82002".to_owned(), true, "identity".to_owned()),
        ]
    );

    // Told again, consent changes nothing; told nonsense, it refuses naming
    // the field and changes nothing.
    let identity_token = p.identity_self_token().await;
    let again = consent_client
        .record_gp_registration(with_token(
            consent::RecordGpRegistrationRequest {
                patient_id: sian.clone(),
                organisation_ods_code: "B82002".into(),
                registered_time: None,
            },
            &identity_token,
        ))
        .await
        .expect("idempotent")
        .into_inner();
    assert!(again.ended.is_empty());
    assert_eq!(
        again.relationship.expect("open").organisation_ods_code,
        "B82002"
    );
    for (patient_id, practice, field) in [
        ("", "B82002", "patient_id"),
        (sian.as_str(), "not an ods code!", "organisation_ods_code"),
    ] {
        let status = consent_client
            .record_gp_registration(with_token(
                consent::RecordGpRegistrationRequest {
                    patient_id: patient_id.into(),
                    organisation_ods_code: practice.into(),
                    registered_time: None,
                },
                &identity_token,
            ))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    assert_eq!(
        registered_gps(&mut consent_client, &sian, &second_pas).await,
        vec![
            ("A81001".to_owned(), false, "identity".to_owned()),
            ("B82002".to_owned(), true, "identity".to_owned()),
        ]
    );

    // Her practice ends her registration: no practice is her GP now (she
    // may still read her relationships).
    let herself = p.patient(&admin, &sian).await;
    let mut current = moved.patient.expect("patient");
    let mut details = current.demographics.take().expect("demographics");
    details.gp_practice_ods_code.clear();
    identity_client
        .update_demographics(with_token(
            identity::UpdateDemographicsRequest {
                patient_id: sian.clone(),
                demographics: Some(details),
                if_match: current.version,
            },
            &second_pas,
        ))
        .await
        .expect("deregistered");
    eventually("the registration ending in consent", async || {
        registered_gps(&mut consent_client, &sian, &herself)
            .await
            .iter()
            .all(|(_, open, _)| !open)
            .then_some(())
    })
    .await;
    let status = records_client
        .search(with_token(search(&sian), &second_gp))
        .await
        .expect_err("no longer anyone's registered patient");
    assert_eq!(status.code(), Code::PermissionDenied);

    p.stop().await;
}
