//! The gRPC edge of consent: decode → domain → encode. The only module that
//! knows request and response types.

use std::sync::Arc;

use chrono::Utc;
use sharedcare_kit::{
    Error,
    auth::authorize,
    proto_time::{from_proto, to_proto},
};
use sharedcare_proto::{
    common::v1 as common,
    consent::v1::{self as pb, consent_service_server::ConsentService},
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        Actor, BreakGlass, CareRelationship, CareRelationshipKind, Decision, Directive, Effect,
        EvaluationRequest, MAX_ID_CHARS, MAX_NOTE_CHARS, OdsCode, Outcome, PatientId, Period,
        Purpose, RecordCategory, evaluate, optional_text, required_id, to_micros,
    },
    store::ConsentStore,
};

const SCOPE_READ: &str = "consent.read";
const SCOPE_WRITE: &str = "consent.write";
const SCOPE_EVALUATE: &str = "consent.evaluate";

pub struct ConsentGrpc {
    pub store: Arc<dyn ConsentStore>,
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
    }
}

fn directive_from_pb(d: pb::Directive, now: chrono::DateTime<Utc>) -> Result<Directive, Error> {
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
    })
}

fn evaluation_from_pb(req: pb::EvaluateRequest) -> Result<EvaluationRequest, Error> {
    let patient_id = PatientId::parse("patient_id", &req.patient_id)?;
    let actor = req
        .actor
        .ok_or_else(|| Error::invalid("actor", "is required"))?;
    let actor = Actor {
        principal_id: optional_text("actor.principal_id", &actor.principal_id, MAX_ID_CHARS)?
            .unwrap_or_default(),
        organisation: OdsCode::parse("actor.organisation_ods_code", &actor.organisation_ods_code)?,
        role: optional_text("actor.role", &actor.role, MAX_ID_CHARS)?.unwrap_or_default(),
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
    }
}

#[tonic::async_trait]
impl ConsentService for ConsentGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "RecordCareRelationship"))]
    async fn record_care_relationship(
        &self,
        request: Request<pb::RecordCareRelationshipRequest>,
    ) -> Result<Response<pb::RecordCareRelationshipResponse>, Status> {
        let principal = authorize(&request, SCOPE_WRITE)?;
        let req = request.into_inner();
        let relationship = CareRelationship {
            id: new_id(),
            patient_id: PatientId::parse("patient_id", &req.patient_id)?,
            organisation: OdsCode::parse("organisation_ods_code", &req.organisation_ods_code)?,
            kind: kind_from_pb("kind", req.kind)?,
            period: Period::parse(
                "start_time",
                "end_time",
                from_proto("start_time", req.start_time.as_ref())?,
                from_proto("end_time", req.end_time.as_ref())?,
                Utc::now(),
            )?,
            recorded_by: principal.id,
        };
        let relationship = self.store.insert_relationship(relationship).await?;
        Ok(Response::new(pb::RecordCareRelationshipResponse {
            relationship: Some(relationship_to_pb(relationship)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListCareRelationships"))]
    async fn list_care_relationships(
        &self,
        request: Request<pb::ListCareRelationshipsRequest>,
    ) -> Result<Response<pb::ListCareRelationshipsResponse>, Status> {
        authorize(&request, SCOPE_READ)?;
        let patient = PatientId::parse("patient_id", &request.get_ref().patient_id)?;
        let relationships = self.store.list_relationships(&patient).await?;
        Ok(Response::new(pb::ListCareRelationshipsResponse {
            relationships: relationships.into_iter().map(relationship_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RecordDirective"))]
    async fn record_directive(
        &self,
        request: Request<pb::RecordDirectiveRequest>,
    ) -> Result<Response<pb::RecordDirectiveResponse>, Status> {
        authorize(&request, SCOPE_WRITE)?;
        let directive = request
            .into_inner()
            .directive
            .ok_or_else(|| Error::invalid("directive", "is required"))?;
        let directive = directive_from_pb(directive, Utc::now())?;
        let directive = self.store.insert_directive(directive).await?;
        Ok(Response::new(pb::RecordDirectiveResponse {
            directive: Some(directive_to_pb(directive)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RevokeDirective"))]
    async fn revoke_directive(
        &self,
        request: Request<pb::RevokeDirectiveRequest>,
    ) -> Result<Response<pb::RevokeDirectiveResponse>, Status> {
        authorize(&request, SCOPE_WRITE)?;
        let id = required_id("directive_id", &request.get_ref().directive_id)?;
        let directive = self
            .store
            .revoke_directive(&id, to_micros(Utc::now()))
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
        authorize(&request, SCOPE_READ)?;
        let patient = PatientId::parse("patient_id", &request.get_ref().patient_id)?;
        let directives = self.store.list_directives(&patient).await?;
        Ok(Response::new(pb::ListDirectivesResponse {
            directives: directives.into_iter().map(directive_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SetNationalOptOut"))]
    async fn set_national_opt_out(
        &self,
        request: Request<pb::SetNationalOptOutRequest>,
    ) -> Result<Response<pb::SetNationalOptOutResponse>, Status> {
        authorize(&request, SCOPE_WRITE)?;
        Err(Error::unimplemented("SetNationalOptOut", "the National Data Opt-out issue").into())
    }

    #[tracing::instrument(skip_all, fields(rpc = "Evaluate"))]
    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        authorize(&request, SCOPE_EVALUATE)?;
        let asked = evaluation_from_pb(request.into_inner())?;
        let (relationships, directives) = tokio::try_join!(
            self.store.list_relationships(&asked.patient_id),
            self.store.list_directives(&asked.patient_id),
        )?;
        let now = Utc::now();
        let decision = evaluate(&asked, &relationships, &directives, now);
        let decision_id = new_id();
        tracing::info!(
            decision_id = %decision_id,
            outcome = ?decision.outcome,
            reasons = ?decision.reasons.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
            "decided"
        );
        Ok(Response::new(decision_to_pb(decision, decision_id, now)))
    }

    type WatchChangesStream =
        futures::stream::BoxStream<'static, Result<pb::WatchChangesResponse, Status>>;

    #[tracing::instrument(skip_all, fields(rpc = "WatchChanges"))]
    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        authorize(&request, SCOPE_READ)?;
        Err(Error::unimplemented("WatchChanges", "the change-feed issue").into())
    }
}
