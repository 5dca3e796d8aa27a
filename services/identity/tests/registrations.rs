//! Registered GP practice over real gRPC: only the practice itself
//! registers a patient with it (or ends its own registration), and every
//! change reaches consent — late while consent is down, never lost, and
//! never for a version that did not change the practice.

mod support;

use support::*;

fn registering(nhs: &str, practice: &str) -> pb::RegisterPatientRequest {
    let mut request = jane(nhs);
    if let Some(d) = request.demographics.as_mut() {
        d.gp_practice_ods_code = practice.into();
    }
    request
}

fn moving(patient: &pb::Patient, practice: &str) -> pb::UpdateDemographicsRequest {
    let mut d = patient.demographics.clone().expect("demographics");
    d.gp_practice_ods_code = practice.into();
    pb::UpdateDemographicsRequest {
        patient_id: patient.patient_id.clone(),
        demographics: Some(d),
        if_match: patient.version,
    }
}

/// Waits until consent has been told `want` (the relay runs on its own).
async fn told(f: &Fixture, want: &[(String, Option<String>)]) {
    for _ in 0..300 {
        if f.registrations.told() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(f.registrations.told(), want, "consent was not told in time");
}

fn practice(code: &str) -> Option<String> {
    Some(code.to_owned())
}

#[tokio::test]
async fn only_the_practice_itself_registers_a_patient_with_it_and_consent_hears_of_it() {
    let f = Fixture::start().await;
    let clinician = f.staff("A81001", "R8000").await;
    let registrar = f.staff("A81001", "R8008").await;

    // Staff who could not assert the relationship, or another practice's.
    for (token, gp, who) in [
        (&clinician, "A81001", "staff without assert_relationships"),
        (&registrar, "B82002", "another practice"),
    ] {
        let status = f
            .client()
            .register_patient(with_token(registering("9434765919", gp), token))
            .await
            .expect_err(who);
        assert_eq!(status.code(), Code::PermissionDenied, "{who}");
        assert!(
            status
                .message()
                .starts_with("demographics.gp_practice_ods_code"),
            "{who}: {}",
            status.message()
        );
    }
    assert!(
        f.store
            .find_patient_by_nhs_number(&NhsNumber::parse("n", "9434765919").expect("nhs"))
            .await
            .expect("read")
            .is_none(),
        "nothing stored"
    );

    let jane = f
        .register(registering("9434765919", "A81001"), &registrar)
        .await;
    let id = jane.patient_id.clone();
    told(&f, &[(id.clone(), practice("A81001"))]).await;

    // A change that leaves the practice alone tells consent nothing, and
    // anyone permitted may make it.
    let mut renamed = moving(&jane, "A81001");
    if let Some(d) = renamed.demographics.as_mut() {
        d.given_names = vec!["Janet".into()];
    }
    let jane = f
        .client()
        .update_demographics(with_token(renamed, &clinician))
        .await
        .expect("renamed")
        .into_inner()
        .patient
        .expect("patient");

    // She moves: the new practice registers her; the old one cannot end
    // the new registration, nor send her to a third (it could register her
    // with itself again, were she to move back).
    let moved_to = f.staff("B82002", "R8008").await;
    let jane = f
        .client()
        .update_demographics(with_token(moving(&jane, "B82002"), &moved_to))
        .await
        .expect("moved")
        .into_inner()
        .patient
        .expect("patient");
    told(
        &f,
        &[
            (id.clone(), practice("A81001")),
            (id.clone(), practice("B82002")),
        ],
    )
    .await;
    for (request, who) in [
        (moving(&jane, ""), "the old practice ending the new one's"),
        (moving(&jane, "C83003"), "the old practice moving her on"),
    ] {
        let status = f
            .client()
            .update_demographics(with_token(request, &registrar))
            .await
            .expect_err(who);
        assert_eq!(status.code(), Code::PermissionDenied, "{who}");
        assert!(
            status
                .message()
                .starts_with("demographics.gp_practice_ods_code"),
            "{who}: {}",
            status.message()
        );
    }
    let refusals = f
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e.outcome == Outcome::Denied as i32 && e.outcome_reason == "NOT_OWN_ORGANISATION"
        })
        .count();
    assert_eq!(refusals, 2, "each refused change is audited");

    // The practice she is registered with ends its registration.
    f.client()
        .update_demographics(with_token(moving(&jane, ""), &moved_to))
        .await
        .expect("deregistered");
    told(
        &f,
        &[
            (id.clone(), practice("A81001")),
            (id.clone(), practice("B82002")),
            (id.clone(), None),
        ],
    )
    .await;
    let versions = f
        .store
        .patient_versions(&id, 10)
        .await
        .expect("versions")
        .len();
    assert_eq!(versions, 4, "registered, renamed, moved, deregistered");
}

#[tokio::test]
async fn a_registration_made_while_consent_is_down_reaches_it_once_it_is_back() {
    let f = Fixture::start().await;
    let registrar = f.staff("A81001", "R8008").await;
    f.registrations
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let jane = f
        .register(registering("9434765919", "A81001"), &registrar)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(f.registrations.told().is_empty());
    f.registrations
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Within the relay's longest back-off (5 s).
    told(&f, &[(jane.patient_id.clone(), practice("A81001"))]).await;
}

#[tokio::test]
async fn a_practice_registering_a_patient_it_finds_registers_them_with_itself() {
    let f = Fixture::start().await;
    let first = f.staff("A81001", "R8008").await;
    let jane = f
        .register(registering("9434765919", "A81001"), &first)
        .await;
    let id = jane.patient_id.clone();

    // She registers at another practice: it finds her, and she is now its.
    let second = f.staff("B82002", "R8008").await;
    let answer = f
        .client()
        .register_patient(with_token(registering("9434765919", "B82002"), &second))
        .await
        .expect("found")
        .into_inner();
    assert_eq!(answer.outcome, pb::RegisterOutcome::MatchedNhsNumber as i32);
    let moved = answer.patient.expect("patient");
    assert_eq!((moved.patient_id.as_str(), moved.version), (id.as_str(), 2));
    assert_eq!(
        moved
            .demographics
            .expect("demographics")
            .gp_practice_ods_code,
        "B82002"
    );
    told(
        &f,
        &[
            (id.clone(), practice("A81001")),
            (id.clone(), practice("B82002")),
        ],
    )
    .await;

    // Finding her elsewhere, naming a practice one may not register her
    // with, changes nothing: she is returned as she stands.
    for (token, gp) in [
        (f.staff("C83003", "R8000").await, "C83003"),
        (f.staff("C83003", "R8008").await, "A81001"),
    ] {
        let found = f
            .client()
            .register_patient(with_token(registering("9434765919", gp), &token))
            .await
            .expect("found")
            .into_inner()
            .patient
            .expect("patient");
        assert_eq!(found.version, 2, "{gp}");
        assert_eq!(
            found
                .demographics
                .expect("demographics")
                .gp_practice_ods_code,
            "B82002"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.registrations.told().len(), 2, "consent told nothing more");
}
