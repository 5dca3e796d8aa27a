//! The gRPC edge of consent: decode → domain → encode. The only module that
//! knows request and response types.

use std::sync::Arc;

use chrono::Utc;
use sharedcare_kit::{
    Error,
    access::{Grant, Patients, grant},
    outbox::Outbox,
    peers::AccessEvent,
    proto_time::{from_proto, to_proto},
};
use sharedcare_proto::{
    audit::v1::{Action, Outcome as AuditOutcome},
    common::v1::{self as common, PrincipalKind},
    consent::v1::{self as pb, consent_service_server::ConsentService},
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        Actor, BreakGlass, CareRelationship, CareRelationshipKind, Decision, Directive,
        DirectiveKind, DirectiveSource, Effect, EvaluationRequest, Exemption, MAX_ID_CHARS,
        MAX_NOTE_CHARS, OdsCode, Outcome, PatientId, Period, Provenance, Purpose, RecordCategory,
        Rules, consent_version, evaluate, optional_text, required_id, to_micros,
    },
    store::ConsentStore,
};

pub struct ConsentGrpc {
    pub store: Arc<dyn ConsentStore>,
    /// What WatchChanges streams.
    pub changes: Arc<crate::changes::ChangeFeed>,
    /// Every change and read is audited through it (kit::outbox).
    pub outbox: Arc<Outbox>,
    pub directory: Arc<dyn crate::Directory>,
    /// What each relationship kind lets its organisation see; break-glass.
    pub rules: Arc<Rules>,
}

/// Most requests one BatchEvaluate takes.
const MAX_BATCH: usize = 100;

/// Signs list cursors. The lists are the patient's and the caller may read
/// all of them, so a cursor hides nothing; the MAC only refuses a cursor
/// altered or replayed against another request (kit::paging).
const LIST_CURSOR_KEY: [u8; 32] = *b"sharedcare.consent.list-cursors!";

/// What a consent change or read says in the audit trail.
struct Change<'a> {
    grant: &'a Grant,
    patient: &'a PatientId,
    action: Action,
    resource_type: &'static str,
    id: &'a str,
    reason: &'a str,
}

impl Change<'_> {
    fn event(&self, outcome: AuditOutcome) -> sharedcare_proto::audit::v1::AuditEvent {
        AccessEvent {
            principal: &self.grant.principal,
            patient_id: self.patient.as_str(),
            action: self.action,
            // Consent changes are made for the patient's care, or by the
            // patient for themselves.
            purpose: if self.grant.principal.kind == PrincipalKind::Patient {
                common::Purpose::PatientAccess
            } else {
                common::Purpose::DirectCare
            },
            resource_type: self.resource_type,
            record_id: self.id,
            source_service: crate::SERVICE_NAME,
            break_glass: None,
        }
        .event(outcome, self.reason, "")
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn kind_from_pb(field: &str, value: i32) -> Result<CareRelationshipKind, Error> {
    use pb::CareRelationshipKind as K;
    match K::try_from(value) {
        Ok(K::RegisteredGp) => Ok(CareRelationshipKind::RegisteredGp),
        Ok(K::HospitalEpisode) => Ok(CareRelationshipKind::HospitalEpisode),
        Ok(K::Referral) => Ok(CareRelationshipKind::Referral),
        Ok(K::CareHomePlacement) => Ok(CareRelationshipKind::CareHomePlacement),
        Ok(K::SocialCareTeam) => Ok(CareRelationshipKind::SocialCareTeam),
        Ok(K::CommunityCare) => Ok(CareRelationshipKind::CommunityCare),
        Ok(K::BreakGlass) => Err(Error::invalid(
            field,
            "a break-glass grant is made by Evaluate when break-glass is asked for, not recorded",
        )),
        Ok(K::Unspecified) => Err(Error::invalid(field, "is required")),
        Err(_) => Err(Error::invalid(field, format!("unknown value {value}"))),
    }
}

fn kind_to_pb(kind: CareRelationshipKind) -> pb::CareRelationshipKind {
    use pb::CareRelationshipKind as K;
    match kind {
        CareRelationshipKind::RegisteredGp => K::RegisteredGp,
        CareRelationshipKind::HospitalEpisode => K::HospitalEpisode,
        CareRelationshipKind::Referral => K::Referral,
        CareRelationshipKind::CareHomePlacement => K::CareHomePlacement,
        CareRelationshipKind::SocialCareTeam => K::SocialCareTeam,
        CareRelationshipKind::CommunityCare => K::CommunityCare,
        CareRelationshipKind::BreakGlass => K::BreakGlass,
    }
}

fn effect_from_pb(field: &str, value: i32) -> Result<Effect, Error> {
    match pb::Effect::try_from(value) {
        Ok(pb::Effect::Permit) => Ok(Effect::Permit),
        Ok(pb::Effect::Deny) => Ok(Effect::Deny),
        Ok(pb::Effect::Unspecified) => Err(Error::invalid(field, "is required: PERMIT or DENY")),
        Err(_) => Err(Error::invalid(field, format!("unknown value {value}"))),
    }
}

fn effect_to_pb(effect: Effect) -> pb::Effect {
    match effect {
        Effect::Permit => pb::Effect::Permit,
        Effect::Deny => pb::Effect::Deny,
    }
}

/// A purpose; UNSPECIFIED is refused with `unspecified` as the message.
fn purpose_from_pb(field: &str, value: i32, unspecified: &str) -> Result<Purpose, Error> {
    match common::Purpose::try_from(value) {
        Ok(common::Purpose::DirectCare) => Ok(Purpose::DirectCare),
        Ok(common::Purpose::Research) => Ok(Purpose::Research),
        Ok(common::Purpose::Planning) => Ok(Purpose::Planning),
        Ok(common::Purpose::PatientAccess) => Ok(Purpose::PatientAccess),
        Ok(common::Purpose::EmergencyCare) => Ok(Purpose::EmergencyCare),
        Ok(common::Purpose::Safeguarding) => Ok(Purpose::Safeguarding),
        Ok(common::Purpose::Commissioning) => Ok(Purpose::Commissioning),
        Ok(common::Purpose::Unspecified) => Err(Error::invalid(field, unspecified)),
        Err(_) => Err(Error::invalid(field, format!("unknown value {value}"))),
    }
}

fn purpose_to_pb(purpose: Purpose) -> common::Purpose {
    match purpose {
        Purpose::DirectCare => common::Purpose::DirectCare,
        Purpose::Research => common::Purpose::Research,
        Purpose::Planning => common::Purpose::Planning,
        Purpose::PatientAccess => common::Purpose::PatientAccess,
        Purpose::EmergencyCare => common::Purpose::EmergencyCare,
        Purpose::Safeguarding => common::Purpose::Safeguarding,
        Purpose::Commissioning => common::Purpose::Commissioning,
    }
}

/// A category; `None` for UNSPECIFIED, which each caller reads its own way.
fn category_from_pb(field: &str, value: i32) -> Result<Option<RecordCategory>, Error> {
    use common::RecordCategory as C;
    match C::try_from(value) {
        Ok(C::Unspecified) => Ok(None),
        Ok(C::General) => Ok(Some(RecordCategory::General)),
        Ok(C::SexualHealth) => Ok(Some(RecordCategory::SexualHealth)),
        Ok(C::MentalHealth) => Ok(Some(RecordCategory::MentalHealth)),
        Ok(C::Safeguarding) => Ok(Some(RecordCategory::Safeguarding)),
        Ok(C::SocialCare) => Ok(Some(RecordCategory::SocialCare)),
        Err(_) => Err(Error::invalid(field, format!("unknown value {value}"))),
    }
}

fn category_to_pb(category: RecordCategory) -> common::RecordCategory {
    use common::RecordCategory as C;
    match category {
        RecordCategory::General => C::General,
        RecordCategory::SexualHealth => C::SexualHealth,
        RecordCategory::MentalHealth => C::MentalHealth,
        RecordCategory::Safeguarding => C::Safeguarding,
        RecordCategory::SocialCare => C::SocialCare,
    }
}

/// Each value once, in the order given.
fn distinct<T: PartialEq>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn relationship_to_pb(r: CareRelationship) -> pb::CareRelationship {
    pb::CareRelationship {
        version: r.version(),
        staff_principal_id: r.staff_member.unwrap_or_default(),
        team: r.team.unwrap_or_default(),
        reason: r.reason.unwrap_or_default(),
        relationship_id: r.id,
        patient_id: r.patient_id.as_str().to_owned(),
        organisation_ods_code: r.organisation.as_str().to_owned(),
        kind: kind_to_pb(r.kind) as i32,
        start_time: Some(to_proto(r.period.start)),
        end_time: r.period.end.map(to_proto),
        recorded_by: r.recorded_by,
        recorded_by_ods_code: r.recorded_by_organisation.as_str().to_owned(),
        ended_by: r.ended_by.unwrap_or_default(),
    }
}

fn directive_to_pb(d: Directive) -> pb::Directive {
    pb::Directive {
        version: d.version(),
        kind: match d.kind {
            DirectiveKind::Patient => pb::DirectiveKind::Patient,
            DirectiveKind::NationalOptOut => pb::DirectiveKind::NationalOptOut,
        } as i32,
        staff_principal_id: d.staff_member.unwrap_or_default(),
        directive_id: d.id,
        patient_id: d.patient_id.as_str().to_owned(),
        effect: effect_to_pb(d.effect) as i32,
        purposes: d
            .purposes
            .into_iter()
            .map(|p| purpose_to_pb(p) as i32)
            .collect(),
        organisation_ods_code: d
            .organisation
            .map(|o| o.as_str().to_owned())
            .unwrap_or_default(),
        staff_role: d.staff_role.unwrap_or_default(),
        categories: d
            .categories
            .into_iter()
            .map(|c| category_to_pb(c) as i32)
            .collect(),
        start_time: Some(to_proto(d.period.start)),
        end_time: d.period.end.map(to_proto),
        note: d.note,
        create_time: Some(to_proto(d.created_at)),
        revoke_time: d.revoked_at.map(to_proto),
        recorded_by: d.provenance.recorded_by,
        recorded_by_ods_code: d
            .provenance
            .organisation
            .map(|o| o.as_str().to_owned())
            .unwrap_or_default(),
        source: match d.provenance.source {
            DirectiveSource::Patient => pb::DirectiveSource::Patient,
            DirectiveSource::Clinician => pb::DirectiveSource::Clinician,
            DirectiveSource::NationalOptOutService => pb::DirectiveSource::NationalOptOutService,
        } as i32,
        revoked_by: d.revoked_by.unwrap_or_default(),
    }
}

fn directive_from_pb(
    d: pb::Directive,
    provenance: Provenance,
    now: chrono::DateTime<Utc>,
) -> Result<Directive, Error> {
    let patient_id = PatientId::parse("directive.patient_id", &d.patient_id)?;
    match pb::DirectiveKind::try_from(d.kind) {
        Ok(pb::DirectiveKind::Unspecified | pb::DirectiveKind::Patient) => {}
        Ok(pb::DirectiveKind::NationalOptOut) => {
            return Err(Error::invalid(
                "directive.kind",
                "the National Data Opt-out is set with SetNationalOptOut",
            ));
        }
        Err(_) => {
            return Err(Error::invalid(
                "directive.kind",
                format!("unknown value {}", d.kind),
            ));
        }
    }
    let effect = effect_from_pb("directive.effect", d.effect)?;
    let purposes = d
        .purposes
        .iter()
        .map(|&p| {
            purpose_from_pb(
                "directive.purposes",
                p,
                "must not contain PURPOSE_UNSPECIFIED (leave the list empty for any purpose)",
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let organisation =
        OdsCode::parse_optional("directive.organisation_ods_code", &d.organisation_ods_code)?;
    let staff_role = optional_text("directive.staff_role", &d.staff_role, MAX_ID_CHARS)?;
    let staff_member = optional_text(
        "directive.staff_principal_id",
        &d.staff_principal_id,
        MAX_ID_CHARS,
    )?;
    let categories = d
        .categories
        .iter()
        .map(|&c| {
            category_from_pb("directive.categories", c)?.ok_or_else(|| {
                Error::invalid(
                    "directive.categories",
                    "must not contain RECORD_CATEGORY_UNSPECIFIED (leave the list empty for any \
                     category)",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let period = Period::parse(
        "directive.start_time",
        "directive.end_time",
        from_proto("directive.start_time", d.start_time.as_ref())?,
        from_proto("directive.end_time", d.end_time.as_ref())?,
        now,
    )?;
    let note = optional_text("directive.note", &d.note, MAX_NOTE_CHARS)?.unwrap_or_default();
    Ok(Directive {
        id: new_id(),
        patient_id,
        kind: DirectiveKind::Patient,
        effect,
        purposes: distinct(purposes),
        organisation,
        staff_member,
        staff_role,
        categories: distinct(categories),
        period,
        note,
        created_at: to_micros(now),
        revoked_at: None,
        provenance,
        revoked_by: None,
    })
}

/// What Evaluate was asked: one request per category, in the order asked
/// (the requests differ only in category).
struct Asked {
    requests: Vec<EvaluationRequest>,
    /// As the caller sent it, for the audit of a break-glass grant.
    actor: common::Actor,
}

fn evaluation_from_pb(req: pb::EvaluateRequest) -> Result<Asked, Error> {
    let patient_id = PatientId::parse("patient_id", &req.patient_id)?;
    let pb_actor = req
        .actor
        .ok_or_else(|| Error::invalid("actor", "is required"))?;
    let is_patient = pb_actor.kind == PrincipalKind::Patient as i32;
    let actor = Actor {
        principal_id: optional_text("actor.principal_id", &pb_actor.principal_id, MAX_ID_CHARS)?
            .unwrap_or_default(),
        // A patient acts for no organisation; everyone else for exactly one.
        organisation: if is_patient {
            OdsCode::parse_optional(
                "actor.organisation_ods_code",
                &pb_actor.organisation_ods_code,
            )?
        } else {
            Some(OdsCode::parse(
                "actor.organisation_ods_code",
                &pb_actor.organisation_ods_code,
            )?)
        },
        role: optional_text("actor.role", &pb_actor.role, MAX_ID_CHARS)?.unwrap_or_default(),
        patient: if is_patient {
            Some(PatientId::parse("actor.patient_id", &pb_actor.patient_id)?)
        } else {
            None
        },
        may_break_glass: !is_patient
            && pb_actor
                .capabilities
                .iter()
                .any(|c| c == sharedcare_kit::access::Capability::BreakGlass.as_str()),
    };
    let purpose = purpose_from_pb("purpose", req.purpose, "is required")?;
    let single = category_from_pb("category", req.category)?;
    let mut categories = req
        .categories
        .iter()
        .map(|&c| {
            category_from_pb("categories", c)?.ok_or_else(|| {
                Error::invalid("categories", "must not contain RECORD_CATEGORY_UNSPECIFIED")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    match single {
        Some(c) if !categories.is_empty() && !categories.contains(&c) => {
            return Err(Error::invalid(
                "category",
                "must be unset or one of categories when categories are given",
            ));
        }
        Some(c) if categories.is_empty() => categories.push(c),
        _ if categories.is_empty() => categories.push(RecordCategory::General),
        _ => {}
    }
    let categories = distinct(categories);
    let break_glass = req
        .break_glass
        .map(|b| BreakGlass::parse("break_glass.reason", &b.reason))
        .transpose()?;
    if break_glass.is_some() {
        BreakGlass::check("break_glass", purpose, &actor)?;
    }
    let legal_basis = optional_text("legal_basis", &req.legal_basis, MAX_NOTE_CHARS)?;
    let mut exemptions = vec![];
    for &e in &req.opt_out_exemptions {
        let exemption = match pb::OptOutExemption::try_from(e) {
            Ok(pb::OptOutExemption::LegalRequirement) => Exemption::LegalRequirement {
                basis: legal_basis.clone().ok_or_else(|| {
                    Error::invalid(
                        "legal_basis",
                        "is required with OPT_OUT_EXEMPTION_LEGAL_REQUIREMENT: say which law",
                    )
                })?,
            },
            Ok(pb::OptOutExemption::AnonymisedData) => Exemption::AnonymisedData,
            Ok(pb::OptOutExemption::Unspecified) => {
                return Err(Error::invalid(
                    "opt_out_exemptions",
                    "must not contain OPT_OUT_EXEMPTION_UNSPECIFIED",
                ));
            }
            Err(_) => {
                return Err(Error::invalid(
                    "opt_out_exemptions",
                    format!("unknown value {e}"),
                ));
            }
        };
        if !exemptions.contains(&exemption) {
            exemptions.push(exemption);
        }
    }
    if !exemptions.is_empty() && !DirectiveKind::OPT_OUT_PURPOSES.contains(&purpose) {
        return Err(Error::invalid(
            "opt_out_exemptions",
            format!(
                "the National Data Opt-out does not cover {}, so there is nothing to be exempt from",
                purpose.as_str()
            ),
        ));
    }
    let base = EvaluationRequest {
        patient_id,
        actor,
        purpose,
        category: RecordCategory::General,
        break_glass,
        exemptions,
    };
    Ok(Asked {
        requests: categories
            .into_iter()
            .map(|category| EvaluationRequest {
                category,
                ..base.clone()
            })
            .collect(),
        actor: pb_actor,
    })
}

/// `err` about request `index` of a batch: its field named within the batch.
fn in_batch(index: usize, err: Error) -> Error {
    let prefix = format!("requests[{index}]");
    match &err.field {
        Some(field) => {
            let message = err
                .message
                .strip_prefix(&format!("{field}: "))
                .unwrap_or(&err.message);
            Error::invalid(format!("{prefix}.{field}"), message)
        }
        None => Error::new(err.code, format!("{prefix}: {}", err.message)),
    }
}

fn reasons_to_pb(decision: &Decision) -> Vec<pb::Reason> {
    decision
        .reasons
        .iter()
        .map(|r| pb::Reason {
            code: r.code.as_str().to_owned(),
            message: r.message.clone(),
            evidence_id: r.evidence_id.clone().unwrap_or_default(),
        })
        .collect()
}

fn obligations_to_pb(decision: &Decision) -> Vec<pb::Obligation> {
    decision
        .obligations
        .iter()
        .map(|o| pb::Obligation {
            code: o.code.as_str().to_owned(),
            message: o.message.clone(),
        })
        .collect()
}

fn outcome_to_pb(outcome: Outcome) -> pb::Decision {
    match outcome {
        Outcome::Permit => pb::Decision::Permit,
        Outcome::Deny => pb::Decision::Deny,
    }
}

/// The answer for every category: PERMIT only if each is permitted; the
/// reasons and obligations of all (obligations once each).
fn decisions_to_pb(
    decided: Vec<(RecordCategory, Decision)>,
    decision_id: String,
    at: chrono::DateTime<Utc>,
    valid_until: Option<chrono::DateTime<Utc>>,
    version: u64,
) -> pb::EvaluateResponse {
    let permitted = decided.iter().all(|(_, d)| d.outcome == Outcome::Permit);
    let mut reasons = vec![];
    let mut obligations: Vec<pb::Obligation> = vec![];
    for (_, d) in &decided {
        reasons.extend(reasons_to_pb(d));
        for o in obligations_to_pb(d) {
            if !obligations.iter().any(|seen| seen.code == o.code) {
                obligations.push(o);
            }
        }
    }
    pb::EvaluateResponse {
        decision: outcome_to_pb(if permitted {
            Outcome::Permit
        } else {
            Outcome::Deny
        }) as i32,
        reasons,
        obligations: if permitted { obligations } else { vec![] },
        decision_id,
        evaluate_time: Some(to_proto(at)),
        valid_until: valid_until.map(to_proto),
        results: decided
            .iter()
            .map(|(category, d)| pb::CategoryDecision {
                category: category_to_pb(*category) as i32,
                decision: outcome_to_pb(d.outcome) as i32,
                reasons: reasons_to_pb(d),
                obligations: obligations_to_pb(d),
            })
            .collect(),
        consent_version: version,
    }
}

impl ConsentGrpc {
    /// The request's grant, once the outbox admits an access: no change or
    /// read that could not be audited in time.
    fn admitted<T>(&self, request: &Request<T>) -> Result<Grant, Error> {
        let grant = grant(request)?;
        self.outbox.admit()?;
        Ok(grant)
    }

    /// Whether `organisation` has a current care relationship with the
    /// patient at `now`, under any of their ids (merges).
    async fn is_related(
        &self,
        patient: &PatientId,
        organisation: &OdsCode,
        now: chrono::DateTime<Utc>,
    ) -> Result<bool, Error> {
        for id in self.directory.family(patient).await? {
            if self
                .store
                .list_relationships(&id)
                .await?
                .iter()
                .any(|r| &r.organisation == organisation && r.is_current(now))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The patient column of the access table: a patient names only their
    /// own patient; a `Related` caller's organisation must have a current
    /// care relationship with the patient. A refusal is audited (best
    /// effort: the answer is no either way).
    async fn check_patient(
        &self,
        grant: &Grant,
        patient: &PatientId,
        resource_type: &'static str,
        action: Action,
    ) -> Result<(), Error> {
        let refusal = match grant.patients {
            Patients::Own => grant.check_own(patient.as_str()).err(),
            Patients::Related => {
                let organisation = caller_organisation(grant)?;
                if self.is_related(patient, &organisation, Utc::now()).await? {
                    None
                } else {
                    Some(
                        Error::permission_denied(format!(
                            "{}: organisation {organisation} has no current care relationship \
                             with this patient",
                            grant.method
                        ))
                        .with_reason("NO_CARE_RELATIONSHIP"),
                    )
                }
            }
            Patients::Any | Patients::None | Patients::OwnOrganisationAccesses => None,
        };
        match refusal {
            None => Ok(()),
            Some(err) => {
                let reason = err.reason.clone().unwrap_or_default();
                self.audit_refusal(Change {
                    grant,
                    patient,
                    action,
                    resource_type,
                    id: "",
                    reason: &reason,
                })
                .await;
                Err(err)
            }
        }
    }

    async fn audit_refusal(&self, change: Change<'_>) {
        if let Err(e) = self
            .outbox
            .record(&change.event(AuditOutcome::Denied))
            .await
        {
            tracing::warn!(error = %e.message, "a refusal could not be audited");
        }
    }

    /// Makes a change with its audit event in the same transaction (the
    /// outbox), then wakes the relay that delivers it.
    async fn audited<T, F>(
        &self,
        change: Change<'_>,
        apply: impl FnOnce(sharedcare_proto::audit::v1::AuditEvent) -> F,
    ) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        let done = apply(change.event(AuditOutcome::Success)).await?;
        self.outbox.wake();
        Ok(done)
    }

    /// Stores a new relationship recorded by `grant`'s principal at its
    /// organisation, audited (as `reason`) before it is stored.
    async fn create_relationship(
        &self,
        grant: &Grant,
        asserted: Asserted,
        reason: &str,
    ) -> Result<CareRelationship, Error> {
        let recorded_by = caller_organisation(grant)?;
        self.insert_relationship(grant, asserted, recorded_by, reason)
            .await
    }

    /// Stores a relationship recorded on `recorded_by`'s behalf, audited.
    async fn insert_relationship(
        &self,
        grant: &Grant,
        asserted: Asserted,
        recorded_by: OdsCode,
        reason: &str,
    ) -> Result<CareRelationship, Error> {
        let relationship = CareRelationship {
            id: new_id(),
            patient_id: asserted.patient_id,
            organisation: asserted.organisation,
            kind: asserted.kind,
            period: asserted.period,
            staff_member: asserted.staff_member,
            team: asserted.team,
            reason: None,
            recorded_by: grant.principal.id.clone(),
            recorded_by_organisation: recorded_by,
            ended_by: None,
        };
        let change = Change {
            grant,
            patient: &relationship.patient_id,
            action: Action::Create,
            resource_type: "CareRelationship",
            id: &relationship.id,
            reason,
        };
        self.audited(change, |event| {
            self.store.insert_relationship(relationship.clone(), event)
        })
        .await
    }

    /// Makes the patient's registered-GP relationships match identity's
    /// registration: `practice`'s open from `since`, every other practice's
    /// ended then. Returns the open one and those ended.
    async fn match_registration(
        &self,
        grant: &Grant,
        patient_id: PatientId,
        practice: Option<OdsCode>,
        since: chrono::DateTime<Utc>,
    ) -> Result<(Option<CareRelationship>, Vec<CareRelationship>), Error> {
        let now = Utc::now();
        // Under any of the person's ids (merges).
        let relationships = self.relationships_of_person(&patient_id).await?;
        let open: Vec<CareRelationship> = relationships
            .into_iter()
            .filter(|r| r.kind == CareRelationshipKind::RegisteredGp && r.period.end.is_none())
            .collect();
        let mut kept = None;
        let mut ended = Vec::new();
        for r in open {
            if kept.is_none() && Some(&r.organisation) == practice.as_ref() {
                kept = Some(r);
                continue;
            }
            // Never before it began (a registration recorded out of order).
            let end = to_micros(since.max(r.period.start).min(now));
            let change = Change {
                grant,
                patient: &patient_id,
                action: Action::Update,
                resource_type: "CareRelationship",
                id: &r.id,
                reason: "GP_REGISTRATION_MOVED",
            };
            let done = self
                .audited(change, |event| {
                    self.store
                        .end_relationship(&r.id, end, &grant.principal.id, event)
                })
                .await?;
            ended.push(done);
        }
        let current = match (kept, practice) {
            (Some(r), _) => Some(r),
            (None, Some(practice)) => Some(
                self.insert_relationship(
                    grant,
                    Asserted {
                        patient_id,
                        organisation: practice.clone(),
                        kind: CareRelationshipKind::RegisteredGp,
                        period: Period {
                            start: to_micros(since.min(now)),
                            end: None,
                        },
                        staff_member: None,
                        team: None,
                    },
                    // The practice registered the patient; identity carried it.
                    practice,
                    "GP_REGISTRATION",
                )
                .await?,
            ),
            (None, None) => None,
        };
        Ok((current, ended))
    }

    /// Decides every category `asked` names from the patient's consent now,
    /// recording a break-glass grant first when the decision makes one.
    async fn decide(&self, asked: Asked) -> Result<pb::EvaluateResponse, Error> {
        let Some(first) = asked.requests.first() else {
            return Err(Error::invalid("categories", "name at least one category"));
        };
        // A merged patient is one person: the consent recorded under any of
        // their ids is weighed, as the current id's.
        let family = self.directory.family(&first.patient_id).await?;
        let (mut relationships, directives) = self.consent_of(&family).await?;
        let asked = Asked {
            requests: asked
                .requests
                .into_iter()
                .map(|r| as_current(r, &family))
                .collect(),
            ..asked
        };
        let Some(first) = asked.requests.first() else {
            return Err(Error::invalid("categories", "name at least one category"));
        };
        let now = Utc::now();
        let mut decided: Vec<(RecordCategory, Decision)> = asked
            .requests
            .iter()
            .map(|r| {
                let decision = evaluate(r, &relationships, &directives, &self.rules, now);
                (r.category, decision)
            })
            .collect();
        if let Some(period) = decided.iter().find_map(|(_, d)| d.new_grant) {
            let grant = self.grant_break_glass(first, &asked.actor, period).await?;
            for (_, d) in &mut decided {
                for r in d.reasons.iter_mut() {
                    if r.code == crate::domain::ReasonCode::BreakGlass {
                        r.evidence_id = Some(grant.id.clone());
                    }
                }
            }
            relationships.push(grant);
        }
        let valid_until = crate::changes::valid_until(&relationships, &directives, now);
        let version = consent_version(&relationships, &directives);
        let decision_id = new_id();
        // Debug, not info: one line per read on the hot path; the audit
        // log keeps every decision's id and reason.
        tracing::debug!(
            decision_id = %decision_id,
            outcomes = ?decided.iter().map(|(_, d)| d.outcome).collect::<Vec<_>>(),
            "decided"
        );
        Ok(decisions_to_pb(
            decided,
            decision_id,
            now,
            valid_until,
            version,
        ))
    }

    /// The relationships recorded under any of the ids of the person
    /// `patient` is (merges), as the current id's.
    async fn relationships_of_person(
        &self,
        patient: &PatientId,
    ) -> Result<Vec<CareRelationship>, Error> {
        let family = self.directory.family(patient).await?;
        self.relationships_of(&family).await
    }

    /// The directives recorded under any of the ids of the person `patient`
    /// is (merges), as the current id's.
    async fn directives_of_person(&self, patient: &PatientId) -> Result<Vec<Directive>, Error> {
        let family = self.directory.family(patient).await?;
        self.directives_of(&family).await
    }

    /// The relationships and directives recorded under every id of
    /// `family`, each as the first (current) id's.
    async fn consent_of(
        &self,
        family: &[PatientId],
    ) -> Result<(Vec<CareRelationship>, Vec<Directive>), Error> {
        tokio::try_join!(self.relationships_of(family), self.directives_of(family))
    }

    async fn relationships_of(&self, family: &[PatientId]) -> Result<Vec<CareRelationship>, Error> {
        let lists =
            futures::future::try_join_all(family.iter().map(|p| self.store.list_relationships(p)))
                .await?;
        Ok(relabelled_as_current(family, lists, |r, id| {
            r.patient_id = id
        }))
    }

    async fn directives_of(&self, family: &[PatientId]) -> Result<Vec<Directive>, Error> {
        let lists =
            futures::future::try_join_all(family.iter().map(|p| self.store.list_directives(p)))
                .await?;
        Ok(relabelled_as_current(family, lists, |d, id| {
            d.patient_id = id
        }))
    }

    /// Records a break-glass grant for the actor of `asked`, for `period`:
    /// audited as the actor's, flagged break-glass, so that their
    /// organisation's privacy officer sees it.
    async fn grant_break_glass(
        &self,
        asked: &EvaluationRequest,
        actor: &common::Actor,
        period: Period,
    ) -> Result<CareRelationship, Error> {
        let organisation = asked.actor.organisation.clone().ok_or_else(|| {
            Error::permission_denied("break-glass is only for staff acting for an organisation")
        })?;
        let grant = CareRelationship {
            id: new_id(),
            patient_id: asked.patient_id.clone(),
            organisation: organisation.clone(),
            kind: CareRelationshipKind::BreakGlass,
            period,
            staff_member: Some(asked.actor.principal_id.clone()),
            team: None,
            reason: asked.break_glass.as_ref().map(|b| b.reason.clone()),
            recorded_by: asked.actor.principal_id.clone(),
            recorded_by_organisation: organisation,
            ended_by: None,
        };
        let event = sharedcare_proto::audit::v1::AuditEvent {
            event_id: new_id(),
            occur_time: Some(to_proto(Utc::now())),
            actor: Some(actor.clone()),
            patient_id: grant.patient_id.as_str().to_owned(),
            action: Action::Create as i32,
            resource_type: "CareRelationship".into(),
            record_id: grant.id.clone(),
            purpose: purpose_to_pb(asked.purpose) as i32,
            outcome: AuditOutcome::Success as i32,
            outcome_reason: "BREAK_GLASS".into(),
            break_glass: true,
            source_service: crate::SERVICE_NAME.into(),
            trace_id: sharedcare_kit::telemetry::current_trace_id(),
            trace_parent: sharedcare_kit::telemetry::current_trace_parent(),
            ..Default::default()
        };
        let stored = self.store.insert_relationship(grant, event).await?;
        self.outbox.wake();
        Ok(stored)
    }

    /// Audits a read before its answer is sent (fail closed).
    async fn audit_read(&self, change: Change<'_>) -> Result<(), Error> {
        self.outbox
            .record(&change.event(AuditOutcome::Success))
            .await
    }
}

/// `r` about the current id of its patient's `family` (first), the actor
/// too when they are that patient under any of its ids.
fn as_current(mut r: EvaluationRequest, family: &[PatientId]) -> EvaluationRequest {
    if let Some(current) = family.first() {
        if r.actor.patient.as_ref().is_some_and(|p| family.contains(p)) {
            r.actor.patient = Some(current.clone());
        }
        r.patient_id = current.clone();
    }
    r
}

/// A relationship as an organisation asserts it (or a referral makes it).
struct Asserted {
    patient_id: PatientId,
    organisation: OdsCode,
    kind: CareRelationshipKind,
    period: Period,
    staff_member: Option<String>,
    team: Option<String>,
}

/// A page of one of the patient's lists, newest first: its size, where it
/// starts, and whether past entries (ended, revoked) are included.
struct ListQuery {
    size: usize,
    /// The last entry of the previous page: (time, id).
    after: Option<(i64, String)>,
    all: bool,
    query: Vec<u8>,
    cursors: sharedcare_kit::paging::CursorKey,
}

impl ListQuery {
    fn parse(
        rpc: &str,
        patient: &PatientId,
        page_size: u32,
        page_token: &str,
        all: bool,
    ) -> Result<Self, Error> {
        let size = sharedcare_kit::paging::page_size(
            "page_size",
            i32::try_from(page_size).unwrap_or(i32::MAX),
            20,
            100,
        )?;
        let query = format!("{rpc}\n{}\n{all}", patient.as_str()).into_bytes();
        let cursors = sharedcare_kit::paging::CursorKey::new(LIST_CURSOR_KEY);
        let after = match cursors.open("page_token", page_token, &query)? {
            None => None,
            Some(position) => Some(
                sharedcare_kit::paging::read_time_id_position(&position).ok_or_else(|| {
                    Error::invalid("page_token", "is not a cursor for this request")
                })?,
            ),
        };
        Ok(ListQuery {
            size,
            after,
            all,
            query,
            cursors,
        })
    }

    /// This page of `items` (any order), newest `key` first, and the token
    /// of the next page (empty on the last).
    fn page<T>(
        &self,
        items: impl Iterator<Item = T>,
        key: impl Fn(&T) -> (chrono::DateTime<Utc>, String),
    ) -> (Vec<T>, String) {
        let mut keyed: Vec<((i64, String), T)> = items
            .map(|item| {
                let (at, id) = key(&item);
                ((at.timestamp_micros(), id), item)
            })
            .filter(|(k, _)| self.after.as_ref().is_none_or(|after| k < after))
            .collect();
        keyed.sort_by(|a, b| b.0.cmp(&a.0));
        let more = keyed.len() > self.size;
        keyed.truncate(self.size);
        let next = match keyed.last() {
            Some(((micros, id), _)) if more => {
                let position = sharedcare_kit::paging::time_id_position(*micros, id);
                self.cursors.issue(&self.query, &position)
            }
            _ => String::new(),
        };
        (keyed.into_iter().map(|(_, item)| item).collect(), next)
    }
}

/// Each id's list of a merged person, flattened, every entry relabelled
/// (by `relabel`) as the family's first, current id's.
fn relabelled_as_current<T>(
    family: &[PatientId],
    lists: Vec<Vec<T>>,
    relabel: impl Fn(&mut T, PatientId),
) -> Vec<T> {
    let Some(current) = family.first() else {
        return Vec::new();
    };
    lists
        .into_iter()
        .flatten()
        .map(|mut item| {
            relabel(&mut item, current.clone());
            item
        })
        .collect()
}

/// The caller's organisation, required for the rows that act for one.
fn caller_organisation(grant: &Grant) -> Result<OdsCode, Error> {
    OdsCode::parse("token organisation", &grant.principal.organisation).map_err(|_| {
        Error::permission_denied(format!(
            "{}: the caller acts for no organisation",
            grant.method
        ))
    })
}

#[tonic::async_trait]
impl ConsentService for ConsentGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "RecordCareRelationship"))]
    async fn record_care_relationship(
        &self,
        request: Request<pb::RecordCareRelationshipRequest>,
    ) -> Result<Response<pb::RecordCareRelationshipResponse>, Status> {
        let grant = self.admitted(&request)?;
        let req = request.into_inner();
        let patient_id = PatientId::parse("patient_id", &req.patient_id)?;
        let organisation = OdsCode::parse("organisation_ods_code", &req.organisation_ods_code)?;
        let kind = kind_from_pb("kind", req.kind)?;
        let staff_member =
            optional_text("staff_principal_id", &req.staff_principal_id, MAX_ID_CHARS)?;
        let team = optional_text("team", &req.team, MAX_NOTE_CHARS)?;
        if kind == CareRelationshipKind::Referral {
            return Err(Error::invalid(
                "kind",
                "a referral is made with ReferPatient, by an organisation caring for the patient",
            )
            .into());
        }
        let period = Period::parse(
            "start_time",
            "end_time",
            from_proto("start_time", req.start_time.as_ref())?,
            from_proto("end_time", req.end_time.as_ref())?,
            Utc::now(),
        )?;
        let own = caller_organisation(&grant)?;
        if organisation != own {
            let err = Error::permission_denied(format!(
                "RecordCareRelationship: an organisation asserts care relationships only for \
                 itself ({own}), not for {organisation}; a referral brings in another organisation"
            ))
            .with_reason("NOT_OWN_ORGANISATION");
            self.audit_refusal(Change {
                grant: &grant,
                patient: &patient_id,
                action: Action::Create,
                resource_type: "CareRelationship",
                id: "",
                reason: "NOT_OWN_ORGANISATION",
            })
            .await;
            return Err(err.into());
        }
        if !self.directory.patient_exists(&patient_id).await? {
            return Err(Error::not_found("patient_id: no patient with this id").into());
        }
        let stored = self
            .create_relationship(
                &grant,
                Asserted {
                    patient_id,
                    organisation,
                    kind,
                    period,
                    staff_member,
                    team,
                },
                "ASSERTED",
            )
            .await?;
        Ok(Response::new(pb::RecordCareRelationshipResponse {
            relationship: Some(relationship_to_pb(stored)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ReferPatient"))]
    async fn refer_patient(
        &self,
        request: Request<pb::ReferPatientRequest>,
    ) -> Result<Response<pb::ReferPatientResponse>, Status> {
        let grant = self.admitted(&request)?;
        let req = request.into_inner();
        let patient_id = PatientId::parse("patient_id", &req.patient_id)?;
        let organisation = OdsCode::parse("organisation_ods_code", &req.organisation_ods_code)?;
        let period = Period::parse(
            "start_time",
            "end_time",
            from_proto("start_time", req.start_time.as_ref())?,
            from_proto("end_time", req.end_time.as_ref())?,
            Utc::now(),
        )?;
        let referrer = caller_organisation(&grant)?;
        if organisation == referrer {
            return Err(Error::invalid(
                "organisation_ods_code",
                "is the referring organisation itself; refer to another organisation",
            )
            .into());
        }
        self.check_patient(&grant, &patient_id, "CareRelationship", Action::Create)
            .await?;
        if !self.directory.organisation_exists(&organisation).await? {
            return Err(Error::not_found(format!(
                "organisation_ods_code: no organisation {organisation}"
            ))
            .into());
        }
        let stored = self
            .create_relationship(
                &grant,
                Asserted {
                    patient_id,
                    organisation,
                    kind: CareRelationshipKind::Referral,
                    period,
                    staff_member: None,
                    team: None,
                },
                "REFERRAL",
            )
            .await?;
        Ok(Response::new(pb::ReferPatientResponse {
            relationship: Some(relationship_to_pb(stored)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "EndCareRelationship"))]
    async fn end_care_relationship(
        &self,
        request: Request<pb::EndCareRelationshipRequest>,
    ) -> Result<Response<pb::EndCareRelationshipResponse>, Status> {
        let grant = self.admitted(&request)?;
        let req = request.into_inner();
        let patient_id = PatientId::parse("patient_id", &req.patient_id)?;
        let id = required_id("relationship_id", &req.relationship_id)?;
        let now = Utc::now();
        let end = from_proto("end_time", req.end_time.as_ref())?.unwrap_or(now);
        if end > now {
            return Err(Error::invalid("end_time", "must not be in the future").into());
        }
        let end = to_micros(end);
        self.check_patient(&grant, &patient_id, "CareRelationship", Action::Update)
            .await?;
        let own = caller_organisation(&grant)?;
        // Another organisation's relationship (or another patient's) is not
        // there as far as this caller is concerned.
        let found = self
            .store
            .get_relationship(&id)
            .await?
            .filter(|r| r.patient_id == patient_id && r.organisation == own)
            .ok_or_else(|| {
                Error::not_found(
                    "no care relationship with this relationship_id for this patient and \
                     organisation",
                )
            })?;
        if end < found.period.start {
            return Err(Error::invalid("end_time", "must not be before the start time").into());
        }
        let change = Change {
            grant: &grant,
            patient: &patient_id,
            action: Action::Update,
            resource_type: "CareRelationship",
            id: &id,
            reason: "ENDED",
        };
        let ended = self
            .audited(change, |event| {
                self.store
                    .end_relationship(&id, end, &grant.principal.id, event)
            })
            .await?;
        Ok(Response::new(pb::EndCareRelationshipResponse {
            relationship: Some(relationship_to_pb(ended)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RecordGpRegistration"))]
    async fn record_gp_registration(
        &self,
        request: Request<pb::RecordGpRegistrationRequest>,
    ) -> Result<Response<pb::RecordGpRegistrationResponse>, Status> {
        let grant = self.admitted(&request)?;
        let req = request.into_inner();
        let patient_id = PatientId::parse("patient_id", &req.patient_id)?;
        let practice = if req.organisation_ods_code.is_empty() {
            None
        } else {
            Some(OdsCode::parse(
                "organisation_ods_code",
                &req.organisation_ods_code,
            )?)
        };
        let since =
            from_proto("registered_time", req.registered_time.as_ref())?.unwrap_or_else(Utc::now);
        let (current, ended) = self
            .match_registration(&grant, patient_id, practice, since)
            .await?;
        Ok(Response::new(pb::RecordGpRegistrationResponse {
            relationship: current.map(relationship_to_pb),
            ended: ended.into_iter().map(relationship_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListCareRelationships"))]
    async fn list_care_relationships(
        &self,
        request: Request<pb::ListCareRelationshipsRequest>,
    ) -> Result<Response<pb::ListCareRelationshipsResponse>, Status> {
        let grant = self.admitted(&request)?;
        let req = request.into_inner();
        let patient = PatientId::parse("patient_id", &req.patient_id)?;
        let query = ListQuery::parse(
            "ListCareRelationships",
            &patient,
            req.page_size,
            &req.page_token,
            req.include_ended,
        )?;
        self.check_patient(&grant, &patient, "CareRelationship", Action::Read)
            .await?;
        let now = Utc::now();
        // A merged patient is one person: every id's relationships.
        let relationships = self.relationships_of_person(&patient).await?;
        let relationships = relationships
            .into_iter()
            .filter(|r| query.all || r.period.end.is_none_or(|end| end > now));
        let (relationships, next_page_token) =
            query.page(relationships, |r| (r.period.start, r.id.clone()));
        self.audit_read(Change {
            grant: &grant,
            patient: &patient,
            action: Action::Read,
            resource_type: "CareRelationship",
            id: "",
            reason: "LISTED",
        })
        .await?;
        Ok(Response::new(pb::ListCareRelationshipsResponse {
            relationships: relationships.into_iter().map(relationship_to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RecordDirective"))]
    async fn record_directive(
        &self,
        request: Request<pb::RecordDirectiveRequest>,
    ) -> Result<Response<pb::RecordDirectiveResponse>, Status> {
        let grant = self.admitted(&request)?;
        let directive = request
            .into_inner()
            .directive
            .ok_or_else(|| Error::invalid("directive", "is required"))?;
        let provenance = if grant.principal.kind == PrincipalKind::Patient {
            Provenance {
                recorded_by: grant.principal.id.clone(),
                organisation: None,
                source: DirectiveSource::Patient,
            }
        } else {
            Provenance {
                recorded_by: grant.principal.id.clone(),
                organisation: Some(caller_organisation(&grant)?),
                source: DirectiveSource::Clinician,
            }
        };
        let directive = directive_from_pb(directive, provenance, Utc::now())?;
        self.check_patient(&grant, &directive.patient_id, "Directive", Action::Create)
            .await?;
        if let Some(organisation) = &directive.organisation
            && !self.directory.organisation_exists(organisation).await?
        {
            return Err(Error::invalid(
                "directive.organisation_ods_code",
                format!("no organisation {organisation} is known"),
            )
            .into());
        }
        let change = Change {
            grant: &grant,
            patient: &directive.patient_id,
            action: Action::Create,
            resource_type: "Directive",
            id: &directive.id,
            reason: directive.provenance.source.as_str(),
        };
        let stored = self
            .audited(change, |event| {
                self.store.insert_directive(directive.clone(), event)
            })
            .await?;
        Ok(Response::new(pb::RecordDirectiveResponse {
            directive: Some(directive_to_pb(stored)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RevokeDirective"))]
    async fn revoke_directive(
        &self,
        request: Request<pb::RevokeDirectiveRequest>,
    ) -> Result<Response<pb::RevokeDirectiveResponse>, Status> {
        let grant = self.admitted(&request)?;
        let id = required_id("directive_id", &request.get_ref().directive_id)?;
        let patient = PatientId::parse("patient_id", &request.get_ref().patient_id)?;
        self.check_patient(&grant, &patient, "Directive", Action::Delete)
            .await?;
        // Another patient's directive is not there for this request.
        let found = self
            .store
            .get_directive(&id)
            .await?
            .filter(|d| d.patient_id == patient)
            .ok_or_else(|| {
                Error::not_found("no directive with this directive_id for this patient")
            })?;
        if found.kind == DirectiveKind::NationalOptOut {
            return Err(Error::failed_precondition(
                "this is the patient's National Data Opt-out: withdraw it with SetNationalOptOut",
            )
            .into());
        }
        let change = Change {
            grant: &grant,
            patient: &patient,
            action: Action::Delete,
            resource_type: "Directive",
            id: &id,
            reason: "REVOKED",
        };
        let directive = self
            .audited(change, |event| {
                self.store
                    .revoke_directive(&id, to_micros(Utc::now()), &grant.principal.id, event)
            })
            .await?;
        Ok(Response::new(pb::RevokeDirectiveResponse {
            directive: Some(directive_to_pb(directive)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListDirectives"))]
    async fn list_directives(
        &self,
        request: Request<pb::ListDirectivesRequest>,
    ) -> Result<Response<pb::ListDirectivesResponse>, Status> {
        let grant = self.admitted(&request)?;
        let req = request.into_inner();
        let patient = PatientId::parse("patient_id", &req.patient_id)?;
        let query = ListQuery::parse(
            "ListDirectives",
            &patient,
            req.page_size,
            &req.page_token,
            req.include_history,
        )?;
        self.check_patient(&grant, &patient, "Directive", Action::Read)
            .await?;
        let now = Utc::now();
        let directives = self.directives_of_person(&patient).await?;
        let directives = directives.into_iter().filter(|d| {
            query.all || (d.revoked_at.is_none() && d.period.end.is_none_or(|end| end > now))
        });
        let (directives, next_page_token) =
            query.page(directives, |d| (d.created_at, d.id.clone()));
        self.audit_read(Change {
            grant: &grant,
            patient: &patient,
            action: Action::Read,
            resource_type: "Directive",
            id: "",
            reason: "LISTED",
        })
        .await?;
        Ok(Response::new(pb::ListDirectivesResponse {
            directives: directives.into_iter().map(directive_to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SetNationalOptOut"))]
    async fn set_national_opt_out(
        &self,
        request: Request<pb::SetNationalOptOutRequest>,
    ) -> Result<Response<pb::SetNationalOptOutResponse>, Status> {
        let grant = self.admitted(&request)?;
        let req = request.into_inner();
        let patient = PatientId::parse("patient_id", &req.patient_id)?;
        self.check_patient(&grant, &patient, "Directive", Action::Update)
            .await?;
        let by_patient = grant.principal.kind == PrincipalKind::Patient;
        if !by_patient && !self.directory.patient_exists(&patient).await? {
            return Err(Error::not_found("patient_id: no patient with this id").into());
        }
        let current = self
            .store
            .list_directives(&patient)
            .await?
            .into_iter()
            .find(|d| d.kind == DirectiveKind::NationalOptOut && d.revoked_at.is_none());
        let answer = |opted_out, directive: Option<Directive>| {
            Response::new(pb::SetNationalOptOutResponse {
                opted_out,
                directive: directive.map(directive_to_pb),
            })
        };
        fn change<'a>(
            grant: &'a Grant,
            patient: &'a PatientId,
            action: Action,
            id: &'a str,
        ) -> Change<'a> {
            Change {
                grant,
                patient,
                action,
                resource_type: "Directive",
                id,
                reason: "OPT_OUT_CHANGED",
            }
        }
        match (req.opted_out, current) {
            (true, None) => {
                let now = to_micros(Utc::now());
                let opt_out = Directive {
                    id: new_id(),
                    patient_id: patient.clone(),
                    kind: DirectiveKind::NationalOptOut,
                    effect: Effect::Deny,
                    purposes: DirectiveKind::OPT_OUT_PURPOSES.to_vec(),
                    organisation: None,
                    staff_member: None,
                    staff_role: None,
                    categories: vec![],
                    // No end: it persists, after death too, until withdrawn.
                    period: Period {
                        start: now,
                        end: None,
                    },
                    note: String::new(),
                    created_at: now,
                    revoked_at: None,
                    provenance: Provenance {
                        recorded_by: grant.principal.id.clone(),
                        organisation: None,
                        source: if by_patient {
                            DirectiveSource::Patient
                        } else {
                            DirectiveSource::NationalOptOutService
                        },
                    },
                    revoked_by: None,
                };
                let stored = self
                    .audited(
                        change(&grant, &patient, Action::Create, &opt_out.id),
                        |event| self.store.insert_directive(opt_out.clone(), event),
                    )
                    .await?;
                Ok(answer(true, Some(stored)))
            }
            (false, Some(current)) => {
                let withdrawn = self
                    .audited(
                        change(&grant, &patient, Action::Delete, &current.id),
                        |event| {
                            self.store.revoke_directive(
                                &current.id,
                                to_micros(Utc::now()),
                                &grant.principal.id,
                                event,
                            )
                        },
                    )
                    .await?;
                Ok(answer(false, Some(withdrawn)))
            }
            // Already as asked: nothing changes; the read is audited.
            (opted_out, current) => {
                let id = current.as_ref().map(|d| d.id.clone()).unwrap_or_default();
                self.audit_read(change(&grant, &patient, Action::Read, &id))
                    .await?;
                Ok(answer(opted_out, current))
            }
        }
    }

    #[tracing::instrument(skip_all, fields(rpc = "Evaluate"))]
    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        grant(&request)?;
        let asked = evaluation_from_pb(request.into_inner())?;
        Ok(Response::new(self.decide(asked).await?))
    }

    #[tracing::instrument(skip_all, fields(rpc = "BatchEvaluate"))]
    async fn batch_evaluate(
        &self,
        request: Request<pb::BatchEvaluateRequest>,
    ) -> Result<Response<pb::BatchEvaluateResponse>, Status> {
        grant(&request)?;
        let requests = request.into_inner().requests;
        if requests.is_empty() || requests.len() > MAX_BATCH {
            return Err(Error::invalid(
                "requests",
                format!("must hold between 1 and {MAX_BATCH} requests"),
            )
            .into());
        }
        // Every request is checked before any is decided: a batch with a bad
        // request records no break-glass grant.
        let asked = requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| evaluation_from_pb(r).map_err(|e| in_batch(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut responses = Vec::with_capacity(asked.len());
        for asked in asked {
            responses.push(self.decide(asked).await?);
        }
        Ok(Response::new(pb::BatchEvaluateResponse { responses }))
    }

    type WatchChangesStream =
        futures::stream::BoxStream<'static, Result<pb::WatchChangesResponse, Status>>;

    #[tracing::instrument(skip_all, fields(rpc = "WatchChanges"))]
    async fn watch_changes(
        &self,
        request: Request<tonic::Streaming<pb::WatchChangesRequest>>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        grant(&request)?;
        Ok(Response::new(self.changes.watch(request.into_inner())?))
    }
}
