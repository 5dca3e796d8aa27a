//! The gRPC edge of identity: decode → domain → encode. The only module that
//! knows request and response types.

mod matching;
mod merge;
mod versions;

use std::{collections::BTreeSet, sync::Arc};

use sharedcare_kit::{
    Error,
    access::{Grant, Patients, grant},
    auth::{Principal as Caller, purpose_to_str},
    peers::AccessEvent,
    proto_time::to_proto,
};
use sharedcare_proto::{
    audit::v1::{Action, Outcome},
    common::v1::{PrincipalKind, Purpose, RecordCategory},
    identity::v1::{self as pb, identity_service_server::IdentityService},
};
use tonic::{Request, Response, Status};

use crate::{
    Peers, TokenIssuer,
    domain::{
        ClientSecret, ContactSystem, Demographics, Gender, NhsNumber, NotSamePerson, OdsCode,
        Organisation, Patient, Principal, RawDetails, RoleMap, parse_role, purposes_for_kind,
        purposes_from_pb, scopes_for_kind, validate_scopes,
    },
    store::{IdentityStore, Registered},
};

use matching::Found;

pub struct IdentityGrpc {
    store: Arc<dyn IdentityStore>,
    tokens: Arc<TokenIssuer>,
    roles: RoleMap,
    peers: Peers,
    /// Checks tokens this identity issued (IntrospectToken).
    verifier: Arc<sharedcare_kit::auth::Verifier>,
    /// Wakes WatchPatientMerges streams when this replica merges.
    merges: Arc<tokio::sync::Notify>,
    /// Carries changes of registered GP practice to consent.
    registrations: Arc<crate::registrations::RegistrationRelay>,
}

impl IdentityGrpc {
    pub fn new(
        store: Arc<dyn IdentityStore>,
        tokens: Arc<TokenIssuer>,
        roles: RoleMap,
        peers: Peers,
        verifier: Arc<sharedcare_kit::auth::Verifier>,
    ) -> Self {
        let registrations = crate::registrations::RegistrationRelay::start(
            store.clone(),
            peers.registrations.clone(),
        );
        IdentityGrpc {
            store,
            tokens,
            roles,
            peers,
            verifier,
            merges: Arc::new(tokio::sync::Notify::new()),
            registrations,
        }
    }

    /// Makes the audit event of one demographic access durable in the
    /// outbox (group-committed) before the access is answered; a failure is
    /// UNAVAILABLE and the access is not answered (fail closed).
    async fn audit(
        &self,
        access: &AccessEvent<'_>,
        outcome: Outcome,
        reason: &str,
        decision_id: &str,
    ) -> Result<(), Error> {
        self.peers
            .outbox
            .record(&access.event(outcome, reason, decision_id))
            .await
    }

    /// Audits a refusal (best effort: the answer is no either way) and
    /// returns it.
    async fn refuse(
        &self,
        access: &AccessEvent<'_>,
        error: Error,
        reason: &str,
        decision_id: &str,
    ) -> Error {
        if let Err(e) = self
            .audit(access, Outcome::Denied, reason, decision_id)
            .await
        {
            tracing::warn!(error = %e.message, "a denial could not be audited");
        }
        error
    }

    /// Who may read this patient's demographics, as the grant says: the
    /// patient themselves, or consent's decision for staff and applications
    /// (as for a general record). The decision id, if consent was asked.
    async fn decide_read(&self, grant: &Grant, access: &AccessEvent<'_>) -> Result<String, Error> {
        match grant.patients {
            Patients::Own => match grant.check_own(access.patient_id) {
                Ok(()) => Ok(String::new()),
                Err(e) => Err(self.refuse(access, e, "NOT_OWN_PATIENT", "").await),
            },
            Patients::Related => {
                let decision = self
                    .peers
                    .consent
                    .evaluate(
                        access.patient_id,
                        grant.principal.actor(),
                        access.purpose,
                        RecordCategory::General,
                    )
                    .await?;
                if decision.permitted {
                    Ok(decision.decision_id)
                } else {
                    Err(self
                        .refuse(
                            access,
                            decision.denial(),
                            &decision.reason_code(),
                            &decision.decision_id,
                        )
                        .await)
                }
            }
            Patients::Any => Ok(String::new()),
            Patients::None | Patients::OwnOrganisationAccesses => Err(Error::permission_denied(
                format!("{} names a patient this grant does not cover", grant.method),
            )
            .with_reason("ACCESS_RULE")),
        }
    }

    /// For an application acting for a member of staff: the staff member
    /// (with the scopes and purposes both hold), the `act` claim naming the
    /// application, and the staff token's expiry, which the new token does
    /// not outlive. INVALID_ARGUMENT naming `on_behalf_of_token` otherwise.
    async fn acting_for(
        &self,
        application: Principal,
        staff_token: &str,
    ) -> Result<
        (
            Principal,
            Option<sharedcare_kit::auth::ActClaim>,
            Option<chrono::DateTime<chrono::Utc>>,
        ),
        Error,
    > {
        const FIELD: &str = "on_behalf_of_token";
        if application.kind != PrincipalKind::Application {
            return Err(Error::invalid(
                FIELD,
                "only an application may act for a member of staff",
            ));
        }
        let (verified, expires) = match self.verifier.verify_with_expiry(staff_token).await {
            Ok(verified) => verified,
            Err(e) if e.code == sharedcare_kit::error::Code::Unauthenticated => {
                return Err(Error::invalid(
                    FIELD,
                    format!("does not verify: {}", e.message),
                ));
            }
            Err(e) => return Err(e),
        };
        if verified.kind != PrincipalKind::Staff || verified.acting_application.is_some() {
            return Err(Error::invalid(FIELD, "must be a staff member's own token"));
        }
        let staff = self
            .store
            .get_principal(&verified.id)
            .await?
            .filter(|p| p.kind == PrincipalKind::Staff)
            .ok_or_else(|| Error::invalid(FIELD, "names no staff member"))?;
        if staff.organisation.is_none() || staff.organisation != application.organisation {
            return Err(Error::invalid(
                FIELD,
                "names a member of staff at another organisation",
            ));
        }
        let act = sharedcare_kit::auth::ActClaim {
            sub: application.id.clone(),
            name: application.display_name.clone(),
        };
        let subject = Principal {
            scopes: staff
                .scopes
                .iter()
                .filter(|s| application.scopes.contains(s))
                .cloned()
                .collect(),
            purposes: staff
                .purposes
                .iter()
                .filter(|p| application.purposes.contains(p))
                .copied()
                .collect(),
            ..staff
        };
        if subject.purposes.is_empty() {
            return Err(Error::permission_denied(
                "the application and the member of staff share no purpose of use",
            )
            .with_reason("PURPOSE_NOT_PERMITTED"));
        }
        Ok((
            subject,
            Some(act),
            chrono::DateTime::from_timestamp(expires, 0),
        ))
    }

    /// The capabilities a principal's tokens carry: its role's, for staff.
    fn capabilities(&self, principal: &Principal) -> BTreeSet<sharedcare_kit::access::Capability> {
        if principal.kind == PrincipalKind::Staff {
            self.roles.capabilities(&principal.role)
        } else {
            BTreeSet::new()
        }
    }
}

/// What a demographic access by `principal` says in audit.
fn patient_access<'a>(
    principal: &'a Caller,
    patient_id: &'a str,
    action: Action,
    purpose: Purpose,
) -> AccessEvent<'a> {
    AccessEvent {
        principal,
        patient_id,
        action,
        purpose,
        resource_type: "Patient",
        record_id: patient_id,
        source_service: crate::SERVICE_NAME,
        break_glass: None,
    }
}

const MAX_ID_CHARS: usize = 64;
/// Most candidates a confirmed new registration records as other people
/// (as many as an AMBIGUOUS answer shows).
const MAX_APART: usize = 50;
const MAX_TEXT_CHARS: usize = 200;

fn required_id(field: &str, value: &str) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(Error::invalid(
            field,
            format!("is at most {MAX_ID_CHARS} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// Two patient ids a request names, each present, and not the same.
fn two_patient_ids(
    (first_field, first): (&str, &str),
    (second_field, second): (&str, &str),
) -> Result<(String, String), Error> {
    let first = required_id(first_field, first)?;
    let second = required_id(second_field, second)?;
    if first == second {
        return Err(Error::invalid(
            second_field,
            format!("must name another patient than {first_field}"),
        ));
    }
    Ok((first, second))
}

fn required_text(field: &str, value: &str) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::invalid(
            field,
            format!("is at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(value.to_owned())
}

fn gender_from_pb(field: &str, value: i32) -> Result<Gender, Error> {
    Ok(match pb::Gender::try_from(value) {
        Ok(pb::Gender::Unspecified) => Gender::Unspecified,
        Ok(pb::Gender::Male) => Gender::Male,
        Ok(pb::Gender::Female) => Gender::Female,
        Ok(pb::Gender::Other) => Gender::Other,
        Ok(pb::Gender::Unknown) => Gender::Unknown,
        Err(_) => return Err(Error::invalid(field, format!("unknown value {value}"))),
    })
}

fn gender_to_pb(gender: Gender) -> pb::Gender {
    match gender {
        Gender::Unspecified => pb::Gender::Unspecified,
        Gender::Male => pb::Gender::Male,
        Gender::Female => pb::Gender::Female,
        Gender::Other => pb::Gender::Other,
        Gender::Unknown => pb::Gender::Unknown,
    }
}

/// A patient as `caller` may see them: a restricted record's address,
/// telecom and GP practice withheld unless their role has
/// `view_restricted`. Every patient a response carries goes through here.
fn patient_to_pb(p: Patient, caller: &Caller) -> pb::Patient {
    let mut patient = patient_fields(p);
    withhold(caller, &mut patient);
    patient
}

fn patient_fields(p: Patient) -> pb::Patient {
    let d = p.demographics;
    pb::Patient {
        patient_id: p.id,
        nhs_number: p.nhs_number.as_str().to_owned(),
        demographics: Some(pb::Demographics {
            given_names: d.given_names,
            family_name: d.family_name,
            birth_date: d.birth_date.format("%Y-%m-%d").to_string(),
            gender: gender_to_pb(d.gender) as i32,
            postcode: d.postcode.unwrap_or_default(),
            previous_family_names: d.previous_family_names,
            death_date: d
                .death_date
                .map(|date| date.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            address_lines: d.address_lines,
            telecom: d
                .telecom
                .into_iter()
                .map(|c| pb::ContactPoint {
                    system: match c.system {
                        ContactSystem::Phone => pb::ContactSystem::Phone,
                        ContactSystem::Email => pb::ContactSystem::Email,
                    } as i32,
                    value: c.value,
                })
                .collect(),
            gp_practice_ods_code: d
                .gp_practice
                .map(|o| o.as_str().to_owned())
                .unwrap_or_default(),
            identifiers: d
                .identifiers
                .into_iter()
                .map(|i| pb::LocalIdentifier {
                    system: i.system,
                    value: i.value,
                    issuing_ods_code: i.issuing_organisation,
                })
                .collect(),
            restricted: d.restricted,
        }),
        create_time: Some(to_proto(p.created_at)),
        update_time: Some(to_proto(p.updated_at)),
        superseded_by: p.superseded_by.unwrap_or_default(),
        version: p.version,
        details_withheld: false,
    }
}

/// A change of registered GP practice makes or moves the practice's
/// registered-GP care relationship in consent, so only one who could assert
/// that relationship makes it: staff with `assert_relationships`, or an
/// application with `consent.write`, acting for the practice itself —
/// registering the patient with it, or ending its own registration.
fn may_change_registration(
    caller: &Caller,
    before: Option<&OdsCode>,
    after: Option<&OdsCode>,
) -> bool {
    if before == after {
        return true;
    }
    let asserts = match caller.kind {
        PrincipalKind::Staff => caller.has(sharedcare_kit::access::Capability::AssertRelationships),
        PrincipalKind::Application => caller.scopes.contains("consent.write"),
        _ => false,
    };
    let own = |code: Option<&OdsCode>| code.is_none_or(|c| c.as_str() == caller.organisation);
    asserts && own(after) && (after.is_some() || own(before))
}

/// [`may_change_registration`], or PERMISSION_DENIED naming `field`.
fn check_registration_change(
    caller: &Caller,
    field: &str,
    before: Option<&OdsCode>,
    after: Option<&OdsCode>,
) -> Result<(), Error> {
    if may_change_registration(caller, before, after) {
        return Ok(());
    }
    Err(Error::permission_denied(format!(
        "{field}: a patient's registered GP practice is changed only by the practice itself \
         (registering the patient, or ending its own registration), by staff with \
         assert_relationships or an application with consent.write acting for it"
    ))
    .with_reason("NOT_OWN_ORGANISATION"))
}

/// Whether `caller` may see what a restricted record withholds.
fn may_see_restricted(caller: &Caller) -> bool {
    caller.has(sharedcare_kit::access::Capability::ViewRestricted)
}

fn withhold(caller: &Caller, patient: &mut pb::Patient) {
    let restricted = patient.demographics.as_ref().is_some_and(|d| d.restricted);
    if !restricted || may_see_restricted(caller) {
        return;
    }
    if let Some(d) = patient.demographics.as_mut() {
        d.postcode.clear();
        d.address_lines.clear();
        d.telecom.clear();
        d.gp_practice_ods_code.clear();
    }
    patient.details_withheld = true;
}

/// Demographics as a request gives them, validated; `prefix` is their path.
fn demographics_from_pb(
    prefix: &str,
    d: &pb::Demographics,
    today: chrono::NaiveDate,
) -> Result<Demographics, Error> {
    let telecom = d
        .telecom
        .iter()
        .map(|c| {
            let system = match pb::ContactSystem::try_from(c.system) {
                Ok(pb::ContactSystem::Phone) => Some(ContactSystem::Phone),
                Ok(pb::ContactSystem::Email) => Some(ContactSystem::Email),
                _ => None,
            };
            (system, c.value.clone())
        })
        .collect();
    Demographics::parse(
        prefix,
        &d.given_names,
        &d.family_name,
        &d.birth_date,
        gender_from_pb(&format!("{prefix}.gender"), d.gender)?,
        &d.postcode,
        today,
    )?
    .with_details(
        prefix,
        RawDetails {
            previous_family_names: d.previous_family_names.clone(),
            death_date: d.death_date.clone(),
            address_lines: d.address_lines.clone(),
            telecom,
            gp_practice: d.gp_practice_ods_code.clone(),
            identifiers: d
                .identifiers
                .iter()
                .map(|i| {
                    (
                        i.system.clone(),
                        i.value.clone(),
                        i.issuing_ods_code.clone(),
                    )
                })
                .collect(),
            restricted: d.restricted,
        },
        today,
    )
}

fn organisation_to_pb(o: Organisation) -> pb::Organisation {
    pb::Organisation {
        ods_code: o.ods_code.as_str().to_owned(),
        name: o.name,
        create_time: Some(to_proto(o.created_at)),
    }
}

fn principal_to_pb(p: Principal) -> pb::Principal {
    pb::Principal {
        principal_id: p.id,
        kind: p.kind as i32,
        display_name: p.display_name,
        organisation_ods_code: p
            .organisation
            .map(|o| o.as_str().to_owned())
            .unwrap_or_default(),
        role: p.role,
        scopes: p.scopes,
        client_id: p.client_id,
        create_time: Some(to_proto(p.created_at)),
        patient_id: p.patient_id.unwrap_or_default(),
        purposes: p.purposes.into_iter().map(|p| p as i32).collect(),
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "RegisterPatient"))]
    async fn register_patient(
        &self,
        request: Request<pb::RegisterPatientRequest>,
    ) -> Result<Response<pb::RegisterPatientResponse>, Status> {
        let grant = grant(&request)?;
        // No registration that could not be audited in time.
        self.peers.outbox.admit()?;
        let req = request.into_inner();
        let nhs_number = if req.nhs_number.trim().is_empty() {
            None
        } else {
            Some(NhsNumber::parse("nhs_number", &req.nhs_number)?)
        };
        let d = req
            .demographics
            .ok_or_else(|| Error::invalid("demographics", "is required"))?;
        let now = chrono::Utc::now();
        let demographics = demographics_from_pb("demographics", &d, now.date_naive())?;
        let caller = &grant.principal;
        if req.confirm_new_patient {
            Self::check_may_confirm(caller)?;
        }
        let purpose = caller.purpose.unwrap_or(Purpose::Unspecified);
        let found = self
            .find_registered(caller, purpose, nhs_number.as_ref(), &demographics)
            .await?;
        let answer = |patient: Option<Patient>, outcome, candidates: Vec<pb::TraceMatch>| {
            let patient = patient.map(|p| patient_to_pb(p, caller));
            pb::RegisterPatientResponse {
                created: outcome == pb::RegisterOutcome::Created,
                patient,
                outcome: outcome as i32,
                candidates,
            }
        };
        let apart = match found {
            Found::ByNhsNumber(p) => {
                let access = patient_access(caller, &p.id, Action::Read, purpose);
                self.audit(&access, Outcome::Success, "", "").await?;
                let p = self
                    .register_found_with_practice(caller, purpose, p, &demographics)
                    .await?;
                return Ok(Response::new(answer(
                    Some(p),
                    pb::RegisterOutcome::MatchedNhsNumber,
                    Vec::new(),
                )));
            }
            Found::ByDemographics(m) => {
                let access = patient_access(caller, &m.item.0.id, Action::Read, purpose);
                self.audit(&access, Outcome::Success, "", "").await?;
                let explained = Self::explain(&m, caller);
                let p = self
                    .register_found_with_practice(caller, purpose, m.item.0, &demographics)
                    .await?;
                return Ok(Response::new(answer(
                    Some(p),
                    pb::RegisterOutcome::MatchedDemographics,
                    vec![explained],
                )));
            }
            Found::Ambiguous(ranked) if req.confirm_new_patient && nhs_number.is_some() => ranked
                .into_iter()
                .take(MAX_APART)
                .map(|r| r.item.0.id)
                .collect(),
            Found::Ambiguous(ranked) => {
                let candidates = self.show_candidates(caller, purpose, ranked).await?;
                return Ok(Response::new(answer(
                    None,
                    pb::RegisterOutcome::Ambiguous,
                    candidates,
                )));
            }
            Found::New { apart } => apart,
        };
        // Only `find_registered` returns New or Ambiguous with a number.
        let Some(nhs_number) = nhs_number else {
            return Err(Error::failed_precondition(
                "nhs_number: a new patient needs an NHS number",
            )
            .into());
        };
        check_registration_change(
            caller,
            "demographics.gp_practice_ods_code",
            None,
            demographics.gp_practice.as_ref(),
        )?;
        let id = uuid::Uuid::now_v7().to_string();
        let apart = apart
            .iter()
            .map(|other| {
                NotSamePerson::new(&id, other, "registered as a new patient", &caller.id, now)
            })
            .collect();
        // A new registration and its audit event commit together.
        let creation =
            patient_access(caller, &id, Action::Create, purpose).event(Outcome::Success, "", "");
        let registered = self
            .store
            .register_patient_apart(
                Patient {
                    id: id.clone(),
                    nhs_number,
                    demographics: demographics.clone(),
                    created_at: now,
                    updated_at: now,
                    superseded_by: None,
                    version: 1,
                },
                apart,
                creation,
            )
            .await?;
        let response = match registered {
            Registered::Created(p) => {
                self.peers.outbox.wake();
                self.registrations.wake();
                answer(Some(p), pb::RegisterOutcome::Created, Vec::new())
            }
            // Registered with this number by someone else meanwhile.
            Registered::Existing(p) => {
                self.check_registered_details(caller, purpose, &p, &demographics)
                    .await?;
                let access = patient_access(caller, &p.id, Action::Read, purpose);
                self.audit(&access, Outcome::Success, "", "").await?;
                answer(Some(p), pb::RegisterOutcome::MatchedNhsNumber, Vec::new())
            }
        };
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetPatient"))]
    async fn get_patient(
        &self,
        request: Request<pb::GetPatientRequest>,
    ) -> Result<Response<pb::GetPatientResponse>, Status> {
        let grant = grant(&request)?;
        // No read that could not be audited in time.
        self.peers.outbox.admit()?;
        let id = required_id("patient_id", &request.get_ref().patient_id)?;
        // GetPatientRequest names no purpose: the token's default.
        let purpose = grant
            .principal
            .purpose_for("purpose", Purpose::Unspecified as i32)?;
        // A merged id is read as the patient standing for it now; consent
        // decides for that one (it follows merges too).
        let found = match self.store.get_patient(&id).await? {
            Some(p) => Some(self.current(p).await?),
            None => None,
        };
        let current_id = found.as_ref().map_or(id.clone(), |(p, _)| p.id.clone());
        let access = patient_access(&grant.principal, &current_id, Action::Read, purpose);
        // Consent before NOT_FOUND: whether a patient exists is data too.
        // A patient's own token names the id it was issued for.
        let own_by_old_id = grant.patients == Patients::Own && grant.check_own(&id).is_ok();
        let decision_id = if own_by_old_id {
            String::new()
        } else {
            self.decide_read(&grant, &access).await?
        };
        let Some((patient, resolved_from)) = found else {
            self.audit(&access, Outcome::Failed, "NOT_FOUND", &decision_id)
                .await?;
            return Err(Error::not_found("no patient with this patient_id").into());
        };
        self.audit(&access, Outcome::Success, "", &decision_id)
            .await?;
        Ok(Response::new(pb::GetPatientResponse {
            patient: Some(patient_to_pb(patient, &grant.principal)),
            resolved_from_patient_id: resolved_from.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ResolvePatient"))]
    async fn resolve_patient(
        &self,
        request: Request<pb::ResolvePatientRequest>,
    ) -> Result<Response<pb::ResolvePatientResponse>, Status> {
        grant(&request)?;
        let id = required_id("patient_id", &request.get_ref().patient_id)?;
        let patient = self
            .store
            .get_patient(&id)
            .await?
            .ok_or_else(|| Error::not_found("patient_id: no patient with this id"))?;
        let superseded_by = patient.superseded_by.clone().unwrap_or_default();
        let (current, _) = self.current(patient).await?;
        Ok(Response::new(pb::ResolvePatientResponse {
            patient_id: id,
            superseded_by,
            current_patient_id: current.id,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "TracePatient"))]
    async fn trace_patient(
        &self,
        request: Request<pb::TracePatientRequest>,
    ) -> Result<Response<pb::TracePatientResponse>, Status> {
        let grant = grant(&request)?;
        // No trace whose results could not be audited in time.
        self.peers.outbox.admit()?;
        Ok(Response::new(
            self.trace(&grant, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "MarkNotSamePerson"))]
    async fn mark_not_same_person(
        &self,
        request: Request<pb::MarkNotSamePersonRequest>,
    ) -> Result<Response<pb::MarkNotSamePersonResponse>, Status> {
        let grant = grant(&request)?;
        self.peers.outbox.admit()?;
        Ok(Response::new(
            self.mark_not_same(&grant, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "UpdateDemographics"))]
    async fn update_demographics(
        &self,
        request: Request<pb::UpdateDemographicsRequest>,
    ) -> Result<Response<pb::UpdateDemographicsResponse>, Status> {
        let grant = grant(&request)?;
        self.peers.outbox.admit()?;
        Ok(Response::new(
            self.update_demographics_for(&grant, request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "ListPatientVersions"))]
    async fn list_patient_versions(
        &self,
        request: Request<pb::ListPatientVersionsRequest>,
    ) -> Result<Response<pb::ListPatientVersionsResponse>, Status> {
        let grant = grant(&request)?;
        self.peers.outbox.admit()?;
        Ok(Response::new(
            self.list_versions_for(&grant, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "MergePatients"))]
    async fn merge_patients(
        &self,
        request: Request<pb::MergePatientsRequest>,
    ) -> Result<Response<pb::MergePatientsResponse>, Status> {
        let grant = grant(&request)?;
        self.peers.outbox.admit()?;
        Ok(Response::new(
            self.merge(&grant, request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "UnmergePatients"))]
    async fn unmerge_patients(
        &self,
        request: Request<pb::UnmergePatientsRequest>,
    ) -> Result<Response<pb::UnmergePatientsResponse>, Status> {
        let grant = grant(&request)?;
        self.peers.outbox.admit()?;
        Ok(Response::new(
            self.unmerge(&grant, request.into_inner()).await?,
        ))
    }

    type WatchPatientMergesStream =
        futures::stream::BoxStream<'static, Result<pb::PatientMergeEvent, Status>>;

    #[tracing::instrument(skip_all, fields(rpc = "WatchPatientMerges"))]
    async fn watch_patient_merges(
        &self,
        request: Request<pb::WatchPatientMergesRequest>,
    ) -> Result<Response<Self::WatchPatientMergesStream>, Status> {
        grant(&request)?;
        Ok(Response::new(
            self.watch_merges(request.get_ref().resume_after_sequence),
        ))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CreateOrganisation"))]
    async fn create_organisation(
        &self,
        request: Request<pb::CreateOrganisationRequest>,
    ) -> Result<Response<pb::CreateOrganisationResponse>, Status> {
        grant(&request)?;
        let req = request.into_inner();
        let org = Organisation {
            ods_code: OdsCode::parse("ods_code", &req.ods_code)?,
            name: required_text("name", &req.name)?,
            created_at: chrono::Utc::now(),
        };
        let org = self.store.create_organisation(org).await?;
        Ok(Response::new(pb::CreateOrganisationResponse {
            organisation: Some(organisation_to_pb(org)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetOrganisation"))]
    async fn get_organisation(
        &self,
        request: Request<pb::GetOrganisationRequest>,
    ) -> Result<Response<pb::GetOrganisationResponse>, Status> {
        grant(&request)?;
        let code = OdsCode::parse("ods_code", &request.get_ref().ods_code)?;
        let org = self
            .store
            .get_organisation(&code)
            .await?
            .ok_or_else(|| Error::not_found(format!("no organisation {code}")))?;
        Ok(Response::new(pb::GetOrganisationResponse {
            organisation: Some(organisation_to_pb(org)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "CreatePrincipal"))]
    async fn create_principal(
        &self,
        request: Request<pb::CreatePrincipalRequest>,
    ) -> Result<Response<pb::CreatePrincipalResponse>, Status> {
        grant(&request)?;
        let req = request.into_inner();
        let kind = match PrincipalKind::try_from(req.kind) {
            Ok(
                k @ (PrincipalKind::Staff
                | PrincipalKind::Application
                | PrincipalKind::Service
                | PrincipalKind::Patient),
            ) => k,
            _ => {
                return Err(Error::invalid(
                    "kind",
                    "must be STAFF, APPLICATION, SERVICE or PATIENT (admin principals come from \
                     bootstrap)",
                )
                .into());
            }
        };
        let display_name = required_text("display_name", &req.display_name)?;
        let is_patient = kind == PrincipalKind::Patient;
        let organisation = if is_patient {
            if !req.organisation_ods_code.trim().is_empty() {
                return Err(Error::invalid(
                    "organisation_ods_code",
                    "must be empty for a patient principal",
                )
                .into());
            }
            None
        } else {
            Some(OdsCode::parse(
                "organisation_ods_code",
                &req.organisation_ods_code,
            )?)
        };
        let role = match kind {
            PrincipalKind::Staff => {
                let role = parse_role("role", &req.role)?;
                if !self.roles.knows(&role) {
                    return Err(Error::invalid(
                        "role",
                        format!(
                            "unknown staff role `{role}`: staff may hold only the roles named \
                             in identity.roles"
                        ),
                    )
                    .into());
                }
                role
            }
            PrincipalKind::Patient if !req.role.trim().is_empty() => {
                return Err(Error::invalid("role", "must be empty for a patient principal").into());
            }
            _ if req.role.trim().is_empty() => String::new(),
            _ => parse_role("role", &req.role)?,
        };
        let scopes = scopes_for_kind("scopes", kind, &req.scopes, false)?;
        let purposes = purposes_for_kind(
            "purposes",
            kind,
            &purposes_from_pb("purposes", &req.purposes)?,
        )?;
        let patient_id = if is_patient {
            Some(required_id("patient_id", &req.patient_id)?)
        } else if !req.patient_id.trim().is_empty() {
            return Err(Error::invalid("patient_id", "is only for a patient principal").into());
        } else {
            None
        };
        if let Some(organisation) = &organisation
            && self.store.get_organisation(organisation).await?.is_none()
        {
            return Err(Error::failed_precondition(format!(
                "organisation {organisation} does not exist; create it first"
            ))
            .into());
        }
        if let Some(patient_id) = &patient_id
            && self.store.get_patient(patient_id).await?.is_none()
        {
            return Err(Error::failed_precondition(
                "no patient with this patient_id; register the patient first",
            )
            .into());
        }
        let secret = ClientSecret::generate();
        let principal = self
            .store
            .create_principal(Principal {
                id: uuid::Uuid::now_v7().to_string(),
                kind,
                display_name,
                organisation,
                role,
                scopes,
                purposes,
                patient_id,
                client_id: format!("sc-{}", uuid::Uuid::new_v4().simple()),
                secret_hash: secret.hash(),
                created_at: chrono::Utc::now(),
            })
            .await?;
        Ok(Response::new(pb::CreatePrincipalResponse {
            principal: Some(principal_to_pb(principal)),
            client_secret: secret.expose().to_owned(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "IssueToken"))]
    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let req = request.into_inner();
        let client_id = required_id("client_id", &req.client_id)?;
        self.tokens.admit(&client_id)?;
        if req.client_secret.is_empty() {
            return Err(Error::invalid("client_secret", "is required").into());
        }
        let service = match req.audience.trim() {
            "" => None,
            asked => Some(
                crate::tokens::SERVICE_AUDIENCES
                    .iter()
                    .copied()
                    .find(|s| *s == asked)
                    .ok_or_else(|| {
                        Error::invalid(
                            "audience",
                            format!(
                                "must be empty (every service) or one of {}",
                                crate::tokens::SERVICE_AUDIENCES.join(", ")
                            ),
                        )
                    })?,
            ),
        };
        let secret = ClientSecret::from_string(req.client_secret);
        // One answer for an unknown client and a wrong secret: no probing.
        let client = self
            .store
            .get_principal_by_client_id(&client_id)
            .await?
            .filter(|p| secret.matches(&p.secret_hash))
            .ok_or_else(|| Error::unauthenticated("client credentials do not match"))?;
        if self.store.revocation(&client.id).await?.is_some() {
            return Err(Error::unauthenticated("this principal has been revoked")
                .with_reason("PRINCIPAL_REVOKED")
                .into());
        }
        // Who the token is for: the client, or the member of staff an
        // application acts for (with the application named in `act`).
        let (principal, acting, expires_by) = if req.on_behalf_of_token.trim().is_empty() {
            (client, None, None)
        } else {
            self.acting_for(client, req.on_behalf_of_token.trim())
                .await?
        };
        self.tokens.reload(self.store.as_ref()).await?;
        let scopes = if req.scopes.is_empty() {
            principal.scopes.clone()
        } else {
            let asked = validate_scopes("scopes", &req.scopes)?;
            if let Some(extra) = asked.iter().find(|s| !principal.scopes.contains(s)) {
                return Err(Error::invalid(
                    "scopes",
                    format!("scope `{extra}` is not granted to this client"),
                )
                .into());
            }
            asked
        };
        let purpose = match Purpose::try_from(req.purpose) {
            Err(_) => {
                return Err(
                    Error::invalid("purpose", format!("unknown purpose {}", req.purpose)).into(),
                );
            }
            // Unspecified: the first permitted, or none for a principal
            // without purposes (services, admin).
            Ok(Purpose::Unspecified) => principal.purposes.first().copied(),
            Ok(p) if principal.purposes.contains(&p) => Some(p),
            Ok(p) => {
                return Err(Error::permission_denied(format!(
                    "purpose `{}` is not permitted to this client{}",
                    purpose_to_str(p),
                    if acting.is_some() {
                        " acting for this member of staff"
                    } else {
                        ""
                    }
                ))
                .with_reason("PURPOSE_NOT_PERMITTED")
                .into());
            }
        };
        let capabilities = self.capabilities(&principal);
        let organisation_name = match &principal.organisation {
            Some(code) => self
                .store
                .get_organisation(code)
                .await?
                .map(|o| o.name)
                .unwrap_or_default(),
            None => String::new(),
        };
        let issued = self.tokens.issue_with(
            &principal,
            &organisation_name,
            &scopes,
            purpose,
            &capabilities,
            crate::tokens::Extras {
                service,
                acting_application: acting,
                expires_by,
            },
        )?;
        Ok(Response::new(pb::IssueTokenResponse {
            access_token: issued.token,
            token_type: "Bearer".into(),
            expire_time: Some(to_proto(issued.expires_at)),
        }))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        // Keys another replica rotated in are published here too.
        self.tokens.reload(self.store.as_ref()).await?;
        Ok(Response::new(pb::GetJwksResponse {
            keys: self.tokens.jwks(),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "IntrospectToken"))]
    async fn introspect_token(
        &self,
        request: Request<pb::IntrospectTokenRequest>,
    ) -> Result<Response<pb::IntrospectTokenResponse>, Status> {
        grant(&request)?;
        let token = request.into_inner().token;
        if token.trim().is_empty() {
            return Err(Error::invalid("token", "is required").into());
        }
        // Any failure is simply "not active": why is not the caller's to
        // learn (RFC 7662 §2.2). The verifier refuses a revoked principal's
        // token, reading identity's store afresh.
        let Ok((principal, expires)) = self.verifier.verify_with_expiry(token.trim()).await else {
            return Ok(Response::new(pb::IntrospectTokenResponse::default()));
        };
        Ok(Response::new(pb::IntrospectTokenResponse {
            active: true,
            scopes: principal.scopes.iter().cloned().collect(),
            purposes: principal.purposes.iter().map(|p| *p as i32).collect(),
            expire_time: chrono::DateTime::from_timestamp(expires, 0).map(to_proto),
            actor: Some(principal.actor()),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RotateSigningKey"))]
    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        grant(&request)?;
        let (kid, retire) = self.tokens.rotate(self.store.as_ref()).await?;
        Ok(Response::new(pb::RotateSigningKeyResponse {
            kid,
            published_kids: self.tokens.jwks().into_iter().map(|k| k.kid).collect(),
            previous_keys_retire_time: Some(to_proto(retire)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "RevokePrincipal"))]
    async fn revoke_principal(
        &self,
        request: Request<pb::RevokePrincipalRequest>,
    ) -> Result<Response<pb::RevokePrincipalResponse>, Status> {
        let grant = grant(&request)?;
        let id = required_id("principal_id", &request.get_ref().principal_id)?;
        if id == grant.principal.id {
            // The platform would lose its administrator.
            return Err(Error::invalid("principal_id", "is the caller's own").into());
        }
        if self.store.get_principal(&id).await?.is_none() {
            return Err(Error::not_found("no principal with this principal_id").into());
        }
        let (revoked_at, already) = self.store.revoke_principal(&id, chrono::Utc::now()).await?;
        tracing::info!(principal_id = %id, already, "principal revoked");
        Ok(Response::new(pb::RevokePrincipalResponse {
            principal_id: id,
            revoke_time: Some(to_proto(revoked_at)),
            already_revoked: already,
        }))
    }

    async fn list_revocations(
        &self,
        _request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        let live = crate::tokens::StoreRevocations {
            store: self.store.clone(),
            ttl_secs: self.tokens.ttl_secs(),
        };
        Ok(Response::new(pb::ListRevocationsResponse {
            principal_ids: live.live().await?,
        }))
    }
}
