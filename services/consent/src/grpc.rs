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
        DirectiveSource, Effect, EvaluationRequest, MAX_ID_CHARS, MAX_NOTE_CHARS, OdsCode, Outcome,
        PatientId, Period, Provenance, Purpose, RecordCategory, evaluate, optional_text,
        required_id, to_micros,
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
    /// What each relationship kind lets its organisation see.
    pub scopes: Arc<crate::domain::RelationshipScopes>,
}

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
        effect,
        purposes: distinct(purposes),
        organisation,
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

fn evaluation_from_pb(req: pb::EvaluateRequest) -> Result<EvaluationRequest, Error> {
    let patient_id = PatientId::parse("patient_id", &req.patient_id)?;
    let actor = req
        .actor
        .ok_or_else(|| Error::invalid("actor", "is required"))?;
    let is_patient = actor.kind == PrincipalKind::Patient as i32;
    let actor = Actor {
        principal_id: optional_text("actor.principal_id", &actor.principal_id, MAX_ID_CHARS)?
            .unwrap_or_default(),
        // A patient acts for no organisation; everyone else for exactly one.
        organisation: if is_patient {
            OdsCode::parse_optional("actor.organisation_ods_code", &actor.organisation_ods_code)?
        } else {
            Some(OdsCode::parse(
                "actor.organisation_ods_code",
                &actor.organisation_ods_code,
            )?)
        },
        role: optional_text("actor.role", &actor.role, MAX_ID_CHARS)?.unwrap_or_default(),
        patient: if is_patient {
            Some(PatientId::parse("actor.patient_id", &actor.patient_id)?)
        } else {
            None
        },
    };
    let purpose = purpose_from_pb("purpose", req.purpose, "is required")?;
    let category = category_from_pb("category", req.category)?.unwrap_or(RecordCategory::General);
    let break_glass = req
        .break_glass
        .map(|b| BreakGlass::parse("break_glass.reason", &b.reason))
        .transpose()?;
    Ok(EvaluationRequest {
        patient_id,
        actor,
        purpose,
        category,
        break_glass,
    })
}

fn decision_to_pb(
    decision: Decision,
    decision_id: String,
    at: chrono::DateTime<Utc>,
    valid_until: Option<chrono::DateTime<Utc>>,
) -> pb::EvaluateResponse {
    pb::EvaluateResponse {
        decision: match decision.outcome {
            Outcome::Permit => pb::Decision::Permit,
            Outcome::Deny => pb::Decision::Deny,
        } as i32,
        reasons: decision
            .reasons
            .into_iter()
            .map(|r| pb::Reason {
                code: r.code.as_str().to_owned(),
                message: r.message,
                evidence_id: r.evidence_id.unwrap_or_default(),
            })
            .collect(),
        obligations: decision
            .obligations
            .into_iter()
            .map(|o| pb::Obligation {
                code: o.code.as_str().to_owned(),
                message: o.message,
            })
            .collect(),
        decision_id,
        evaluate_time: Some(to_proto(at)),
        valid_until: valid_until.map(to_proto),
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
    /// patient at `now`.
    async fn is_related(
        &self,
        patient: &PatientId,
        organisation: &OdsCode,
        now: chrono::DateTime<Utc>,
    ) -> Result<bool, Error> {
        Ok(self
            .store
            .list_relationships(patient)
            .await?
            .iter()
            .any(|r| &r.organisation == organisation && r.is_current(now)))
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
        patient_id: PatientId,
        organisation: OdsCode,
        kind: CareRelationshipKind,
        period: Period,
        reason: &str,
    ) -> Result<CareRelationship, Error> {
        let recorded_by = caller_organisation(grant)?;
        let relationship = CareRelationship {
            id: new_id(),
            patient_id,
            organisation,
            kind,
            period,
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

    /// Audits a read before its answer is sent (fail closed).
    async fn audit_read(&self, change: Change<'_>) -> Result<(), Error> {
        self.outbox
            .record(&change.event(AuditOutcome::Success))
            .await
    }
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
            .create_relationship(&grant, patient_id, organisation, kind, period, "ASSERTED")
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
                patient_id,
                organisation,
                CareRelationshipKind::Referral,
                period,
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

    #[tracing::instrument(skip_all, fields(rpc = "ListCareRelationships"))]
    async fn list_care_relationships(
        &self,
        request: Request<pb::ListCareRelationshipsRequest>,
    ) -> Result<Response<pb::ListCareRelationshipsResponse>, Status> {
        let grant = self.admitted(&request)?;
        let patient = PatientId::parse("patient_id", &request.get_ref().patient_id)?;
        self.check_patient(&grant, &patient, "CareRelationship", Action::Read)
            .await?;
        let relationships = self.store.list_relationships(&patient).await?;
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
        self.store
            .get_directive(&id)
            .await?
            .filter(|d| d.patient_id == patient)
            .ok_or_else(|| {
                Error::not_found("no directive with this directive_id for this patient")
            })?;
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
        let patient = PatientId::parse("patient_id", &request.get_ref().patient_id)?;
        self.check_patient(&grant, &patient, "Directive", Action::Read)
            .await?;
        let directives = self.store.list_directives(&patient).await?;
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
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SetNationalOptOut"))]
    async fn set_national_opt_out(
        &self,
        request: Request<pb::SetNationalOptOutRequest>,
    ) -> Result<Response<pb::SetNationalOptOutResponse>, Status> {
        let grant = self.admitted(&request)?;
        let patient = PatientId::parse("patient_id", &request.get_ref().patient_id)?;
        self.check_patient(&grant, &patient, "Directive", Action::Update)
            .await?;
        Err(Error::unimplemented("SetNationalOptOut", "the National Data Opt-out issue").into())
    }

    #[tracing::instrument(skip_all, fields(rpc = "Evaluate"))]
    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        grant(&request)?;
        let asked = evaluation_from_pb(request.into_inner())?;
        let (relationships, directives) = tokio::try_join!(
            self.store.list_relationships(&asked.patient_id),
            self.store.list_directives(&asked.patient_id),
        )?;
        let now = Utc::now();
        let decision = evaluate(&asked, &relationships, &directives, &self.scopes, now);
        let valid_until = crate::changes::valid_until(&relationships, &directives, now);
        let decision_id = new_id();
        // Debug, not info: one line per read on the hot path; the audit
        // log keeps every decision's id and reason.
        tracing::debug!(
            decision_id = %decision_id,
            outcome = ?decision.outcome,
            reasons = ?decision.reasons.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
            "decided"
        );
        Ok(Response::new(decision_to_pb(
            decision,
            decision_id,
            now,
            valid_until,
        )))
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
