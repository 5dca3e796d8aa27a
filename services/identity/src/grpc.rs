//! The gRPC edge of identity: decode → domain → encode. The only module that
//! knows request and response types.

use std::sync::Arc;

use sharedcare_kit::{Error, auth::authorize, proto_time::to_proto};
use sharedcare_proto::{
    common::v1::{PrincipalKind, Purpose},
    identity::v1::{self as pb, identity_service_server::IdentityService},
};
use tonic::{Request, Response, Status};

use crate::{
    TokenIssuer,
    domain::{
        ClientSecret, Demographics, Gender, NhsNumber, OdsCode, Organisation, Patient, Principal,
        default_scopes, validate_scopes,
    },
    store::{IdentityStore, Registered},
};

pub struct IdentityGrpc {
    store: Arc<dyn IdentityStore>,
    tokens: Arc<TokenIssuer>,
}

impl IdentityGrpc {
    pub fn new(store: Arc<dyn IdentityStore>, tokens: Arc<TokenIssuer>) -> Self {
        IdentityGrpc { store, tokens }
    }
}

const MAX_ID_CHARS: usize = 64;
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

fn patient_to_pb(p: Patient) -> pb::Patient {
    pb::Patient {
        patient_id: p.id,
        nhs_number: p.nhs_number.as_str().to_owned(),
        demographics: Some(pb::Demographics {
            given_names: p.demographics.given_names,
            family_name: p.demographics.family_name,
            birth_date: p.demographics.birth_date.format("%Y-%m-%d").to_string(),
            gender: gender_to_pb(p.demographics.gender) as i32,
            postcode: p.demographics.postcode.unwrap_or_default(),
        }),
        create_time: Some(to_proto(p.created_at)),
        update_time: Some(to_proto(p.updated_at)),
        superseded_by: p.superseded_by.unwrap_or_default(),
    }
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
        organisation_ods_code: p.organisation.as_str().to_owned(),
        role: p.role,
        scopes: p.scopes,
        client_id: p.client_id,
        create_time: Some(to_proto(p.created_at)),
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "RegisterPatient"))]
    async fn register_patient(
        &self,
        request: Request<pb::RegisterPatientRequest>,
    ) -> Result<Response<pb::RegisterPatientResponse>, Status> {
        authorize(&request, "patients.write")?;
        let req = request.into_inner();
        let nhs_number = NhsNumber::parse("nhs_number", &req.nhs_number)?;
        let d = req
            .demographics
            .ok_or_else(|| Error::invalid("demographics", "is required"))?;
        let now = chrono::Utc::now();
        let demographics = Demographics::parse(
            "demographics",
            &d.given_names,
            &d.family_name,
            &d.birth_date,
            gender_from_pb("demographics.gender", d.gender)?,
            &d.postcode,
            now.date_naive(),
        )?;
        let registered = self
            .store
            .register_patient(Patient {
                id: uuid::Uuid::now_v7().to_string(),
                nhs_number,
                demographics,
                created_at: now,
                updated_at: now,
                superseded_by: None,
            })
            .await?;
        let (patient, created) = match registered {
            Registered::Created(p) => (p, true),
            Registered::Existing(p) => (p, false),
        };
        Ok(Response::new(pb::RegisterPatientResponse {
            patient: Some(patient_to_pb(patient)),
            created,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetPatient"))]
    async fn get_patient(
        &self,
        request: Request<pb::GetPatientRequest>,
    ) -> Result<Response<pb::GetPatientResponse>, Status> {
        authorize(&request, "patients.read")?;
        let id = required_id("patient_id", &request.get_ref().patient_id)?;
        let patient = self
            .store
            .get_patient(&id)
            .await?
            .ok_or_else(|| Error::not_found("no patient with this patient_id"))?;
        Ok(Response::new(pb::GetPatientResponse {
            patient: Some(patient_to_pb(patient)),
        }))
    }

    async fn trace_patient(
        &self,
        request: Request<pb::TracePatientRequest>,
    ) -> Result<Response<pb::TracePatientResponse>, Status> {
        authorize(&request, "patients.read")?;
        Err(Error::unimplemented("TracePatient", "the patient tracing issue").into())
    }

    async fn merge_patients(
        &self,
        request: Request<pb::MergePatientsRequest>,
    ) -> Result<Response<pb::MergePatientsResponse>, Status> {
        authorize(&request, "patients.write")?;
        Err(Error::unimplemented("MergePatients", "the patient merge issue").into())
    }

    #[tracing::instrument(skip_all, fields(rpc = "CreateOrganisation"))]
    async fn create_organisation(
        &self,
        request: Request<pb::CreateOrganisationRequest>,
    ) -> Result<Response<pb::CreateOrganisationResponse>, Status> {
        authorize(&request, "admin")?;
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
        authorize(&request, "patients.read")?;
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
        authorize(&request, "admin")?;
        let req = request.into_inner();
        let kind = match PrincipalKind::try_from(req.kind) {
            Ok(
                k @ (PrincipalKind::Staff | PrincipalKind::Application | PrincipalKind::Service),
            ) => k,
            _ => {
                return Err(Error::invalid(
                    "kind",
                    "must be STAFF, APPLICATION or SERVICE (admin principals come from bootstrap)",
                )
                .into());
            }
        };
        let display_name = required_text("display_name", &req.display_name)?;
        let organisation = OdsCode::parse("organisation_ods_code", &req.organisation_ods_code)?;
        let role = if kind == PrincipalKind::Staff {
            required_id("role", &req.role)?
        } else {
            req.role.trim().to_owned()
        };
        let scopes = if req.scopes.is_empty() {
            default_scopes(kind)
        } else {
            validate_scopes("scopes", &req.scopes)?
        };
        if scopes.iter().any(|s| s == "admin") {
            return Err(Error::invalid("scopes", "`admin` is granted only by bootstrap").into());
        }
        if self.store.get_organisation(&organisation).await?.is_none() {
            return Err(Error::failed_precondition(format!(
                "organisation {organisation} does not exist; create it first"
            ))
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
        if req.client_secret.is_empty() {
            return Err(Error::invalid("client_secret", "is required").into());
        }
        let secret = ClientSecret::from_string(req.client_secret);
        // One answer for an unknown client and a wrong secret: no probing.
        let principal = self
            .store
            .get_principal_by_client_id(&client_id)
            .await?
            .filter(|p| secret.matches(&p.secret_hash))
            .ok_or_else(|| Error::unauthenticated("client credentials do not match"))?;
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
            Ok(Purpose::Unspecified) => Purpose::DirectCare,
            Ok(p) => p,
            Err(_) => return Err(Error::invalid("purpose", "unknown purpose").into()),
        };
        let issued = self.tokens.issue(&principal, &scopes, purpose)?;
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
        Ok(Response::new(pb::GetJwksResponse {
            keys: self.tokens.jwks(),
        }))
    }
}
