//! Properties of the consent decision, over generated patients: whatever
//! their relationships and directives, a decision is deterministic, a DENY
//! directive never turns a DENY into a PERMIT, revoking a directive restores
//! the decision without it, the National Data Opt-out never changes a
//! direct-care decision, and a relationship never opens a category its kind
//! does not cover unless a PERMIT directive (or break-glass) does.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use sharedcare_consent::domain::{
    Actor, BreakGlass, CareRelationship, CareRelationshipKind, Decision, Directive, DirectiveKind,
    DirectiveSource, Effect, EvaluationRequest, Exemption, OdsCode, Outcome, PatientId, Period,
    Provenance, Purpose, RecordCategory, RelationshipScopes, Rules, evaluate,
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

const STAFF: [&str; 2] = ["staff-1", "staff-2"];

/// Any kind, break-glass grants included; some name a staff member.
fn relationship() -> impl Strategy<Value = CareRelationship> {
    (
        0usize..3,
        0usize..7,
        period(),
        any::<u16>(),
        prop::option::of(0usize..2),
    )
        .prop_map(|(org, kind, period, id, staff)| {
            let kind = CareRelationshipKind::ALL
                .get(kind)
                .copied()
                .unwrap_or(CareRelationshipKind::BreakGlass);
            let grant = kind == CareRelationshipKind::BreakGlass;
            CareRelationship {
                id: format!("r{id}"),
                patient_id: patient(),
                organisation: ods(org),
                kind,
                period,
                staff_member: staff.or(grant.then_some(0)).map(|s| STAFF[s].to_owned()),
                team: None,
                reason: grant.then(|| "emergency".to_owned()),
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
        prop::option::of(0usize..2),
    )
        .prop_map(
            move |(permit, purposes, org, role, categories, period, revoked, id, staff)| {
                Directive {
                    id: format!("d{id}"),
                    patient_id: patient(),
                    kind: DirectiveKind::Patient,
                    effect: effect.unwrap_or(if permit { Effect::Permit } else { Effect::Deny }),
                    purposes: purposes.into_iter().map(|p| PURPOSES[p]).collect(),
                    organisation: org.map(ods),
                    staff_member: staff.map(|s| STAFF[s].to_owned()),
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
                }
            },
        )
}

/// Staff asking, sometimes with break-glass, sometimes claiming an
/// opt-out exemption.
fn request() -> impl Strategy<Value = EvaluationRequest> {
    (
        (0usize..3, any::<bool>(), 0usize..2, any::<bool>()),
        0usize..6,
        0usize..5,
        any::<bool>(),
        0usize..3,
    )
        .prop_map(
            |((org, role, staff, allowed), purpose, category, glass, exemption)| {
                EvaluationRequest {
                    patient_id: patient(),
                    actor: Actor {
                        principal_id: STAFF[staff].into(),
                        organisation: Some(ods(org)),
                        role: if role { "R8000".into() } else { "R8001".into() },
                        patient: None,
                        may_break_glass: allowed,
                    },
                    purpose: PURPOSES[purpose],
                    category: CATEGORIES[category],
                    break_glass: glass.then(|| BreakGlass {
                        reason: "emergency".into(),
                    }),
                    exemptions: match exemption {
                        1 => vec![Exemption::AnonymisedData],
                        2 => vec![Exemption::LegalRequirement {
                            basis: "statute".into(),
                        }],
                        _ => vec![],
                    },
                }
            },
        )
}

fn opt_out() -> Directive {
    Directive {
        id: "opt-out".into(),
        patient_id: patient(),
        kind: DirectiveKind::NationalOptOut,
        effect: Effect::Deny,
        purposes: DirectiveKind::OPT_OUT_PURPOSES.to_vec(),
        organisation: None,
        staff_member: None,
        staff_role: None,
        categories: vec![],
        period: Period {
            start: now() - Duration::days(100),
            end: None,
        },
        note: String::new(),
        created_at: now() - Duration::days(100),
        revoked_at: None,
        provenance: Provenance {
            recorded_by: "ndop".into(),
            organisation: None,
            source: DirectiveSource::NationalOptOutService,
        },
        revoked_by: None,
    }
}

fn decide(r: &EvaluationRequest, rels: &[CareRelationship], dirs: &[Directive]) -> Decision {
    evaluate(r, rels, dirs, &Rules::default(), now())
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
    fn an_opt_out_never_changes_a_care_decision(
        r in request(),
        rels in prop::collection::vec(relationship(), 0..4),
        mut dirs in prop::collection::vec(directive(None), 0..6),
    ) {
        prop_assume!(!DirectiveKind::OPT_OUT_PURPOSES.contains(&r.purpose));
        let without = decide(&r, &rels, &dirs);
        dirs.push(opt_out());
        prop_assert_eq!(decide(&r, &rels, &dirs), without);
    }

    #[test]
    fn an_opt_out_refuses_unless_an_exemption_is_named(
        r in request(),
        rels in prop::collection::vec(relationship(), 0..4),
        mut dirs in prop::collection::vec(directive(None), 0..6),
    ) {
        prop_assume!(DirectiveKind::OPT_OUT_PURPOSES.contains(&r.purpose));
        dirs.push(opt_out());
        let decision = decide(&r, &rels, &dirs);
        if decision.outcome == Outcome::Permit {
            prop_assert!(
                decision.reasons.iter().any(|x| x.code.as_str() == "OPT_OUT_EXEMPTION"),
                "{:?}", decision
            );
        }
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
            let emergency = matches!(r.purpose, Purpose::DirectCare | Purpose::EmergencyCare);
            let actors = |rel: &&CareRelationship| {
                rel.belongs_to(&r.actor) && rel.is_current(now())
            };
            let covered = rels.iter().filter(actors).any(|rel| scopes.covers(rel.kind, r.category));
            let granted = emergency
                && rels.iter().filter(actors).any(|rel| rel.kind == CareRelationshipKind::BreakGlass);
            let broke_glass = emergency && r.break_glass.is_some() && r.actor.may_break_glass;
            prop_assert!(covered || granted || broke_glass, "{:?}", decision);
            if !covered && !granted {
                prop_assert!(decision.new_grant.is_some(), "{:?}", decision);
            }
        }
    }
}
