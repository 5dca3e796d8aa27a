//! The consent decision. Deny unless a rule permits; every decision says why.
//!
//! Rules, in order:
//! 0. Patient access: a patient reading their own record → PERMIT
//!    (`PATIENT_OWN_RECORD`); anyone else asking for patient access, or a
//!    patient asking for anything else or for another patient → DENY
//!    (`NOT_THE_PATIENT`).
//! 1. An active DENY directive of the patient that applies → DENY
//!    (`PATIENT_DIRECTIVE_DENY`). Patient objections win over everything.
//! 2. Direct care: a current care relationship between the actor's
//!    organisation and the patient → PERMIT (`CARE_RELATIONSHIP`), else DENY
//!    (`NO_CARE_RELATIONSHIP`).
//! 3. Any other purpose: an active PERMIT directive that applies (explicit
//!    consent) → PERMIT (`PATIENT_DIRECTIVE_PERMIT`), else DENY
//!    (`NO_LAWFUL_BASIS`).
//! 4. Break-glass is not honoured yet: when it was asked for and the answer
//!    is DENY, the decision says so (`BREAK_GLASS_UNAVAILABLE`).
//!
//! Every PERMIT carries the `AUDIT` obligation.

use chrono::{DateTime, Utc};
use sharedcare_kit::Error;

use super::{
    CareRelationship, Directive, Effect, OdsCode, PatientId, Purpose, RecordCategory,
    RelationshipScopes, directive::MAX_NOTE_CHARS, optional_text,
};

/// The end user on whose behalf a service asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub principal_id: String,
    /// None for a patient acting for themselves.
    pub organisation: Option<OdsCode>,
    /// Role at that organisation; empty when the principal has none.
    pub role: String,
    /// Set when the actor is a patient: the patient their token is bound to.
    pub patient: Option<PatientId>,
}

/// A request for emergency access without a care relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlass {
    pub reason: String,
}

impl BreakGlass {
    /// The reason is required and at most [`MAX_NOTE_CHARS`].
    pub fn parse(field: &str, reason: &str) -> Result<Self, Error> {
        optional_text(field, reason, MAX_NOTE_CHARS)?
            .map(|reason| BreakGlass { reason })
            .ok_or_else(|| Error::invalid(field, "is required when break-glass is asked for"))
    }
}

/// What is being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluationRequest {
    pub patient_id: PatientId,
    pub actor: Actor,
    pub purpose: Purpose,
    pub category: RecordCategory,
    pub break_glass: Option<BreakGlass>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Permit,
    Deny,
}

/// Stable reason codes; messages are for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonCode {
    PatientOwnRecord,
    NotThePatient,
    PatientDirectiveDeny,
    CareRelationship,
    NoCareRelationship,
    PatientDirectivePermit,
    NoLawfulBasis,
    BreakGlassUnavailable,
    RelationshipScope,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::PatientOwnRecord => "PATIENT_OWN_RECORD",
            ReasonCode::NotThePatient => "NOT_THE_PATIENT",
            ReasonCode::PatientDirectiveDeny => "PATIENT_DIRECTIVE_DENY",
            ReasonCode::CareRelationship => "CARE_RELATIONSHIP",
            ReasonCode::NoCareRelationship => "NO_CARE_RELATIONSHIP",
            ReasonCode::PatientDirectivePermit => "PATIENT_DIRECTIVE_PERMIT",
            ReasonCode::NoLawfulBasis => "NO_LAWFUL_BASIS",
            ReasonCode::BreakGlassUnavailable => "BREAK_GLASS_UNAVAILABLE",
            ReasonCode::RelationshipScope => "RELATIONSHIP_SCOPE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: ReasonCode,
    pub message: String,
    /// The relationship or directive the reason rests on.
    pub evidence_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObligationCode {
    Audit,
}

impl ObligationCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ObligationCode::Audit => "AUDIT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obligation {
    pub code: ObligationCode,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reasons: Vec<Reason>,
    pub obligations: Vec<Obligation>,
}

impl Decision {
    fn deny(reasons: Vec<Reason>) -> Self {
        Decision {
            outcome: Outcome::Deny,
            reasons,
            obligations: vec![],
        }
    }

    fn permit(reason: Reason) -> Self {
        Decision {
            outcome: Outcome::Permit,
            reasons: vec![reason],
            obligations: vec![Obligation {
                code: ObligationCode::Audit,
                message: "record this access in the audit trail, citing this decision".into(),
            }],
        }
    }
}

/// Decides `request` at `now` from the patient's care relationships and
/// directives (entries for other patients are ignored).
pub fn evaluate(
    request: &EvaluationRequest,
    relationships: &[CareRelationship],
    directives: &[Directive],
    scopes: &RelationshipScopes,
    now: DateTime<Utc>,
) -> Decision {
    let mut decision = decide(request, relationships, directives, scopes, now);
    if request.break_glass.is_some() && decision.outcome == Outcome::Deny {
        decision.reasons.push(Reason {
            code: ReasonCode::BreakGlassUnavailable,
            message: "break-glass was asked for but is not honoured yet; it lands with the \
                      break-glass issue"
                .into(),
            evidence_id: None,
        });
    }
    decision
}

fn decide(
    request: &EvaluationRequest,
    relationships: &[CareRelationship],
    directives: &[Directive],
    scopes: &RelationshipScopes,
    now: DateTime<Utc>,
) -> Decision {
    // 0. Patient access is the patient's own, and only theirs.
    let is_the_patient = request.actor.patient.as_ref() == Some(&request.patient_id);
    if request.purpose == Purpose::PatientAccess || request.actor.patient.is_some() {
        return if is_the_patient && request.purpose == Purpose::PatientAccess {
            Decision::permit(Reason {
                code: ReasonCode::PatientOwnRecord,
                message: "the patient is reading their own record".into(),
                evidence_id: None,
            })
        } else {
            Decision::deny(vec![Reason {
                code: ReasonCode::NotThePatient,
                message: "patient access is only for the patient themselves, and a patient \
                          acts only for patient access to their own record"
                    .into(),
                evidence_id: None,
            }])
        };
    }

    let applicable = |effect: Effect| {
        directives.iter().filter(move |d| {
            d.effect == effect
                && d.patient_id == request.patient_id
                && d.is_active(now)
                && d.applies_to(
                    request.purpose,
                    request.actor.organisation.as_ref(),
                    &request.actor.role,
                    request.category,
                )
        })
    };

    // 1. Patient objections win.
    let denials: Vec<Reason> = applicable(Effect::Deny)
        .map(|d| Reason {
            code: ReasonCode::PatientDirectiveDeny,
            message: "the patient has a directive refusing this use of their record".into(),
            evidence_id: Some(d.id.clone()),
        })
        .collect();
    if !denials.is_empty() {
        return Decision::deny(denials);
    }

    let Some(organisation) = &request.actor.organisation else {
        return Decision::deny(vec![Reason {
            code: ReasonCode::NoCareRelationship,
            message: "the actor acts for no organisation".into(),
            evidence_id: None,
        }]);
    };
    if request.purpose.rests_on_relationship() {
        // 2. Direct care (and emergency care and safeguarding) rests on a legitimate relationship whose kind
        // covers the category (configuration), or on the patient's explicit
        // permission for what it does not cover. When several relationships
        // hold, cite the one that began most recently.
        let latest = |a: &&CareRelationship, b: &&CareRelationship| {
            (a.period.start, &a.id).cmp(&(b.period.start, &b.id))
        };
        let current: Vec<&CareRelationship> = relationships
            .iter()
            .filter(|r| {
                r.patient_id == request.patient_id
                    && &r.organisation == organisation
                    && r.is_current(now)
            })
            .collect();
        if let Some(r) = current
            .iter()
            .copied()
            .filter(|r| scopes.covers(r.kind, request.category))
            .max_by(latest)
        {
            return Decision::permit(Reason {
                code: ReasonCode::CareRelationship,
                message: format!(
                    "organisation {organisation} has a current {} relationship with this patient",
                    r.kind.describe()
                ),
                evidence_id: Some(r.id.clone()),
            });
        }
        let Some(r) = current.iter().copied().max_by(latest) else {
            return Decision::deny(vec![Reason {
                code: ReasonCode::NoCareRelationship,
                message: format!(
                    "organisation {organisation} has no current care relationship with this patient"
                ),
                evidence_id: None,
            }]);
        };
        return match applicable(Effect::Permit).next() {
            Some(d) => Decision::permit(Reason {
                code: ReasonCode::PatientDirectivePermit,
                message: format!(
                    "the patient has permitted this beyond what a {} relationship covers",
                    r.kind.describe()
                ),
                evidence_id: Some(d.id.clone()),
            }),
            None => Decision::deny(vec![Reason {
                code: ReasonCode::RelationshipScope,
                message: format!(
                    "a {} relationship does not cover {} records, and the patient has not \
                     permitted it",
                    r.kind.describe(),
                    request.category.as_str()
                ),
                evidence_id: Some(r.id.clone()),
            }]),
        };
    }

    // 3. Beyond direct care, only the patient's explicit consent for now.
    match applicable(Effect::Permit).next() {
        Some(d) => Decision::permit(Reason {
            code: ReasonCode::PatientDirectivePermit,
            message: format!(
                "the patient has given explicit consent for {}",
                request.purpose.as_str()
            ),
            evidence_id: Some(d.id.clone()),
        }),
        None => Decision::deny(vec![Reason {
            code: ReasonCode::NoLawfulBasis,
            message: format!(
                "no rule permits purpose {}; the National Data Opt-out and other bases land later",
                request.purpose.as_str()
            ),
            evidence_id: None,
        }]),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::domain::{CareRelationshipKind, DirectiveSource, Period, Provenance};

    /// The decision under the default relationship scopes.
    fn evaluate(
        request: &EvaluationRequest,
        relationships: &[CareRelationship],
        directives: &[Directive],
        now: DateTime<Utc>,
    ) -> Decision {
        super::evaluate(
            request,
            relationships,
            directives,
            &RelationshipScopes::default(),
            now,
        )
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
            .single()
            .expect("valid")
    }

    fn ods(code: &str) -> OdsCode {
        OdsCode::parse("o", code).expect("valid")
    }

    fn patient() -> PatientId {
        PatientId::parse("p", "patient-1").expect("valid")
    }

    fn request(purpose: Purpose) -> EvaluationRequest {
        EvaluationRequest {
            patient_id: patient(),
            actor: Actor {
                principal_id: "staff-1".into(),
                organisation: Some(ods("A81001")),
                role: "R8000".into(),
                patient: None,
            },
            purpose,
            category: RecordCategory::General,
            break_glass: None,
        }
    }

    fn open_since(days: i64) -> Period {
        Period {
            start: now() - Duration::days(days),
            end: None,
        }
    }

    fn relationship(id: &str, org: &str, period: Period) -> CareRelationship {
        CareRelationship {
            id: id.into(),
            patient_id: patient(),
            organisation: ods(org),
            kind: CareRelationshipKind::RegisteredGp,
            period,
            recorded_by: "admin".into(),
            recorded_by_organisation: ods(org),
            ended_by: None,
        }
    }

    /// A directive about any use, from yesterday, never revoked.
    fn directive(id: &str, effect: Effect) -> Directive {
        Directive {
            id: id.into(),
            patient_id: patient(),
            effect,
            purposes: vec![],
            organisation: None,
            staff_role: None,
            categories: vec![],
            period: open_since(1),
            note: String::new(),
            created_at: now() - Duration::days(1),
            revoked_at: None,
            provenance: Provenance {
                recorded_by: "patient-principal".into(),
                organisation: None,
                source: DirectiveSource::Patient,
            },
            revoked_by: None,
        }
    }

    #[test]
    fn a_patient_reads_their_own_record_and_nothing_else() {
        let mut asked = request(Purpose::PatientAccess);
        asked.actor = Actor {
            principal_id: "pp-1".into(),
            organisation: None,
            role: String::new(),
            patient: Some(patient()),
        };
        // Their own objections do not stop the patient reading their record.
        let denial = directive("d1", Effect::Deny);
        let decision = evaluate(&asked, &[], &[denial], now());
        assert_eq!(decision.outcome, Outcome::Permit);
        assert_eq!(codes(&decision), ["PATIENT_OWN_RECORD"]);

        let mut other = asked.clone();
        other.actor.patient = Some(PatientId::parse("p", "patient-2").expect("valid"));
        let decision = evaluate(&other, &[], &[], now());
        assert_eq!(codes(&decision), ["NOT_THE_PATIENT"]);

        let mut direct = asked.clone();
        direct.purpose = Purpose::DirectCare;
        assert_eq!(evaluate(&direct, &[], &[], now()).outcome, Outcome::Deny);
    }

    #[test]
    fn staff_never_get_patient_access() {
        let open = relationship("r1", "A81001", open_since(3));
        let decision = evaluate(&request(Purpose::PatientAccess), &[open], &[], now());
        assert_eq!(codes(&decision), ["NOT_THE_PATIENT"]);
    }

    /// A named change to a directive.
    type Case = (&'static str, fn(&mut Directive));

    fn codes(d: &Decision) -> Vec<&'static str> {
        d.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    #[test]
    fn direct_care_is_permitted_within_a_current_relationship_and_audited() {
        let d = evaluate(
            &request(Purpose::DirectCare),
            &[relationship("r1", "A81001", open_since(30))],
            &[],
            now(),
        );
        assert_eq!(d.outcome, Outcome::Permit);
        assert_eq!(codes(&d), ["CARE_RELATIONSHIP"]);
        assert_eq!(d.reasons[0].evidence_id.as_deref(), Some("r1"));
        assert!(d.reasons[0].message.contains("registered GP"));
        assert_eq!(d.obligations.len(), 1);
        assert_eq!(d.obligations[0].code.as_str(), "AUDIT");
    }

    #[test]
    fn direct_care_without_a_relationship_is_denied_and_says_which_organisation() {
        let d = evaluate(&request(Purpose::DirectCare), &[], &[], now());
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(codes(&d), ["NO_CARE_RELATIONSHIP"]);
        assert_eq!(
            d.reasons[0].message,
            "organisation A81001 has no current care relationship with this patient"
        );
        assert!(d.obligations.is_empty());
        assert_eq!(d.reasons[0].evidence_id, None);
    }

    #[test]
    fn only_current_relationships_of_this_organisation_and_patient_count() {
        let ended = Period {
            start: now() - Duration::days(30),
            end: Some(now() - Duration::days(1)),
        };
        let ends_now = Period {
            start: now() - Duration::days(30),
            end: Some(now()),
        };
        let future = Period {
            start: now() + Duration::days(1),
            end: None,
        };
        let mut other_patient = relationship("r4", "A81001", open_since(30));
        other_patient.patient_id = PatientId::parse("p", "patient-2").expect("valid");
        let d = evaluate(
            &request(Purpose::DirectCare),
            &[
                relationship("r1", "A81001", ended),
                relationship("r2", "A81001", ends_now),
                relationship("r3", "A81001", future),
                other_patient,
                relationship("r5", "RR8", open_since(30)),
            ],
            &[],
            now(),
        );
        assert_eq!(codes(&d), ["NO_CARE_RELATIONSHIP"]);

        // A relationship that starts exactly now is current.
        let starts_now = Period {
            start: now(),
            end: Some(now() + Duration::hours(1)),
        };
        let d = evaluate(
            &request(Purpose::DirectCare),
            &[relationship("r6", "A81001", starts_now)],
            &[],
            now(),
        );
        assert_eq!(d.outcome, Outcome::Permit);
    }

    #[test]
    fn the_most_recently_started_relationship_is_cited() {
        let d = evaluate(
            &request(Purpose::DirectCare),
            &[
                relationship("old", "A81001", open_since(300)),
                relationship("new", "A81001", open_since(3)),
                relationship("mid", "A81001", open_since(30)),
            ],
            &[],
            now(),
        );
        assert_eq!(d.reasons[0].evidence_id.as_deref(), Some("new"));
    }

    #[test]
    fn a_patient_objection_beats_a_care_relationship() {
        let d = evaluate(
            &request(Purpose::DirectCare),
            &[relationship("r1", "A81001", open_since(30))],
            &[directive("d1", Effect::Deny)],
            now(),
        );
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(codes(&d), ["PATIENT_DIRECTIVE_DENY"]);
        assert_eq!(d.reasons[0].evidence_id.as_deref(), Some("d1"));
        assert!(d.obligations.is_empty());
    }

    #[test]
    fn a_deny_also_beats_explicit_consent_and_every_applicable_deny_is_cited() {
        let d = evaluate(
            &request(Purpose::Research),
            &[],
            &[
                directive("p1", Effect::Permit),
                directive("d1", Effect::Deny),
                directive("d2", Effect::Deny),
            ],
            now(),
        );
        assert_eq!(d.outcome, Outcome::Deny);
        let evidence: Vec<_> = d.reasons.iter().map(|r| r.evidence_id.as_deref()).collect();
        assert_eq!(evidence, [Some("d1"), Some("d2")]);
    }

    #[test]
    fn a_deny_applies_only_where_each_of_its_conditions_is_met() {
        let rels = [relationship("r1", "A81001", open_since(30))];
        let narrowed: [Case; 4] = [
            ("purpose", |d| d.purposes = vec![Purpose::Research]),
            ("organisation", |d| d.organisation = Some(ods("RR8"))),
            ("staff role", |d| d.staff_role = Some("R0260".into())),
            ("category", |d| {
                d.categories = vec![RecordCategory::SexualHealth]
            }),
        ];
        for (what, narrow) in narrowed {
            let mut d = directive("d1", Effect::Deny);
            narrow(&mut d);
            let decision = evaluate(&request(Purpose::DirectCare), &rels, &[d], now());
            assert_eq!(decision.outcome, Outcome::Permit, "{what} differs");
        }

        let matching: [Case; 4] = [
            ("purpose", |d| {
                d.purposes = vec![Purpose::Research, Purpose::DirectCare]
            }),
            ("organisation", |d| d.organisation = Some(ods("a81001"))),
            ("staff role", |d| d.staff_role = Some("R8000".into())),
            ("category", |d| {
                d.categories = vec![RecordCategory::General, RecordCategory::MentalHealth]
            }),
        ];
        for (what, narrow) in matching {
            let mut d = directive("d1", Effect::Deny);
            narrow(&mut d);
            let decision = evaluate(&request(Purpose::DirectCare), &rels, &[d], now());
            assert_eq!(decision.outcome, Outcome::Deny, "{what} matches");
        }
    }

    #[test]
    fn a_category_objection_covers_only_that_category() {
        let rels = [relationship("r1", "A81001", open_since(30))];
        let mut d = directive("d1", Effect::Deny);
        d.categories = vec![RecordCategory::SexualHealth];
        let mut sexual_health = request(Purpose::DirectCare);
        sexual_health.category = RecordCategory::SexualHealth;
        assert_eq!(
            evaluate(&sexual_health, &rels, std::slice::from_ref(&d), now()).outcome,
            Outcome::Deny
        );
        assert_eq!(
            evaluate(&request(Purpose::DirectCare), &rels, &[d], now()).outcome,
            Outcome::Permit
        );
    }

    #[test]
    fn revoked_expired_future_and_other_patients_directives_do_not_apply() {
        let rels = [relationship("r1", "A81001", open_since(30))];
        let inactive: [Case; 5] = [
            ("revoked", |d| {
                d.revoked_at = Some(now() - Duration::hours(1))
            }),
            ("revoked exactly now", |d| d.revoked_at = Some(now())),
            ("expired", |d| d.period.end = Some(now())),
            ("not yet started", |d| {
                d.period.start = now() + Duration::seconds(1)
            }),
            ("another patient's", |d| {
                d.patient_id = PatientId::parse("p", "patient-2").expect("valid")
            }),
        ];
        for (what, change) in inactive {
            let mut d = directive("d1", Effect::Deny);
            change(&mut d);
            let decision = evaluate(&request(Purpose::DirectCare), &rels, &[d], now());
            assert_eq!(decision.outcome, Outcome::Permit, "{what}");
        }

        // Revoked later than the moment asked about: it still applied then.
        let mut d = directive("d1", Effect::Deny);
        d.revoked_at = Some(now() + Duration::hours(1));
        let decision = evaluate(&request(Purpose::DirectCare), &rels, &[d], now());
        assert_eq!(decision.outcome, Outcome::Deny);
    }

    #[test]
    fn a_relationship_sees_only_the_categories_its_kind_covers_unless_the_patient_permits() {
        let mut home = relationship("r1", "A81001", open_since(30));
        home.kind = CareRelationshipKind::CareHomePlacement;
        let asking = |category| {
            let mut r = request(Purpose::DirectCare);
            r.category = category;
            r
        };
        let social = evaluate(
            &asking(RecordCategory::SocialCare),
            &[home.clone()],
            &[],
            now(),
        );
        assert_eq!(codes(&social), ["CARE_RELATIONSHIP"]);
        let mental = evaluate(
            &asking(RecordCategory::MentalHealth),
            &[home.clone()],
            &[],
            now(),
        );
        assert_eq!(mental.outcome, Outcome::Deny);
        assert_eq!(codes(&mental), ["RELATIONSHIP_SCOPE"]);
        assert_eq!(mental.reasons[0].evidence_id.as_deref(), Some("r1"));
        assert!(mental.reasons[0].message.contains("care home placement"));
        // The patient permits it: the directive decides, and says so.
        let mut permit = directive("d1", Effect::Permit);
        permit.organisation = Some(ods("A81001"));
        permit.categories = vec![RecordCategory::MentalHealth];
        let permitted = evaluate(
            &asking(RecordCategory::MentalHealth),
            &[home.clone()],
            std::slice::from_ref(&permit),
            now(),
        );
        assert_eq!(codes(&permitted), ["PATIENT_DIRECTIVE_PERMIT"]);
        // Another kind of relationship of the same organisation that covers
        // it is cited instead.
        let gp = relationship("r2", "A81001", open_since(300));
        let by_gp = evaluate(
            &asking(RecordCategory::MentalHealth),
            &[home, gp],
            &[],
            now(),
        );
        assert_eq!(by_gp.reasons[0].evidence_id.as_deref(), Some("r2"));
        // Configuration decides what a kind covers.
        let mut team = relationship("r3", "A81001", open_since(3));
        team.kind = CareRelationshipKind::SocialCareTeam;
        let widened = RelationshipScopes::with_overrides(&std::collections::BTreeMap::from([(
            "social_care_team".to_owned(),
            vec!["mental_health".to_owned()],
        )]))
        .expect("valid");
        let asked = asking(RecordCategory::MentalHealth);
        assert_eq!(
            super::evaluate(&asked, std::slice::from_ref(&team), &[], &widened, now()).outcome,
            Outcome::Permit
        );
        assert_eq!(evaluate(&asked, &[team], &[], now()).outcome, Outcome::Deny);
    }

    #[test]
    fn revoking_a_directive_restores_the_earlier_decision() {
        let rels = [relationship("r1", "A81001", open_since(30))];
        let before = evaluate(&request(Purpose::DirectCare), &rels, &[], now());
        let mut d = directive("d1", Effect::Deny);
        assert_eq!(
            evaluate(
                &request(Purpose::DirectCare),
                &rels,
                std::slice::from_ref(&d),
                now()
            )
            .outcome,
            Outcome::Deny
        );
        d.revoked_at = Some(now() - Duration::minutes(1));
        assert_eq!(
            evaluate(&request(Purpose::DirectCare), &rels, &[d], now()),
            before
        );
    }

    /// docs/consent-rules.md: each row names the test that proves it, and
    /// each named test is here.
    #[test]
    fn every_rule_in_the_rules_doc_is_a_test() {
        let doc = include_str!("../../../../docs/consent-rules.md");
        let source = include_str!("evaluate.rs");
        let named: Vec<&str> = doc
            .lines()
            .filter(|l| l.starts_with("| R"))
            .map(|l| {
                let test = l.rsplit('|').nth(1).unwrap_or("").trim().trim_matches('`');
                assert!(!test.is_empty(), "a rule without a test: {l}");
                test
            })
            .collect();
        assert!(named.len() >= 12, "{} rules", named.len());
        for test in named {
            assert!(
                source.contains(&format!("#[test]\n    fn {test}()")),
                "the rules doc names `{test}`, which is not a test here"
            );
        }
    }

    #[test]
    fn emergency_care_and_safeguarding_rest_on_a_relationship_and_commissioning_on_consent() {
        let rels = [relationship("r1", "A81001", open_since(30))];
        for purpose in [Purpose::EmergencyCare, Purpose::Safeguarding] {
            assert_eq!(
                codes(&evaluate(&request(purpose), &rels, &[], now())),
                ["CARE_RELATIONSHIP"],
                "{purpose:?}"
            );
            assert_eq!(
                codes(&evaluate(&request(purpose), &[], &[], now())),
                ["NO_CARE_RELATIONSHIP"],
                "{purpose:?}"
            );
            // The patient's objection still wins.
            let deny = directive("d1", Effect::Deny);
            assert_eq!(
                evaluate(&request(purpose), &rels, &[deny], now()).outcome,
                Outcome::Deny
            );
        }
        assert_eq!(
            codes(&evaluate(
                &request(Purpose::Commissioning),
                &rels,
                &[],
                now()
            )),
            ["NO_LAWFUL_BASIS"]
        );
        let consent = directive("d1", Effect::Permit);
        assert_eq!(
            codes(&evaluate(
                &request(Purpose::Commissioning),
                &[],
                &[consent],
                now()
            )),
            ["PATIENT_DIRECTIVE_PERMIT"]
        );
    }

    #[test]
    fn purposes_beyond_direct_care_need_explicit_consent() {
        for purpose in [Purpose::Research, Purpose::Planning] {
            // A care relationship is no basis for research or planning.
            let d = evaluate(
                &request(purpose),
                &[relationship("r1", "A81001", open_since(30))],
                &[],
                now(),
            );
            assert_eq!(d.outcome, Outcome::Deny, "{purpose:?}");
            assert_eq!(codes(&d), ["NO_LAWFUL_BASIS"]);
        }
        let d = evaluate(&request(Purpose::Research), &[], &[], now());
        assert_eq!(
            d.reasons[0].message,
            "no rule permits purpose research; the National Data Opt-out and other bases land later"
        );

        let mut consent = directive("p1", Effect::Permit);
        consent.purposes = vec![Purpose::Research];
        let d = evaluate(&request(Purpose::Research), &[], &[consent.clone()], now());
        assert_eq!(d.outcome, Outcome::Permit);
        assert_eq!(codes(&d), ["PATIENT_DIRECTIVE_PERMIT"]);
        assert_eq!(d.reasons[0].evidence_id.as_deref(), Some("p1"));
        assert_eq!(d.obligations[0].code, ObligationCode::Audit);

        // Consent for research is not consent for planning.
        let d = evaluate(&request(Purpose::Planning), &[], &[consent.clone()], now());
        assert_eq!(codes(&d), ["NO_LAWFUL_BASIS"]);

        // Nor does revoked consent count.
        consent.revoked_at = Some(now() - Duration::minutes(1));
        let d = evaluate(&request(Purpose::Research), &[], &[consent], now());
        assert_eq!(d.outcome, Outcome::Deny);
    }

    #[test]
    fn a_permit_directive_is_no_substitute_for_a_care_relationship() {
        let d = evaluate(
            &request(Purpose::DirectCare),
            &[],
            &[directive("p1", Effect::Permit)],
            now(),
        );
        assert_eq!(codes(&d), ["NO_CARE_RELATIONSHIP"]);
    }

    #[test]
    fn break_glass_is_not_honoured_yet_and_a_denial_says_so() {
        let mut asked = request(Purpose::DirectCare);
        asked.break_glass = Some(BreakGlass::parse("r", "unconscious in A&E").expect("valid"));
        let d = evaluate(&asked, &[], &[], now());
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(
            codes(&d),
            ["NO_CARE_RELATIONSHIP", "BREAK_GLASS_UNAVAILABLE"]
        );

        let d = evaluate(&asked, &[], &[directive("d1", Effect::Deny)], now());
        assert_eq!(
            codes(&d),
            ["PATIENT_DIRECTIVE_DENY", "BREAK_GLASS_UNAVAILABLE"]
        );

        // A permit stands on its own rule; break-glass adds nothing.
        let d = evaluate(
            &asked,
            &[relationship("r1", "A81001", open_since(1))],
            &[],
            now(),
        );
        assert_eq!(d.outcome, Outcome::Permit);
        assert_eq!(codes(&d), ["CARE_RELATIONSHIP"]);
    }

    #[test]
    fn break_glass_needs_a_reason() {
        let err = BreakGlass::parse("break_glass.reason", "  ").expect_err("empty");
        assert_eq!(err.field.as_deref(), Some("break_glass.reason"));
        assert!(BreakGlass::parse("break_glass.reason", &"x".repeat(501)).is_err());
    }
}
