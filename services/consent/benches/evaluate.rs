//! One consent decision, in process, for a patient with 50 directives and 5
//! care relationships, beside one Ed25519 signature verification in the same
//! run (what every call already pays to check its token). Issue 9's aim: the
//! decision cheaper than the verification.
//!
//! `cargo bench -p sharedcare-consent --bench evaluate`

use std::hint::black_box;

use chrono::{Duration, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use sharedcare_consent::domain::{
    Actor, CareRelationship, CareRelationshipKind, Directive, DirectiveKind, DirectiveSource,
    Effect, EvaluationRequest, OdsCode, PatientId, Period, Provenance, Purpose, RecordCategory,
    Rules, evaluate,
};

fn ods(code: &str) -> OdsCode {
    OdsCode::parse("ods", code).expect("ods")
}

fn bench(c: &mut Criterion) {
    let now = Utc
        .with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
        .single()
        .expect("now");
    let patient = PatientId::parse("p", "patient-1").expect("patient");
    let orgs = ["A81001", "B82002", "C83003", "D84004", "E85005"];
    let categories = [
        RecordCategory::General,
        RecordCategory::SexualHealth,
        RecordCategory::MentalHealth,
        RecordCategory::Safeguarding,
        RecordCategory::SocialCare,
    ];
    let relationships: Vec<CareRelationship> = orgs
        .iter()
        .enumerate()
        .map(|(i, org)| CareRelationship {
            id: format!("r{i}"),
            patient_id: patient.clone(),
            organisation: ods(org),
            kind: CareRelationshipKind::RegisteredGp,
            period: Period {
                start: now - Duration::days(100 + i as i64),
                end: (i % 2 == 1).then(|| now + Duration::days(30)),
            },
            staff_member: None,
            team: None,
            reason: None,
            recorded_by: "pas".into(),
            recorded_by_organisation: ods(org),
            ended_by: None,
        })
        .collect();
    // Directives of every shape: both effects, scoped by purpose,
    // organisation, role and category, some ended or revoked; none of them
    // applies to the request, so every one is examined.
    let directives: Vec<Directive> = (0..50)
        .map(|i| Directive {
            id: format!("d{i}"),
            patient_id: patient.clone(),
            kind: DirectiveKind::Patient,
            effect: if i % 3 == 0 {
                Effect::Deny
            } else {
                Effect::Permit
            },
            purposes: vec![if i % 2 == 0 {
                Purpose::Research
            } else {
                Purpose::Planning
            }],
            organisation: Some(ods(orgs[i % orgs.len()])),
            staff_member: (i % 6 == 0).then(|| format!("staff-{i}")),
            staff_role: (i % 4 == 0).then(|| "R8000".to_owned()),
            categories: vec![categories[i % categories.len()]],
            period: Period {
                start: now - Duration::days(50),
                end: (i % 5 == 0).then(|| now - Duration::days(1)),
            },
            note: String::new(),
            created_at: now - Duration::days(50),
            revoked_at: (i % 7 == 0).then(|| now - Duration::days(2)),
            provenance: Provenance {
                recorded_by: "patient".into(),
                organisation: None,
                source: DirectiveSource::Patient,
            },
            revoked_by: None,
        })
        .collect();
    let request = EvaluationRequest {
        patient_id: patient,
        actor: Actor {
            principal_id: "staff-1".into(),
            organisation: Some(ods("C83003")),
            role: "R8000".into(),
            patient: None,
            may_break_glass: true,
        },
        purpose: Purpose::DirectCare,
        category: RecordCategory::MentalHealth,
        break_glass: None,
        exemptions: vec![],
    };
    let scopes = Rules::default();
    let decision = evaluate(&request, &relationships, &directives, &scopes, now);
    assert_eq!(
        decision.outcome,
        sharedcare_consent::domain::Outcome::Permit,
        "the bench decides a real PERMIT"
    );

    let key = SigningKey::from_bytes(&[7; 32]);
    let verifying = key.verifying_key();
    // About a token's signed part.
    let message = vec![b'x'; 600];
    let signature = key.sign(&message);

    let mut group = c.benchmark_group("consent");
    group.bench_function("evaluate (50 directives, 5 relationships)", |b| {
        b.iter(|| {
            evaluate(
                black_box(&request),
                black_box(&relationships),
                black_box(&directives),
                &scopes,
                now,
            )
        })
    });
    group.bench_function("ed25519 verify (600-byte message)", |b| {
        b.iter(|| verifying.verify(black_box(&message), black_box(&signature)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
