//! Matching over real gRPC: RegisterPatient is find-or-create, TracePatient
//! finds candidates with explained scores (staff up to 50, an application
//! the one confident match or none), MarkNotSamePerson is honoured, and
//! every candidate shown is audited.

mod support;

use support::*;

const KATE: &str = "9434765919";
const ZOE: &str = "9434765870";
const SECOND_KATE: &str = "9876543210";

fn demographics(given: &str, family: &str, birth_date: &str, postcode: &str) -> pb::Demographics {
    pb::Demographics {
        given_names: vec![given.into()],
        family_name: family.into(),
        birth_date: birth_date.into(),
        gender: pb::Gender::Female as i32,
        postcode: postcode.into(),
        ..Default::default()
    }
}

fn register(nhs: &str, d: pb::Demographics) -> pb::RegisterPatientRequest {
    pb::RegisterPatientRequest {
        nhs_number: nhs.into(),
        demographics: Some(d),
        confirm_new_patient: false,
    }
}

fn kate() -> pb::Demographics {
    demographics("Katherine", "Smith", "1980-04-03", "LS1 4AP")
}

fn trace_by(d: pb::Demographics) -> pb::TracePatientRequest {
    pb::TracePatientRequest {
        demographics: Some(d),
        ..Default::default()
    }
}

fn outcome(r: &pb::RegisterPatientResponse) -> pb::RegisterOutcome {
    pb::RegisterOutcome::try_from(r.outcome).expect("known outcome")
}

fn field<'a>(m: &'a pb::TraceMatch, name: &str) -> &'a pb::FieldComparison {
    m.fields
        .iter()
        .find(|f| f.field == name)
        .unwrap_or_else(|| panic!("{name} compared"))
}

fn ids(matches: &[pb::TraceMatch]) -> Vec<String> {
    matches
        .iter()
        .map(|m| m.patient.as_ref().expect("patient").patient_id.clone())
        .collect()
}

impl Fixture {
    async fn register_as(
        &self,
        request: pb::RegisterPatientRequest,
        token: &str,
    ) -> Result<pb::RegisterPatientResponse, tonic::Status> {
        Ok(self
            .client()
            .register_patient(with_token(request, token))
            .await?
            .into_inner())
    }

    async fn trace(
        &self,
        request: pb::TracePatientRequest,
        token: &str,
    ) -> Result<Vec<pb::TraceMatch>, tonic::Status> {
        Ok(self
            .client()
            .trace_patient(with_token(request, token))
            .await?
            .into_inner()
            .matches)
    }

    /// An application at `ods_code` (which exists) and its token.
    async fn application(&self, ods_code: &str) -> String {
        let (principal, secret) = self
            .create(pb::CreatePrincipalRequest {
                kind: PrincipalKind::Application as i32,
                display_name: "Ward system".into(),
                organisation_ods_code: ods_code.into(),
                scopes: vec!["patients.read".into(), "patients.write".into()],
                ..Default::default()
            })
            .await
            .expect("application");
        self.token(&principal.client_id, &secret).await
    }
}

#[tokio::test]
async fn registering_finds_the_patient_by_number_or_demographics_before_creating() {
    let f = Fixture::start().await;
    let tracer = f.staff("A81001", "tracer").await;
    let app = f.application("A81001").await;

    let created = f
        .register_as(register(KATE, kate()), &app)
        .await
        .expect("new");
    assert_eq!(outcome(&created), pb::RegisterOutcome::Created);
    assert!(created.created);
    let kate_id = created.patient.expect("patient").patient_id;

    // The same number with consistent details: that patient, and says so.
    let again = f
        .register_as(
            register(KATE, demographics("KATHERINE", "smith", "1980-04-03", "")),
            &app,
        )
        .await
        .expect("again");
    assert_eq!(outcome(&again), pb::RegisterOutcome::MatchedNhsNumber);
    assert!(!again.created);
    assert_eq!(again.patient.expect("patient").patient_id, kate_id);

    // No number, a nickname, a typo and a move: the one confident match,
    // explained.
    let found = f
        .register_as(
            register("", demographics("Kate", "Smyth", "1980-04-03", "LS1 4AP")),
            &app,
        )
        .await
        .expect("matched");
    assert_eq!(outcome(&found), pb::RegisterOutcome::MatchedDemographics);
    assert_eq!(found.patient.expect("patient").patient_id, kate_id);
    let why = &found.candidates[0];
    assert_eq!(field(why, "given_name").how, "nickname");
    assert_eq!(
        field(why, "birth_date").agreement,
        pb::FieldAgreement::Agree as i32
    );
    assert!(why.score > 0.6 && why.score < 1.0, "{}", why.score);

    // Her twin, with her own number: a new patient, not a guess.
    let twin = f
        .register_as(
            register(ZOE, demographics("Zoe", "Smith", "1980-04-03", "LS1 4AP")),
            &app,
        )
        .await
        .expect("twin");
    assert_eq!(outcome(&twin), pb::RegisterOutcome::Created);

    // No number and no one like them: nothing to find, nothing created.
    let before = f.store.candidates(&[], 1).await.expect("store").len();
    let status = f
        .register_as(
            register("", demographics("Ahmed", "Khan", "2001-07-09", "B1 1AA")),
            &app,
        )
        .await
        .expect_err("no number");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("nhs_number"),
        "{}",
        status.message()
    );
    assert_eq!(
        f.store.candidates(&[], 1).await.expect("store").len(),
        before
    );

    // A new number on Katherine's exact details may be her, mistyped: a
    // person decides. The application is told only that it is ambiguous.
    let ambiguous = f
        .register_as(register(SECOND_KATE, kate()), &app)
        .await
        .expect("ambiguous");
    assert_eq!(outcome(&ambiguous), pb::RegisterOutcome::Ambiguous);
    assert!(ambiguous.patient.is_none());
    assert!(ambiguous.candidates.is_empty());
    let shown = f
        .register_as(register(SECOND_KATE, kate()), &tracer)
        .await
        .expect("ambiguous");
    assert_eq!(outcome(&shown), pb::RegisterOutcome::Ambiguous);
    assert_eq!(ids(&shown.candidates)[0], kate_id);
    assert_eq!(
        field(&shown.candidates[0], "nhs_number").agreement,
        pb::FieldAgreement::NotCompared as i32,
        "the new number is not compared: the demographics decide"
    );

    // Only staff who trace may decide that the candidates are others.
    let mut confirm = register(SECOND_KATE, kate());
    confirm.confirm_new_patient = true;
    let status = f
        .register_as(confirm.clone(), &app)
        .await
        .expect_err("application");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("confirm_new_patient"));
    let second = f.register_as(confirm, &tracer).await.expect("confirmed");
    assert_eq!(outcome(&second), pb::RegisterOutcome::Created);
    let second_id = second.patient.expect("patient").patient_id;
    // ... and that is remembered: a duplicate trace of one leaves out the other.
    let dups = f
        .trace(
            pb::TracePatientRequest {
                duplicates_of_patient_id: kate_id.clone(),
                ..Default::default()
            },
            &tracer,
        )
        .await
        .expect("duplicates");
    assert!(!ids(&dups).contains(&second_id), "{:?}", ids(&dups));

    // Now two confident matches without a number: never guessed.
    let two = f
        .register_as(register("", kate()), &tracer)
        .await
        .expect("two");
    assert_eq!(outcome(&two), pb::RegisterOutcome::Ambiguous);
    let mut both = ids(&two.candidates);
    both.truncate(2);
    both.sort();
    let mut expected = vec![kate_id, second_id];
    expected.sort();
    assert_eq!(both, expected);
}

#[tokio::test]
async fn a_trace_returns_explained_candidates_as_the_caller_may_see_them() {
    let f = Fixture::start().await;
    let clerk = f.staff("A81001", "R8000").await;
    let tracer = f.staff("A81001", "tracer").await;
    let app = f.application("A81001").await;
    let kate_id = f
        .register_as(register(KATE, kate()), &clerk)
        .await
        .expect("kate")
        .patient
        .expect("patient")
        .patient_id;
    let zoe_id = f
        .register_as(
            register(
                ZOE,
                demographics("Kirsty", "Smith", "1980-04-03", "LS1 4AP"),
            ),
            &clerk,
        )
        .await
        .expect("zoe")
        .patient
        .expect("patient")
        .patient_id;
    let sian_id = f
        .register_as(
            register(
                SECOND_KATE,
                demographics("Siân", "Nguyễn", "1975-11-23", "CF10 1AA"),
            ),
            &clerk,
        )
        .await
        .expect("sian")
        .patient
        .expect("patient")
        .patient_id;
    let before = f.events().await.len();

    // By number, staff who trace: the one patient, exact.
    let by_number = f
        .trace(
            pb::TracePatientRequest {
                nhs_number: "943 476 5919".into(),
                ..Default::default()
            },
            &tracer,
        )
        .await
        .expect("by number");
    assert_eq!(ids(&by_number), vec![kate_id.clone()]);
    assert_eq!(by_number[0].score, 1.0);

    // By demographics: both Smiths, Katherine first, each explained; the
    // twin carries a caution.
    let smiths = f
        .trace(
            trace_by(demographics("Katherine", "Smith", "1980-04-03", "")),
            &tracer,
        )
        .await
        .expect("smiths");
    assert_eq!(ids(&smiths), vec![kate_id.clone(), zoe_id.clone()]);
    assert!(smiths[0].score > smiths[1].score);
    assert_eq!(smiths[0].level, pb::MatchLevel::Match as i32);
    assert_eq!(smiths[1].level, pb::MatchLevel::Possible as i32);
    assert_eq!(smiths[1].caution, "given names differ");
    assert_eq!(
        field(&smiths[1], "given_name").agreement,
        pb::FieldAgreement::Disagree as i32
    );
    // A partial date of birth agrees as far as it goes.
    let partial = f
        .trace(
            trace_by(demographics("Katherine", "Smith", "1980-04", "")),
            &tracer,
        )
        .await
        .expect("partial");
    assert_eq!(ids(&partial)[0], kate_id);
    assert_eq!(field(&partial[0], "birth_date").how, "year and month");
    let one = f
        .trace(
            pb::TracePatientRequest {
                max_results: 1,
                ..trace_by(demographics("Katherine", "Smith", "1980-04-03", ""))
            },
            &tracer,
        )
        .await
        .expect("one");
    assert_eq!(ids(&one), vec![kate_id.clone()]);

    // Names in any script, found without their accents and kept with them.
    let sian = f
        .trace(
            trace_by(demographics("Sian", "Nguyen", "1975-11-23", "")),
            &tracer,
        )
        .await
        .expect("sian");
    assert_eq!(ids(&sian), vec![sian_id]);
    let found = sian[0].patient.as_ref().expect("patient");
    let d = found.demographics.as_ref().expect("demographics");
    assert_eq!(
        (d.given_names[0].as_str(), d.family_name.as_str()),
        ("Siân", "Nguyễn")
    );

    // An application: the one confident match, or nothing.
    let exact = f.trace(trace_by(kate()), &app).await.expect("application");
    assert_eq!(ids(&exact), vec![kate_id.clone()]);
    let vague = f
        .trace(
            trace_by(demographics("Katherine", "Smith", "1980", "")),
            &app,
        )
        .await
        .expect("application");
    assert!(vague.is_empty(), "{:?}", ids(&vague));
    let status = f
        .trace(
            pb::TracePatientRequest {
                nhs_number: KATE.into(),
                ..Default::default()
            },
            &app,
        )
        .await
        .expect_err("number alone");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("demographics"));
    let with_details = f
        .trace(
            pb::TracePatientRequest {
                nhs_number: KATE.into(),
                ..trace_by(kate())
            },
            &app,
        )
        .await
        .expect("number and details");
    assert_eq!(ids(&with_details), vec![kate_id.clone()]);

    // Staff without the capability are refused by the access rule.
    let status = f.trace(trace_by(kate()), &clerk).await.expect_err("clerk");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Every candidate shown is on that patient's access report.
    let events = f.events().await;
    let searches: Vec<&AuditEvent> = events[before..]
        .iter()
        .filter(|e| e.action == Action::Search as i32)
        .collect();
    let shown = by_number.len()
        + smiths.len()
        + partial.len()
        + one.len()
        + sian.len()
        + exact.len()
        + with_details.len();
    assert_eq!(searches.len(), shown);
    assert!(
        searches
            .iter()
            .all(|e| e.resource_type == "Patient" && e.outcome == Outcome::Success as i32)
    );
    assert_eq!(
        searches.iter().filter(|e| e.patient_id == zoe_id).count(),
        smiths.len() + partial.len() - 2,
        "the twin, each time she was shown"
    );
}

#[tokio::test]
async fn not_the_same_person_is_recorded_once_and_honoured() {
    let f = Fixture::start().await;
    let tracer = f.staff("A81001", "tracer").await;
    let mut ids_by_name = Vec::new();
    for (nhs, d) in [
        (KATE, kate()),
        // the same details under another number: confirmed as someone else
        (ZOE, kate()),
    ] {
        let mut request = register(nhs, d);
        request.confirm_new_patient = true;
        ids_by_name.push(
            f.register_as(request, &tracer)
                .await
                .expect("registered")
                .patient
                .expect("patient")
                .patient_id,
        );
    }
    let (a, b) = (ids_by_name[0].clone(), ids_by_name[1].clone());
    let duplicates = async || {
        ids(&f
            .trace(
                pb::TracePatientRequest {
                    duplicates_of_patient_id: a.clone(),
                    ..Default::default()
                },
                &tracer,
            )
            .await
            .expect("duplicates"))
    };
    // The second was confirmed as new apart from the first already.
    assert!(!duplicates().await.contains(&b));
    let c = f
        .register_as(
            register(
                SECOND_KATE,
                demographics("Katherine", "Smith", "1980-04-03", "LS2 7UE"),
            ),
            &tracer,
        )
        .await
        .expect("registered");
    // (her own number, elsewhere: created, and a possible duplicate)
    assert_eq!(outcome(&c), pb::RegisterOutcome::Created);
    let c = c.patient.expect("patient").patient_id;
    assert!(duplicates().await.contains(&c));

    let before = f.events().await.len();
    let mark = |x: &str, y: &str| pb::MarkNotSamePersonRequest {
        patient_id: x.into(),
        other_patient_id: y.into(),
        reason: "different mothers' maiden names".into(),
    };
    let created = f
        .client()
        .mark_not_same_person(with_token(mark(&c, &a), &tracer))
        .await
        .expect("marked")
        .into_inner();
    assert!(created.created);
    let again = f
        .client()
        .mark_not_same_person(with_token(mark(&a, &c), &tracer))
        .await
        .expect("marked")
        .into_inner();
    assert!(!again.created, "one link per pair");
    assert!(!duplicates().await.contains(&c));
    // On both patients' access reports, once.
    let events = f.events().await;
    let updates: Vec<&AuditEvent> = events[before..]
        .iter()
        .filter(|e| e.action == Action::Update as i32)
        .collect();
    let mut touched: Vec<&str> = updates.iter().map(|e| e.patient_id.as_str()).collect();
    touched.sort();
    let mut expected = vec![a.as_str(), c.as_str()];
    expected.sort();
    assert_eq!(touched, expected);
    assert!(
        updates
            .iter()
            .all(|e| e.outcome_reason == "NOT_SAME_PERSON")
    );

    // Bad requests name the field and link nothing.
    let clerk = f.staff("A81001", "R8000").await;
    for (request, token, code, field) in [
        (
            mark(&a, &a),
            &tracer,
            Code::InvalidArgument,
            "other_patient_id",
        ),
        (
            mark(&a, "no-such-patient"),
            &tracer,
            Code::NotFound,
            "other_patient_id",
        ),
        (
            pb::MarkNotSamePersonRequest {
                reason: String::new(),
                ..mark(&a, &b)
            },
            &tracer,
            Code::InvalidArgument,
            "reason",
        ),
        (
            pb::MarkNotSamePersonRequest {
                reason: "tab\there".into(),
                ..mark(&a, &b)
            },
            &tracer,
            Code::InvalidArgument,
            "reason",
        ),
        (
            mark(&a, &b),
            &clerk,
            Code::PermissionDenied,
            "MarkNotSamePerson",
        ),
    ] {
        let status = f
            .client()
            .mark_not_same_person(with_token(request, token))
            .await
            .expect_err(field);
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
    assert_eq!(f.events().await.len(), events.len());
}

#[tokio::test]
async fn bad_trace_and_registration_input_names_the_field_and_stores_nothing() {
    let f = Fixture::start().await;
    let tracer = f.staff("A81001", "tracer").await;
    f.register_as(register(KATE, kate()), &tracer)
        .await
        .expect("kate");
    let before = f.events().await.len();
    let next_year = (chrono::Utc::now().date_naive() + chrono::Duration::days(400))
        .format("%Y")
        .to_string();
    let traces = [
        (
            trace_by(demographics("Kate", "Smith\u{0}", "1980", "")),
            "demographics.family_name",
        ),
        (
            trace_by(demographics("Kate", "", "1980", "")),
            "demographics.family_name",
        ),
        (
            trace_by(demographics("Kate", "Smith", "", "")),
            "demographics.birth_date",
        ),
        (
            trace_by(demographics("Kate", "Smith", &next_year, "")),
            "demographics.birth_date",
        ),
        (
            trace_by(demographics("Kate", "Smith", "1980-13", "")),
            "demographics.birth_date",
        ),
        (
            trace_by(demographics("Kate", "Smith", "1980", "NOT A CODE")),
            "demographics.postcode",
        ),
        (
            trace_by(demographics(&"K".repeat(101), "Smith", "1980", "")),
            "demographics.given_names",
        ),
        (
            pb::TracePatientRequest {
                nhs_number: "1111111111".into(),
                ..Default::default()
            },
            "nhs_number",
        ),
        (
            pb::TracePatientRequest {
                nhs_number: "943476591".into(),
                ..Default::default()
            },
            "nhs_number",
        ),
        (
            pb::TracePatientRequest {
                max_results: 51,
                ..trace_by(kate())
            },
            "max_results",
        ),
        (
            pb::TracePatientRequest {
                duplicates_of_patient_id: "x".into(),
                ..trace_by(kate())
            },
            "duplicates_of_patient_id",
        ),
        (pb::TracePatientRequest::default(), "demographics"),
    ];
    for (request, field) in traces {
        let status = f.trace(request, &tracer).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    for (request, field) in [
        (
            register("", demographics("Kate", "Sm\u{7}ith", "1980-04-03", "")),
            "demographics.family_name",
        ),
        (
            register(KATE, demographics("Kate", "Smith", "1980-04", "")),
            "demographics.birth_date",
        ),
    ] {
        let status = f.register_as(request, &tracer).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    assert_eq!(f.events().await.len(), before, "nothing audited or stored");
}
