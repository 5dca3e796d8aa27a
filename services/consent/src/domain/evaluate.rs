//! The consent decision. Deny unless a rule permits; every decision says why.
//! `docs/consent-rules.md` is the table of rules, each row a test below.
//!
//! Rules, in order:
//! 0. Patient access: a patient reading their own record → PERMIT
//!    (`PATIENT_OWN_RECORD`); anyone else asking for patient access, or a
//!    patient asking for anything else or for another patient → DENY
//!    (`NOT_THE_PATIENT`).
//! 1. The National Data Opt-out denies research, planning and commissioning
//!    (`NATIONAL_OPT_OUT`) unless an exemption holds: a legal requirement or
//!    anonymised data, claimed in the request, or the patient's explicit
//!    consent for this purpose by this organisation (a PERMIT directive
//!    naming both). A lifted opt-out is named in the reasons
//!    (`OPT_OUT_EXEMPTION`).
//! 2. The patient's directives that apply: the most specific (most
//!    conditions set) decide; at equal specificity DENY beats PERMIT. A
//!    deciding DENY → DENY (`PATIENT_DIRECTIVE_DENY`), citing each.
//! 3. Direct care, emergency care and safeguarding: a current care
//!    relationship of the actor's organisation (and of the actor, when it
//!    names a staff member) whose kind covers the category → PERMIT
//!    (`CARE_RELATIONSHIP`); a deciding PERMIT directive opens what the kind
//!    does not cover (`PATIENT_DIRECTIVE_PERMIT`), else DENY
//!    (`RELATIONSHIP_SCOPE`); no relationship → DENY (`NO_CARE_RELATIONSHIP`).
//!    The actor's own current break-glass grant counts for direct and
//!    emergency care, for every category (`BREAK_GLASS_GRANT`).
//! 4. Any other purpose: a deciding PERMIT directive (explicit consent) →
//!    PERMIT (`PATIENT_DIRECTIVE_PERMIT`), else DENY (`NO_LAWFUL_BASIS`).
//! 5. Break-glass, asked for with a reason by staff whose role allows it,
//!    for direct or emergency care, turns a DENY into a PERMIT
//!    (`BREAK_GLASS`) with a new time-boxed grant — except against the
//!    patient's objection, unless configured (`BREAK_GLASS_REFUSED`).
//!
//! Every PERMIT carries the `AUDIT` obligation; one resting on break-glass
//! also `BREAK_GLASS` (flag the access) and, when it makes a new grant,
//! `NOTIFY_PRIVACY_OFFICER`.

use chrono::{DateTime, Utc};
use sharedcare_kit::Error;

use super::{
    CareRelationship, CareRelationshipKind, Directive, DirectiveKind, Effect, OdsCode, PatientId,
    Period, Purpose, RecordCategory, Rules, directive::MAX_NOTE_CHARS, optional_text,
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
    /// Whether their role carries the `break_glass` capability.
    pub may_break_glass: bool,
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

    /// Whether `actor` may ask for it for `purpose`: only for direct or
    /// emergency care (INVALID_ARGUMENT), only staff of an organisation
    /// whose role allows it (PERMISSION_DENIED).
    pub fn check(field: &str, purpose: Purpose, actor: &Actor) -> Result<(), Error> {
        if !matches!(purpose, Purpose::DirectCare | Purpose::EmergencyCare) {
            return Err(Error::invalid(
                field,
                format!(
                    "break-glass is only for direct or emergency care, not {}",
                    purpose.as_str()
                ),
            ));
        }
        if !actor.may_break_glass || actor.organisation.is_none() {
            return Err(Error::permission_denied(
                "break-glass is only for staff whose role allows it (the break_glass capability)",
            ));
        }
        Ok(())
    }
}

/// An exemption from the National Data Opt-out, claimed by the caller. It
/// lifts the opt-out and nothing more: the use still needs a lawful basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exemption {
    /// The law requires the use; `basis` says which (e.g. a court order).
    LegalRequirement { basis: String },
    /// Only anonymised data leaves.
    AnonymisedData,
}

impl Exemption {
    fn describe(&self) -> String {
        match self {
            Exemption::LegalRequirement { basis } => format!("a legal requirement ({basis})"),
            Exemption::AnonymisedData => "the data is anonymised".into(),
        }
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
    pub exemptions: Vec<Exemption>,
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
    RelationshipScope,
    NationalOptOut,
    OptOutExemption,
    DirectiveOutranked,
    BreakGlass,
    BreakGlassGrant,
    BreakGlassRefused,
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
            ReasonCode::RelationshipScope => "RELATIONSHIP_SCOPE",
            ReasonCode::NationalOptOut => "NATIONAL_OPT_OUT",
            ReasonCode::OptOutExemption => "OPT_OUT_EXEMPTION",
            ReasonCode::DirectiveOutranked => "DIRECTIVE_OUTRANKED",
            ReasonCode::BreakGlass => "BREAK_GLASS",
            ReasonCode::BreakGlassGrant => "BREAK_GLASS_GRANT",
            ReasonCode::BreakGlassRefused => "BREAK_GLASS_REFUSED",
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

impl Reason {
    fn new(code: ReasonCode, message: impl Into<String>, evidence: Option<&str>) -> Self {
        Reason {
            code,
            message: message.into(),
            evidence_id: evidence.map(str::to_owned),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObligationCode {
    Audit,
    /// Flag the access as break-glass in the audit trail (the patient's
    /// access report shows it).
    BreakGlass,
    /// Tell the organisation's privacy officer: audit's
    /// ListBreakGlassAccesses lists the flagged access for them.
    NotifyPrivacyOfficer,
}

impl ObligationCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ObligationCode::Audit => "AUDIT",
            ObligationCode::BreakGlass => "BREAK_GLASS",
            ObligationCode::NotifyPrivacyOfficer => "NOTIFY_PRIVACY_OFFICER",
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
    /// A break-glass grant to record before acting on this PERMIT: for the
    /// actor, for this period.
    pub new_grant: Option<Period>,
}

impl Decision {
    fn deny(reasons: Vec<Reason>) -> Self {
        Decision {
            outcome: Outcome::Deny,
            reasons,
            obligations: vec![],
            new_grant: None,
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
            new_grant: None,
        }
    }

    fn flagged(mut self, organisation: &OdsCode, notify: bool) -> Self {
        self.obligations.push(Obligation {
            code: ObligationCode::BreakGlass,
            message: "flag this access as break-glass in the audit trail".into(),
        });
        if notify {
            self.obligations.push(Obligation {
                code: ObligationCode::NotifyPrivacyOfficer,
                message: format!(
                    "organisation {organisation}'s privacy officer must be told: the flagged \
                     access is listed for them by audit's ListBreakGlassAccesses"
                ),
            });
        }
        self
    }

    fn also(mut self, reasons: Vec<Reason>) -> Self {
        self.reasons.extend(reasons);
        self
    }
}

/// What the patient's directives say about a request.
enum Verdict<'a> {
    None,
    /// The deciding DENYs.
    Deny(Vec<&'a Directive>),
    /// The deciding PERMIT, and the less specific DENYs it outranks.
    Permit(&'a Directive, Vec<&'a Directive>),
}

/// Decides `request` at `now` from the patient's care relationships and
/// directives (entries for other patients are ignored).
pub fn evaluate(
    request: &EvaluationRequest,
    relationships: &[CareRelationship],
    directives: &[Directive],
    rules: &Rules,
    now: DateTime<Utc>,
) -> Decision {
    let decision = decide(request, relationships, directives, rules, now);
    match &request.break_glass {
        Some(asked) if decision.outcome == Outcome::Deny => {
            break_glass(request, asked, decision, relationships, rules, now)
        }
        _ => decision,
    }
}

fn decide(
    request: &EvaluationRequest,
    relationships: &[CareRelationship],
    directives: &[Directive],
    rules: &Rules,
    now: DateTime<Utc>,
) -> Decision {
    // 0. Patient access is the patient's own, and only theirs.
    let is_the_patient = request.actor.patient.as_ref() == Some(&request.patient_id);
    if request.purpose == Purpose::PatientAccess || request.actor.patient.is_some() {
        return if is_the_patient && request.purpose == Purpose::PatientAccess {
            Decision::permit(Reason::new(
                ReasonCode::PatientOwnRecord,
                "the patient is reading their own record",
                None,
            ))
        } else {
            Decision::deny(vec![Reason::new(
                ReasonCode::NotThePatient,
                "patient access is only for the patient themselves, and a patient acts only for \
                 patient access to their own record",
                None,
            )])
        };
    }

    let applicable: Vec<&Directive> = directives
        .iter()
        .filter(|d| {
            d.patient_id == request.patient_id
                && d.is_active(now)
                && d.applies_to(request.purpose, &request.actor, request.category)
        })
        .collect();
    let (opt_outs, own): (Vec<&Directive>, Vec<&Directive>) = applicable
        .into_iter()
        .partition(|d| d.kind == DirectiveKind::NationalOptOut);
    let verdict = verdict(&own);

    // 1. The National Data Opt-out, unless an exemption lifts it.
    let mut exempted = vec![];
    if let Some(opt_out) = opt_outs.first() {
        let organisation = request.actor.organisation.as_ref();
        let specific_consent = own.iter().find(|d| {
            d.effect == Effect::Permit
                && d.organisation.is_some()
                && d.organisation.as_ref() == organisation
                && d.purposes.contains(&request.purpose)
        });
        let lifted_by = match (request.exemptions.first(), specific_consent) {
            (Some(claimed), _) => Some(claimed.describe()),
            (None, Some(_)) => Some(format!(
                "the patient's explicit consent to {} by organisation {}",
                request.purpose.as_str(),
                organisation.map(OdsCode::as_str).unwrap_or_default()
            )),
            (None, None) => None,
        };
        match lifted_by {
            Some(why) => exempted.push(Reason::new(
                ReasonCode::OptOutExemption,
                format!("the patient's National Data Opt-out does not apply: {why}"),
                Some(&opt_out.id),
            )),
            None => {
                return Decision::deny(vec![Reason::new(
                    ReasonCode::NationalOptOut,
                    format!(
                        "the patient has registered a National Data Opt-out, which covers {}",
                        request.purpose.as_str()
                    ),
                    Some(&opt_out.id),
                )]);
            }
        }
    }

    // 2. The patient's most specific directives.
    let (permit, outranked) = match verdict {
        Verdict::Deny(denials) => {
            return Decision::deny(
                denials
                    .into_iter()
                    .map(|d| {
                        Reason::new(
                            ReasonCode::PatientDirectiveDeny,
                            "the patient has a directive refusing this use of their record",
                            Some(&d.id),
                        )
                    })
                    .collect(),
            );
        }
        Verdict::Permit(permit, outranked) => (Some(permit), outranked),
        Verdict::None => (None, vec![]),
    };
    let outranked: Vec<Reason> = permit
        .map(|p| {
            outranked
                .iter()
                .map(|d| {
                    Reason::new(
                        ReasonCode::DirectiveOutranked,
                        format!(
                            "the patient's more specific directive {} permits what this one \
                             refuses",
                            p.id
                        ),
                        Some(&d.id),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let context = |decision: Decision| decision.also(outranked.clone()).also(exempted.clone());

    let Some(organisation) = &request.actor.organisation else {
        return Decision::deny(vec![Reason::new(
            ReasonCode::NoCareRelationship,
            "the actor acts for no organisation",
            None,
        )]);
    };
    if request.purpose.rests_on_relationship() {
        return context(by_relationship(
            request,
            organisation,
            relationships,
            permit,
            rules,
            now,
        ));
    }

    // 4. Beyond care, only the patient's explicit consent.
    context(match permit {
        Some(d) => Decision::permit(Reason::new(
            ReasonCode::PatientDirectivePermit,
            format!(
                "the patient has given explicit consent for {}",
                request.purpose.as_str()
            ),
            Some(&d.id),
        )),
        None => Decision::deny(vec![Reason::new(
            ReasonCode::NoLawfulBasis,
            format!(
                "no rule permits purpose {}: it needs the patient's explicit consent",
                request.purpose.as_str()
            ),
            None,
        )]),
    })
}

/// Among `directives` (all applying), the most specific decide; at equal
/// specificity DENY beats PERMIT.
fn verdict<'a>(directives: &[&'a Directive]) -> Verdict<'a> {
    let Some(top) = directives.iter().map(|d| d.specificity()).max() else {
        return Verdict::None;
    };
    let deciding = directives
        .iter()
        .copied()
        .filter(|d| d.specificity() == top);
    let denials: Vec<&Directive> = deciding
        .clone()
        .filter(|d| d.effect == Effect::Deny)
        .collect();
    if !denials.is_empty() {
        return Verdict::Deny(denials);
    }
    match deciding.into_iter().next() {
        Some(permit) => Verdict::Permit(
            permit,
            directives
                .iter()
                .copied()
                .filter(|d| d.effect == Effect::Deny)
                .collect(),
        ),
        None => Verdict::None,
    }
}

/// Rule 3: direct care, emergency care and safeguarding rest on a legitimate
/// relationship whose kind covers the category (configuration), or on the
/// patient's explicit permission for what it does not cover. When several
/// relationships hold, cite the one that began most recently.
fn by_relationship(
    request: &EvaluationRequest,
    organisation: &OdsCode,
    relationships: &[CareRelationship],
    permit: Option<&Directive>,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Decision {
    let latest = |a: &&CareRelationship, b: &&CareRelationship| {
        (a.period.start, &a.id).cmp(&(b.period.start, &b.id))
    };
    let (grants, current): (Vec<&CareRelationship>, Vec<&CareRelationship>) = relationships
        .iter()
        .filter(|r| {
            r.patient_id == request.patient_id && r.belongs_to(&request.actor) && r.is_current(now)
        })
        .partition(|r| r.kind == CareRelationshipKind::BreakGlass);
    if let Some(r) = current
        .iter()
        .copied()
        .filter(|r| rules.scopes.covers(r.kind, request.category))
        .max_by(latest)
    {
        return Decision::permit(Reason::new(
            ReasonCode::CareRelationship,
            format!(
                "organisation {organisation} has a current {} relationship with this patient",
                r.kind.describe()
            ),
            Some(&r.id),
        ));
    }
    let emergency = matches!(
        request.purpose,
        Purpose::DirectCare | Purpose::EmergencyCare
    );
    if let Some(grant) = grants.iter().copied().max_by(latest).filter(|_| emergency) {
        return Decision::permit(Reason::new(
            ReasonCode::BreakGlassGrant,
            "this staff member used break-glass for this patient and the grant has not lapsed",
            Some(&grant.id),
        ))
        .flagged(organisation, false);
    }
    let Some(r) = current.iter().copied().max_by(latest) else {
        return Decision::deny(vec![Reason::new(
            ReasonCode::NoCareRelationship,
            format!(
                "organisation {organisation} has no current care relationship with this patient"
            ),
            None,
        )]);
    };
    match permit {
        Some(d) => Decision::permit(Reason::new(
            ReasonCode::PatientDirectivePermit,
            format!(
                "the patient has permitted this beyond what a {} relationship covers",
                r.kind.describe()
            ),
            Some(&d.id),
        )),
        None => Decision::deny(vec![Reason::new(
            ReasonCode::RelationshipScope,
            format!(
                "a {} relationship does not cover {} records, and the patient has not permitted it",
                r.kind.describe(),
                request.category.as_str()
            ),
            Some(&r.id),
        )]),
    }
}

/// Rule 5: break-glass turns `denied` into a PERMIT with a new grant, unless the
/// patient objected (and configuration keeps objections) or the actor may
/// not use it here.
fn break_glass(
    request: &EvaluationRequest,
    asked: &BreakGlass,
    denied: Decision,
    relationships: &[CareRelationship],
    rules: &Rules,
    now: DateTime<Utc>,
) -> Decision {
    let refuse = |why: &str| {
        let mut denied = denied.clone();
        denied
            .reasons
            .push(Reason::new(ReasonCode::BreakGlassRefused, why, None));
        denied
    };
    let Some(organisation) = &request.actor.organisation else {
        return refuse("break-glass is only for staff acting for an organisation");
    };
    if BreakGlass::check("break_glass", request.purpose, &request.actor).is_err() {
        return refuse(
            "break-glass is only for direct or emergency care, by staff whose role allows it",
        );
    }
    let objected = denied.reasons.iter().any(|r| {
        matches!(
            r.code,
            ReasonCode::PatientDirectiveDeny | ReasonCode::NotThePatient
        )
    });
    if objected && !rules.break_glass.overrides_patient_deny {
        return refuse("break-glass does not override the patient's objection");
    }
    // An earlier grant that still runs is used again rather than renewed.
    let running = relationships.iter().find(|r| {
        r.kind == CareRelationshipKind::BreakGlass
            && r.patient_id == request.patient_id
            && r.belongs_to(&request.actor)
            && r.is_current(now)
    });
    let mut decision = Decision::permit(Reason::new(
        ReasonCode::BreakGlass,
        format!(
            "break-glass by a member of organisation {organisation}: {}",
            asked.reason
        ),
        running.map(|r| r.id.as_str()),
    ))
    .flagged(organisation, running.is_none());
    if running.is_none() {
        decision.new_grant = Some(Period {
            start: now,
            end: Some(now + rules.break_glass.grant_for),
        });
    }
    decision.also(denied.reasons)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::domain::{DirectiveSource, Provenance, RelationshipScopes};

    /// The decision under the default relationship scopes.
    fn evaluate(
        request: &EvaluationRequest,
        relationships: &[CareRelationship],
        directives: &[Directive],
        now: DateTime<Utc>,
    ) -> Decision {
        super::evaluate(request, relationships, directives, &Rules::default(), now)
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
                may_break_glass: true,
            },
            purpose,
            category: RecordCategory::General,
            break_glass: None,
            exemptions: vec![],
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
            staff_member: None,
            team: None,
            reason: None,
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
            kind: DirectiveKind::Patient,
            effect,
            purposes: vec![],
            organisation: None,
            staff_member: None,
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
            may_break_glass: false,
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
            super::evaluate(
                &asked,
                std::slice::from_ref(&team),
                &[],
                &Rules::with_scopes(widened),
                now()
            )
            .outcome,
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
            "no rule permits purpose research: it needs the patient's explicit consent"
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

    fn break_glass_asked(purpose: Purpose) -> EvaluationRequest {
        let mut asked = request(purpose);
        asked.break_glass = Some(BreakGlass::parse("r", "unconscious in A&E").expect("valid"));
        asked
    }

    #[test]
    fn break_glass_permits_with_a_time_boxed_grant_flagged_and_notified() {
        for purpose in [Purpose::DirectCare, Purpose::EmergencyCare] {
            let d = evaluate(&break_glass_asked(purpose), &[], &[], now());
            assert_eq!(d.outcome, Outcome::Permit, "{purpose:?}");
            assert_eq!(codes(&d), ["BREAK_GLASS", "NO_CARE_RELATIONSHIP"]);
            assert!(d.reasons[0].message.contains("unconscious in A&E"));
            let obligations: Vec<_> = d.obligations.iter().map(|o| o.code.as_str()).collect();
            assert_eq!(
                obligations,
                ["AUDIT", "BREAK_GLASS", "NOTIFY_PRIVACY_OFFICER"]
            );
            let grant = d.new_grant.expect("a new grant");
            assert_eq!(grant.start, now());
            assert_eq!(grant.end, Some(now() + Duration::minutes(60)));
        }
        // Beyond a relationship's scope too.
        let mut home = relationship("r1", "A81001", open_since(30));
        home.kind = CareRelationshipKind::CareHomePlacement;
        let mut asked = break_glass_asked(Purpose::DirectCare);
        asked.category = RecordCategory::MentalHealth;
        let d = evaluate(&asked, &[home], &[], now());
        assert_eq!(codes(&d), ["BREAK_GLASS", "RELATIONSHIP_SCOPE"]);
        // A permit stands on its own rule; break-glass adds nothing.
        let d = evaluate(
            &break_glass_asked(Purpose::DirectCare),
            &[relationship("r1", "A81001", open_since(1))],
            &[],
            now(),
        );
        assert_eq!(codes(&d), ["CARE_RELATIONSHIP"]);
        assert_eq!(d.new_grant, None);
        assert_eq!(d.obligations.len(), 1);
    }

    fn grant(id: &str, principal: &str, period: Period) -> CareRelationship {
        let mut grant = relationship(id, "A81001", period);
        grant.kind = CareRelationshipKind::BreakGlass;
        grant.staff_member = Some(principal.into());
        grant.reason = Some("unconscious in A&E".into());
        grant
    }

    #[test]
    fn a_break_glass_grant_serves_its_staff_member_alone_until_it_lapses() {
        let running = grant(
            "g1",
            "staff-1",
            Period {
                start: now() - Duration::minutes(10),
                end: Some(now() + Duration::minutes(50)),
            },
        );
        let mut asked = request(Purpose::EmergencyCare);
        asked.category = RecordCategory::SexualHealth;
        let d = evaluate(&asked, std::slice::from_ref(&running), &[], now());
        assert_eq!(codes(&d), ["BREAK_GLASS_GRANT"]);
        assert_eq!(d.reasons[0].evidence_id.as_deref(), Some("g1"));
        let obligations: Vec<_> = d.obligations.iter().map(|o| o.code.as_str()).collect();
        assert_eq!(obligations, ["AUDIT", "BREAK_GLASS"]);
        // Asking again reuses it: no second grant, no second notice.
        let d = evaluate(
            &break_glass_asked(Purpose::DirectCare),
            std::slice::from_ref(&running),
            &[],
            now(),
        );
        assert_eq!(d.new_grant, None);
        // Not for a colleague, not for safeguarding, not once lapsed.
        let mut colleague = request(Purpose::DirectCare);
        colleague.actor.principal_id = "staff-2".into();
        assert_eq!(
            evaluate(&colleague, std::slice::from_ref(&running), &[], now()).outcome,
            Outcome::Deny
        );
        assert_eq!(
            evaluate(
                &request(Purpose::Safeguarding),
                std::slice::from_ref(&running),
                &[],
                now()
            )
            .outcome,
            Outcome::Deny
        );
        let later = now() + Duration::minutes(50);
        assert_eq!(
            codes(&evaluate(
                &request(Purpose::DirectCare),
                &[running],
                &[],
                later
            )),
            ["NO_CARE_RELATIONSHIP"]
        );
    }

    #[test]
    fn break_glass_never_overrides_a_patient_objection_unless_configured() {
        let objection = directive("d1", Effect::Deny);
        let asked = break_glass_asked(Purpose::EmergencyCare);
        let d = evaluate(&asked, &[], std::slice::from_ref(&objection), now());
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(codes(&d), ["PATIENT_DIRECTIVE_DENY", "BREAK_GLASS_REFUSED"]);
        assert_eq!(d.new_grant, None);
        let mut rules = Rules::default();
        rules.break_glass.overrides_patient_deny = true;
        rules.break_glass.grant_for = Duration::minutes(15);
        let d = super::evaluate(&asked, &[], &[objection], &rules, now());
        assert_eq!(d.outcome, Outcome::Permit);
        assert_eq!(codes(&d), ["BREAK_GLASS", "PATIENT_DIRECTIVE_DENY"]);
        assert_eq!(
            d.new_grant.and_then(|g| g.end),
            Some(now() + Duration::minutes(15))
        );
    }

    #[test]
    fn break_glass_is_only_for_direct_or_emergency_care_by_roles_allowed_it() {
        for purpose in [
            Purpose::Research,
            Purpose::Planning,
            Purpose::Safeguarding,
            Purpose::Commissioning,
        ] {
            let err = BreakGlass::check("break_glass", purpose, &request(purpose).actor)
                .expect_err("not for this purpose");
            assert_eq!(err.field.as_deref(), Some("break_glass"), "{purpose:?}");
            // Asked anyway, the decision stays a denial and says why.
            let d = evaluate(&break_glass_asked(purpose), &[], &[], now());
            assert_eq!(d.outcome, Outcome::Deny, "{purpose:?}");
            assert_eq!(
                d.reasons.last().map(|r| r.code),
                Some(ReasonCode::BreakGlassRefused)
            );
        }
        let mut asked = break_glass_asked(Purpose::DirectCare);
        asked.actor.may_break_glass = false;
        let err = BreakGlass::check("break_glass", asked.purpose, &asked.actor)
            .expect_err("role not allowed");
        assert_eq!(err.code, sharedcare_kit::error::Code::PermissionDenied);
        assert_eq!(evaluate(&asked, &[], &[], now()).outcome, Outcome::Deny);
    }

    fn opt_out(id: &str) -> Directive {
        let mut d = directive(id, Effect::Deny);
        d.kind = DirectiveKind::NationalOptOut;
        d.purposes = DirectiveKind::OPT_OUT_PURPOSES.to_vec();
        d.provenance.source = DirectiveSource::NationalOptOutService;
        d
    }

    fn consent_to(id: &str, purpose: Purpose, organisation: Option<&str>) -> Directive {
        let mut d = directive(id, Effect::Permit);
        d.purposes = vec![purpose];
        d.organisation = organisation.map(ods);
        d
    }

    #[test]
    fn the_national_opt_out_refuses_research_planning_and_commissioning_never_care() {
        let rels = [relationship("r1", "A81001", open_since(30))];
        for purpose in DirectiveKind::OPT_OUT_PURPOSES {
            // Even where the patient consented to the purpose in general.
            let general = consent_to("p1", purpose, None);
            let d = evaluate(&request(purpose), &rels, &[opt_out("n1"), general], now());
            assert_eq!(d.outcome, Outcome::Deny, "{purpose:?}");
            assert_eq!(codes(&d), ["NATIONAL_OPT_OUT"]);
            assert_eq!(d.reasons[0].evidence_id.as_deref(), Some("n1"));
        }
        for purpose in [
            Purpose::DirectCare,
            Purpose::EmergencyCare,
            Purpose::Safeguarding,
        ] {
            assert_eq!(
                evaluate(&request(purpose), &rels, &[opt_out("n1")], now()),
                evaluate(&request(purpose), &rels, &[], now()),
                "{purpose:?}"
            );
        }
        // It persists: no end, whatever happens to the patient, until the
        // opt-out itself is withdrawn.
        let years_later = now() + Duration::days(365 * 30);
        assert_eq!(
            codes(&evaluate(
                &request(Purpose::Research),
                &[],
                &[opt_out("n1")],
                years_later
            )),
            ["NATIONAL_OPT_OUT"]
        );
        let mut withdrawn = opt_out("n1");
        withdrawn.revoked_at = Some(now() - Duration::minutes(1));
        let consent = consent_to("p1", Purpose::Research, None);
        assert_eq!(
            codes(&evaluate(
                &request(Purpose::Research),
                &[],
                &[withdrawn, consent],
                now()
            )),
            ["PATIENT_DIRECTIVE_PERMIT"]
        );
    }

    #[test]
    fn opt_out_exemptions_lift_it_and_are_named_but_are_no_lawful_basis() {
        let legal = Exemption::LegalRequirement {
            basis: "court order 2025/117".into(),
        };
        for exemption in [legal, Exemption::AnonymisedData] {
            let mut asked = request(Purpose::Planning);
            asked.exemptions = vec![exemption.clone()];
            // Lifted, but planning still needs consent.
            let d = evaluate(&asked, &[], &[opt_out("n1")], now());
            assert_eq!(codes(&d), ["NO_LAWFUL_BASIS", "OPT_OUT_EXEMPTION"]);
            assert!(d.reasons[1].message.contains(&exemption.describe()));
            assert_eq!(d.reasons[1].evidence_id.as_deref(), Some("n1"));
            let consent = consent_to("p1", Purpose::Planning, None);
            let d = evaluate(&asked, &[], &[opt_out("n1"), consent], now());
            assert_eq!(d.outcome, Outcome::Permit);
            assert_eq!(codes(&d), ["PATIENT_DIRECTIVE_PERMIT", "OPT_OUT_EXEMPTION"]);
        }
        // Explicit consent to this use by this organisation is an exemption
        // of its own; by another organisation, or to another use, it is not.
        let specific = consent_to("p1", Purpose::Research, Some("A81001"));
        let d = evaluate(
            &request(Purpose::Research),
            &[],
            &[opt_out("n1"), specific],
            now(),
        );
        assert_eq!(codes(&d), ["PATIENT_DIRECTIVE_PERMIT", "OPT_OUT_EXEMPTION"]);
        assert!(
            d.reasons[1]
                .message
                .contains("explicit consent to research by organisation A81001")
        );
        for other in [
            consent_to("p1", Purpose::Research, Some("RR8")),
            consent_to("p1", Purpose::Planning, Some("A81001")),
        ] {
            let d = evaluate(
                &request(Purpose::Research),
                &[],
                &[opt_out("n1"), other],
                now(),
            );
            assert_eq!(codes(&d), ["NATIONAL_OPT_OUT"]);
        }
    }

    #[test]
    fn a_more_specific_directive_beats_a_less_specific_one() {
        let rels = [relationship("r1", "A81001", open_since(30))];
        let mut asked = request(Purpose::DirectCare);
        asked.category = RecordCategory::SexualHealth;
        // "Nobody sees my sexual health records — except this clinic."
        let mut nobody = directive("d1", Effect::Deny);
        nobody.categories = vec![RecordCategory::SexualHealth];
        let mut but_this_clinic = directive("p1", Effect::Permit);
        but_this_clinic.categories = vec![RecordCategory::SexualHealth];
        but_this_clinic.organisation = Some(ods("A81001"));
        let d = evaluate(
            &asked,
            &rels,
            &[nobody.clone(), but_this_clinic.clone()],
            now(),
        );
        assert_eq!(d.outcome, Outcome::Permit);
        assert_eq!(codes(&d), ["CARE_RELATIONSHIP", "DIRECTIVE_OUTRANKED"]);
        assert_eq!(d.reasons[1].evidence_id.as_deref(), Some("d1"));
        // Another clinic is still refused.
        let mut elsewhere = asked.clone();
        elsewhere.actor.organisation = Some(ods("RR8"));
        let other = relationship("r2", "RR8", open_since(3));
        assert_eq!(
            codes(&evaluate(
                &elsewhere,
                &[other],
                &[nobody.clone(), but_this_clinic],
                now()
            )),
            ["PATIENT_DIRECTIVE_DENY"]
        );
        // And the other way round: a named staff member refused within a
        // permitted organisation.
        let mut that_doctor = directive("d2", Effect::Deny);
        that_doctor.organisation = Some(ods("A81001"));
        that_doctor.staff_member = Some("staff-1".into());
        let mut this_practice = directive("p2", Effect::Permit);
        this_practice.organisation = Some(ods("A81001"));
        let d = evaluate(
            &request(Purpose::Research),
            &[],
            &[this_practice.clone(), that_doctor],
            now(),
        );
        assert_eq!(codes(&d), ["PATIENT_DIRECTIVE_DENY"]);
        let d = evaluate(&request(Purpose::Research), &[], &[this_practice], now());
        assert_eq!(d.outcome, Outcome::Permit);
    }

    #[test]
    fn a_relationship_or_directive_naming_a_staff_member_applies_to_them_alone() {
        let mut named = relationship("r1", "A81001", open_since(30));
        named.staff_member = Some("staff-1".into());
        let d = evaluate(
            &request(Purpose::DirectCare),
            std::slice::from_ref(&named),
            &[],
            now(),
        );
        assert_eq!(codes(&d), ["CARE_RELATIONSHIP"]);
        let mut colleague = request(Purpose::DirectCare);
        colleague.actor.principal_id = "staff-2".into();
        assert_eq!(
            codes(&evaluate(
                &colleague,
                std::slice::from_ref(&named),
                &[],
                now()
            )),
            ["NO_CARE_RELATIONSHIP"]
        );
        let mut deny = directive("d1", Effect::Deny);
        deny.staff_member = Some("staff-2".into());
        assert_eq!(
            evaluate(
                &colleague,
                &[relationship("r2", "A81001", open_since(3))],
                std::slice::from_ref(&deny),
                now()
            )
            .outcome,
            Outcome::Deny
        );
        assert_eq!(
            evaluate(&request(Purpose::DirectCare), &[named], &[deny], now()).outcome,
            Outcome::Permit
        );
    }

    #[test]
    fn the_consent_version_counts_every_change_and_only_grows() {
        let mut rel = relationship("r1", "A81001", open_since(30));
        let mut dir = directive("d1", Effect::Deny);
        assert_eq!(crate::domain::consent_version(&[], &[]), 0);
        assert_eq!(
            crate::domain::consent_version(std::slice::from_ref(&rel), std::slice::from_ref(&dir)),
            2
        );
        rel.ended_by = Some("admin".into());
        dir.revoked_at = Some(now());
        assert_eq!(crate::domain::consent_version(&[rel], &[dir]), 4);
    }

    #[test]
    fn break_glass_needs_a_reason() {
        let err = BreakGlass::parse("break_glass.reason", "  ").expect_err("empty");
        assert_eq!(err.field.as_deref(), Some("break_glass.reason"));
        assert!(BreakGlass::parse("break_glass.reason", &"x".repeat(501)).is_err());
    }
}
