//! A merge as the platform meets it, end to end over real sockets with the
//! four real services: two records of one person are merged by the
//! data-quality team, and from then on records and consent treat them as
//! one person — the care relationship and the records filed under the old
//! id reach the survivor, an objection recorded under either id applies to
//! both, and a new record for the old id is filed under the survivor.

use sharedcare_kit::testing::with_token;
use sharedcare_proto::{
    consent::v1::{self as consent, consent_service_client::ConsentServiceClient},
    identity::v1::{self as identity, identity_service_client::IdentityServiceClient},
    records::v1::{self as records, records_service_client::RecordsServiceClient},
};
use sharedcare_tests::{Backend, Platform, allergy, eventually, search};
use tonic::Code;

fn register(nhs: &str, postcode: &str) -> identity::RegisterPatientRequest {
    identity::RegisterPatientRequest {
        nhs_number: nhs.into(),
        demographics: Some(identity::Demographics {
            given_names: vec!["Siân".into()],
            family_name: "O'Brien".into(),
            birth_date: "1961-07-14".into(),
            gender: identity::Gender::Female as i32,
            postcode: postcode.into(),
            ..Default::default()
        }),
        confirm_new_patient: false,
    }
}

#[tokio::test]
async fn a_merged_patient_is_one_person_to_records_and_consent() {
    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    p.organisation(&admin, "A81001").await;
    let pas = p.pas(&admin, "A81001").await;
    let gp = p.staff(&admin, "A81001", "R8000").await;
    let data_quality = p.staff(&admin, "A81001", "data-quality").await;
    let mut identity_client = IdentityServiceClient::new(p.identity.channel.clone());
    let mut consent_client = ConsentServiceClient::new(p.consent.channel.clone());
    let mut records_client = RecordsServiceClient::new(p.records.channel.clone());

    // Two registrations of one person, at two addresses under two numbers.
    let mut registered = Vec::new();
    for (nhs, postcode) in [("999 000 0018", "LS1 4AP"), ("999 000 0026", "M1 1AE")] {
        let answer = identity_client
            .register_patient(with_token(register(nhs, postcode), &pas))
            .await
            .expect("registered")
            .into_inner();
        assert_eq!(
            answer.outcome,
            identity::RegisterOutcome::Created as i32,
            "{nhs}"
        );
        registered.push(answer.patient.expect("patient").patient_id);
    }
    let (old, survivor) = (registered[0].clone(), registered[1].clone());

    // The GP cares for the old one and has written to it.
    consent_client
        .record_care_relationship(with_token(
            consent::RecordCareRelationshipRequest {
                patient_id: old.clone(),
                organisation_ods_code: "A81001".into(),
                kind: consent::CareRelationshipKind::RegisteredGp as i32,
                ..Default::default()
            },
            &pas,
        ))
        .await
        .expect("the GP cares for the old record");
    let written = records_client
        .create_record(with_token(allergy(&old), &gp))
        .await
        .expect("written")
        .into_inner()
        .record
        .expect("record");
    // The survivor is a stranger to the GP so far.
    let status = records_client
        .search(with_token(search(&survivor), &gp))
        .await
        .expect_err("no relationship with the survivor yet");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Merged by the data-quality team.
    identity_client
        .merge_patients(with_token(
            identity::MergePatientsRequest {
                superseded_patient_id: old.clone(),
                surviving_patient_id: survivor.clone(),
            },
            &data_quality,
        ))
        .await
        .expect("merged");

    // The survivor's search now finds the old record, under the old
    // relationship.
    let found = eventually("the survivor's records including the old", async || {
        let page = records_client
            .search(with_token(search(&survivor), &gp))
            .await
            .ok()?
            .into_inner();
        (!page.records.is_empty()).then_some(page.records)
    })
    .await;
    let ids: Vec<&str> = found.iter().map(|r| r.record_id.as_str()).collect();
    assert_eq!(ids, vec![written.record_id.as_str()]);
    let through_survivor = records_client
        .get_record(with_token(
            records::GetRecordRequest {
                patient_id: survivor.clone(),
                record_id: written.record_id.clone(),
                purpose: 0,
                break_glass_reason: String::new(),
            },
            &gp,
        ))
        .await
        .expect("read through the survivor")
        .into_inner();
    assert_eq!(
        through_survivor.record.expect("record").record_id,
        written.record_id
    );

    // The survivor's relationships include the one recorded under the old
    // id, as the survivor's.
    let listed = consent_client
        .list_care_relationships(with_token(
            consent::ListCareRelationshipsRequest {
                patient_id: survivor.clone(),
                ..Default::default()
            },
            &pas,
        ))
        .await
        .expect("listed through the survivor")
        .into_inner()
        .relationships;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].patient_id.as_str(),
            listed[0].organisation_ods_code.as_str()
        ),
        (survivor.as_str(), "A81001")
    );

    // A new record for the old id is filed under the survivor.
    let filed = records_client
        .create_record(with_token(allergy(&old), &gp))
        .await
        .expect("written")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(filed.patient_id, survivor);

    // An objection recorded under the survivor applies to the old id too.
    consent_client
        .record_directive(with_token(
            consent::RecordDirectiveRequest {
                directive: Some(consent::Directive {
                    patient_id: survivor.clone(),
                    effect: consent::Effect::Deny as i32,
                    note: "the patient asked that nothing be shared".into(),
                    ..Default::default()
                }),
            },
            &gp,
        ))
        .await
        .expect("objection recorded");
    let status = records_client
        .get_record(with_token(
            records::GetRecordRequest {
                patient_id: old.clone(),
                record_id: written.record_id.clone(),
                purpose: 0,
                break_glass_reason: String::new(),
            },
            &gp,
        ))
        .await
        .expect_err("the objection applies to every id of the person");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("PATIENT_DIRECTIVE_DENY"),
        "{}",
        status.message()
    );
    // Listed through the old id too.
    let directives = consent_client
        .list_directives(with_token(
            consent::ListDirectivesRequest {
                patient_id: old.clone(),
                ..Default::default()
            },
            &gp,
        ))
        .await
        .expect("listed through the old id")
        .into_inner()
        .directives;
    assert_eq!(directives.len(), 1);
    p.stop().await;
}
