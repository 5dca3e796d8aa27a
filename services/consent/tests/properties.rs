//! Properties of the consent decision, over generated patients: whatever
//! their relationships and directives, a decision is deterministic, a DENY
//! directive never turns a DENY into a PERMIT, revoking a directive restores
//! the decision without it, and a relationship never opens a category its
//! kind does not cover unless a PERMIT directive does.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use sharedcare_consent::domain::{
    Actor, CareRelationship, CareRelationshipKind, Decision, Directive, DirectiveSource, Effect,
    EvaluationRequest, OdsCode, Outcome, PatientId, Period, Provenance, Purpose, RecordCategory,
    RelationshipScopes, evaluate,
};

const ORGS: [&str; 3] = ["A81001", "B82002", "C83003"];
const PURPOSES: [Purpose; 6] = [
    Purpose::DirectCare,
    Purpose::EmergencyCare,
    Purpose::Safeguarding,
    Purpose::Research,
    Purpose::Planning,
    Purpose::Commissioning,
];
const CATEGORIES: [RecordCategory; 5] = [
    RecordCategory::General,
    RecordCategory::SexualHealth,
    RecordCategory::MentalHealth,
    RecordCategory::Safeguarding,
    RecordCategory::SocialCare,
];

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
        .single()
        .expect("now")
}

fn ods(i: usize) -> OdsCode {
    OdsCode::parse("ods", ORGS[i % ORGS.len()]).expect("ods")
}

fn patient() -> PatientId {
    PatientId::parse("p", "patient-1").expect("patient")
}

/// A period around `now`: started some days ago (or in the future), open
/// or ending some days from its start.
fn period() -> impl Strategy<Value = Period> {
    (-30i64..10, prop::option::of(1i64..60)).prop_map(|(start, length)| {
        let start = now() - Duration::days(-start);
        Period {
            start,
            end: length.map(|l| start + Duration::days(l)),
        }
    })
}

fn relationship() -> impl Strategy<Value = CareRelationship> {
    (0usize..3, 0usize..6, period(), any::<u16>()).prop_map(|(org, kind, period, id)| {
        CareRelationship {
            id: format!("r{id}"),
            patient_id: patient(),
            organisation: ods(org),
            kind: CareRelationshipKind::ALL[kind],
            period,
            recorded_by: "pas".into(),
            recorded_by_organisation: ods(org),
            ended_by: None,
        }
    })
}

fn directive(effect: Option<Effect>) -> impl Strategy<Value = Directive> {
    (
        any::<bool>(),
        prop::collection::vec(0usize..6, 0..2),
        prop::option::of(0usize..3),
        prop::option::of(Just("R8000".to_owned())),
        prop::collection::vec(0usize..5, 0..2),
        period(),
        prop::option::of(-5i64..5),
        any::<u16>(),
    )
        .prop_map(
            move |(permit, purposes, org, role, categories, period, revoked, id)| Directive {
                id: format!("d{id}"),
                patient_id: patient(),
                effect: effect.unwrap_or(if permit { Effect::Permit } else { Effect::Deny }),
                purposes: purposes.into_iter().map(|p| PURPOSES[p]).collect(),
                organisation: org.map(ods),
                staff_role: role,
                categories: categories.into_iter().map(|c| CATEGORIES[c]).collect(),
                period,
                note: String::new(),
                created_at: now() - Duration::days(40),
                revoked_at: revoked.map(|d| now() + Duration::days(d)),
                provenance: Provenance {
                    recorded_by: "patient".into(),
                    organisation: None,
                    source: DirectiveSource::Patient,
                },
                revoked_by: None,
            },
        )
}

fn request() -> impl Strategy<Value = EvaluationRequest> {
    (0usize..3, any::<bool>(), 0usize..6, 0usize..5).prop_map(|(org, role, purpose, category)| {
        EvaluationRequest {
            patient_id: patient(),
            actor: Actor {
                principal_id: "staff-1".into(),
                organisation: Some(ods(org)),
                role: if role { "R8000".into() } else { "R8001".into() },
                patient: None,
            },
            purpose: PURPOSES[purpose],
            category: CATEGORIES[category],
            break_glass: None,
        }
    })
}

fn decide(r: &EvaluationRequest, rels: &[CareRelationship], dirs: &[Directive]) -> Decision {
    evaluate(r, rels, dirs, &RelationshipScopes::default(), now())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decisions_are_deterministic(
        r in request(),
        rels in prop::collection::vec(relationship(), 0..4),
        dirs in prop::collection::vec(directive(None), 0..6),
    ) {
        prop_assert_eq!(decide(&r, &rels, &dirs), decide(&r, &rels, &dirs));
    }

    #[test]
    fn adding_a_deny_never_turns_a_deny_into_a_permit(
        r in request(),
        rels in prop::collection::vec(relationship(), 0..4),
        mut dirs in prop::collection::vec(directive(None), 0..6),
        deny in directive(Some(Effect::Deny)),
    ) {
        let before = decide(&r, &rels, &dirs);
        dirs.push(deny);
        let after = decide(&r, &rels, &dirs);
        if before.outcome == Outcome::Deny {
            prop_assert_eq!(after.outcome, Outcome::Deny);
        }
    }

    #[test]
    fn revoking_a_directive_restores_the_decision_without_it(
        r in request(),
        rels in prop::collection::vec(relationship(), 0..4),
        dirs in prop::collection::vec(directive(None), 0..6),
        mut extra in directive(None),
    ) {
        let without = decide(&r, &rels, &dirs);
        extra.revoked_at = Some(now() - Duration::seconds(1));
        let mut with_revoked = dirs.clone();
        with_revoked.push(extra);
        prop_assert_eq!(decide(&r, &rels, &with_revoked), without);
    }

    #[test]
    fn a_relationship_never_opens_a_category_its_kind_does_not_cover_without_a_permit(
        r in request(),
        rels in prop::collection::vec(relationship(), 0..4),
        dirs in prop::collection::vec(directive(Some(Effect::Deny)), 0..4),
    ) {
        // Only DENY directives: nothing the patient permitted.
        let scopes = RelationshipScopes::default();
        let decision = decide(&r, &rels, &dirs);
        if decision.outcome == Outcome::Permit {
            let covered = rels.iter().any(|rel| {
                Some(&rel.organisation) == r.actor.organisation.as_ref()
                    && rel.is_current(now())
                    && scopes.covers(rel.kind, r.category)
            });
            prop_assert!(covered, "{:?}", decision);
        }
    }
}
