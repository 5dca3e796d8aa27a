//! Merges over real gRPC: the old id and the old NHS number reach the
//! survivor and say so, refusals name the field and change nothing, an
//! unmerge undoes it, and platform services watch the merge log.

mod support;

use futures::StreamExt;
use support::*;

const KATE: &str = "9434765919";
const OTHER_KATE: &str = "9876543210";
const THIRD: &str = "9434765870";

fn kate(nhs: &str) -> pb::RegisterPatientRequest {
    kate_at(nhs, "LS1 4AP")
}

/// Katherine, registered at two addresses under two numbers: a duplicate
/// the platform could not be sure of, found and merged by a person.
fn kate_at(nhs: &str, postcode: &str) -> pb::RegisterPatientRequest {
    pb::RegisterPatientRequest {
        nhs_number: nhs.into(),
        demographics: Some(pb::Demographics {
            given_names: vec!["Katherine".into()],
            family_name: "Smith".into(),
            birth_date: "1980-04-03".into(),
            gender: pb::Gender::Female as i32,
            postcode: postcode.into(),
            ..Default::default()
        }),
        confirm_new_patient: false,
    }
}

fn merge(superseded: &str, surviving: &str) -> pb::MergePatientsRequest {
    pb::MergePatientsRequest {
        superseded_patient_id: superseded.into(),
        surviving_patient_id: surviving.into(),
    }
}

impl Fixture {
    async fn service_token(&self) -> String {
        let (service, secret) = self
            .create(pb::CreatePrincipalRequest {
                kind: PrincipalKind::Service as i32,
                display_name: "records service".into(),
                organisation_ods_code: "X26".into(),
                ..Default::default()
            })
            .await
            .expect("service principal");
        self.token(&service.client_id, &secret).await
    }
}

#[tokio::test]
async fn a_merged_patient_is_reached_through_the_survivor_until_unmerged() {
    let f = Fixture::start().await;
    let tracer = f.staff("A81001", "merger").await;
    let only_traces = f.staff("A81001", "tracer").await;
    let clerk = f.staff("A81001", "R8000").await;
    let service = f.service_token().await;
    let old = f.register(kate(KATE), &tracer).await.patient_id;
    let survivor = f
        .register(kate_at(OTHER_KATE, "LS2 7UE"), &tracer)
        .await
        .patient_id;
    let third = f
        .register(
            pb::RegisterPatientRequest {
                confirm_new_patient: false,
                ..person(THIRD, "Oliver", "Jones", "1975-11-23")
            },
            &tracer,
        )
        .await
        .patient_id;
    let before = f.events().await.len();

    let merged = f
        .client()
        .merge_patients(with_token(merge(&old, &survivor), &tracer))
        .await
        .expect("merged")
        .into_inner();
    assert_eq!(
        merged.surviving.expect("survivor").patient_id,
        survivor.clone()
    );
    assert!(merged.sequence > 0);

    // GetPatient on the old id: the survivor, saying so.
    let read = f
        .client()
        .get_patient(with_token(get(&old), &clerk))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(read.patient.expect("patient").patient_id, survivor);
    assert_eq!(read.resolved_from_patient_id, old);
    let direct = f
        .client()
        .get_patient(with_token(get(&survivor), &clerk))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(direct.resolved_from_patient_id, "");

    // The old NHS number traces to the survivor, saying so.
    let traced = f
        .client()
        .trace_patient(with_token(
            pb::TracePatientRequest {
                nhs_number: KATE.into(),
                ..Default::default()
            },
            &tracer,
        ))
        .await
        .expect("traced")
        .into_inner()
        .matches;
    assert_eq!(traced.len(), 1);
    assert_eq!(
        traced[0].patient.as_ref().expect("patient").patient_id,
        survivor
    );
    assert_eq!(traced[0].resolved_from_patient_id, old);
    // Both records' details match a demographic trace: the survivor, once.
    let by_details = f
        .client()
        .trace_patient(with_token(
            pb::TracePatientRequest {
                demographics: kate("").demographics,
                ..Default::default()
            },
            &tracer,
        ))
        .await
        .expect("traced")
        .into_inner()
        .matches;
    let found: Vec<&str> = by_details
        .iter()
        .map(|m| m.patient.as_ref().expect("patient").patient_id.as_str())
        .collect();
    assert_eq!(found, vec![survivor.as_str()]);

    // Services resolve the old id to the survivor.
    let resolved = f
        .client()
        .resolve_patient(with_token(
            pb::ResolvePatientRequest {
                patient_id: old.clone(),
            },
            &service,
        ))
        .await
        .expect("resolved")
        .into_inner();
    assert_eq!(resolved.superseded_by, survivor);
    assert_eq!(resolved.current_patient_id, survivor);

    // Refusals name the field and change nothing.
    let refusals = [
        (
            merge(&old, &third),
            Code::FailedPrecondition,
            "superseded_patient_id",
        ),
        (
            merge(&third, &old),
            Code::FailedPrecondition,
            "surviving_patient_id",
        ),
        (
            merge(&third, &third),
            Code::InvalidArgument,
            "surviving_patient_id",
        ),
        (
            merge("", &third),
            Code::InvalidArgument,
            "superseded_patient_id",
        ),
        (
            merge("no-such-patient", &third),
            Code::NotFound,
            "superseded_patient_id",
        ),
    ];
    for (request, code, field) in refusals {
        let status = f
            .client()
            .merge_patients(with_token(request, &tracer))
            .await
            .expect_err(field);
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
    for (token, who) in [
        (&clerk, "clerk"),
        (&only_traces, "a tracer who may not merge"),
    ] {
        let status = f
            .client()
            .merge_patients(with_token(merge(&third, &survivor), token))
            .await
            .expect_err(who);
        assert_eq!(status.code(), Code::PermissionDenied, "{who}");
        assert!(
            status.message().contains("merge_patients"),
            "{}",
            status.message()
        );
    }
    for (superseded, code) in [
        (third.as_str(), Code::FailedPrecondition),
        ("", Code::InvalidArgument),
        ("no-such-patient", Code::NotFound),
    ] {
        let status = f
            .client()
            .unmerge_patients(with_token(
                pb::UnmergePatientsRequest {
                    superseded_patient_id: superseded.into(),
                },
                &tracer,
            ))
            .await
            .expect_err("not merged");
        assert_eq!(status.code(), code, "{superseded:?}");
        assert!(status.message().contains("superseded_patient_id"));
    }

    // Undone: the old id is its own patient again.
    let unmerged = f
        .client()
        .unmerge_patients(with_token(
            pb::UnmergePatientsRequest {
                superseded_patient_id: old.clone(),
            },
            &tracer,
        ))
        .await
        .expect("unmerged")
        .into_inner();
    assert!(unmerged.sequence > merged.sequence);
    assert_eq!(unmerged.patient.expect("patient").superseded_by, "");
    let read = f
        .client()
        .get_patient(with_token(get(&old), &clerk))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(read.patient.expect("patient").patient_id, old);
    assert_eq!(read.resolved_from_patient_id, "");

    // The merge and the unmerge are on both patients' access reports.
    let events = f.events().await;
    let changes: Vec<(String, String)> = events[before..]
        .iter()
        .filter(|e| e.action == Action::Update as i32)
        .map(|e| (e.patient_id.clone(), e.outcome_reason.clone()))
        .collect();
    for id in [&old, &survivor] {
        for reason in ["MERGED", "UNMERGED"] {
            assert!(
                changes.contains(&(id.clone(), reason.into())),
                "{id} {reason}: {changes:?}"
            );
        }
    }
    assert_eq!(changes.len(), 4, "{changes:?}");
}

#[tokio::test]
async fn services_watch_the_merge_log_from_where_they_left_off() {
    let f = Fixture::start().await;
    let tracer = f.staff("A81001", "merger").await;
    let service = f.service_token().await;
    let a = f.register(kate(KATE), &tracer).await.patient_id;
    let b = f
        .register(kate_at(OTHER_KATE, "LS2 7UE"), &tracer)
        .await
        .patient_id;
    let c = f
        .register(
            pb::RegisterPatientRequest {
                confirm_new_patient: false,
                ..person(THIRD, "Oliver", "Jones", "1975-11-23")
            },
            &tracer,
        )
        .await
        .patient_id;
    let first = f
        .client()
        .merge_patients(with_token(merge(&a, &b), &tracer))
        .await
        .expect("merged")
        .into_inner()
        .sequence;
    let watch = |after: u64| {
        let mut client = f.client();
        let request = with_token(
            pb::WatchPatientMergesRequest {
                resume_after_sequence: after,
            },
            &service,
        );
        async move {
            client
                .watch_patient_merges(request)
                .await
                .expect("watching")
                .into_inner()
        }
    };
    let next = async |stream: &mut tonic::Streaming<pb::PatientMergeEvent>| {
        tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("an event")
    };

    // From the start: the merge, then READY at its sequence.
    let mut stream = watch(0).await;
    let event = next(&mut stream).await;
    assert_eq!(event.kind, pb::MergeEventKind::Merged as i32);
    assert_eq!(
        (
            event.superseded_patient_id.as_str(),
            event.surviving_patient_id.as_str()
        ),
        (a.as_str(), b.as_str())
    );
    assert_eq!(event.sequence, first);
    let ready = next(&mut stream).await;
    assert_eq!(ready.kind, pb::MergeEventKind::Ready as i32);
    assert_eq!(ready.sequence, first);

    // Live: the next merge and its undoing arrive as they commit.
    f.client()
        .merge_patients(with_token(merge(&c, &b), &tracer))
        .await
        .expect("merged");
    f.client()
        .unmerge_patients(with_token(
            pb::UnmergePatientsRequest {
                superseded_patient_id: c.clone(),
            },
            &tracer,
        ))
        .await
        .expect("unmerged");
    let live = next(&mut stream).await;
    assert_eq!(live.kind, pb::MergeEventKind::Merged as i32);
    assert_eq!(live.superseded_patient_id, c);
    let undone = next(&mut stream).await;
    assert_eq!(undone.kind, pb::MergeEventKind::Unmerged as i32);
    assert!(undone.sequence > live.sequence);

    // Resuming after the first: only what came after, then READY.
    let mut resumed = watch(first).await;
    let again = next(&mut resumed).await;
    assert_eq!(again.sequence, live.sequence);
    assert_eq!(next(&mut resumed).await.sequence, undone.sequence);
    assert_eq!(
        next(&mut resumed).await.kind,
        pb::MergeEventKind::Ready as i32
    );

    // Staff do not watch.
    let status = f
        .client()
        .watch_patient_merges(with_token(
            pb::WatchPatientMergesRequest::default(),
            &tracer,
        ))
        .await
        .expect_err("staff");
    assert_eq!(status.code(), Code::PermissionDenied);
}
