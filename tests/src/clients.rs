//! Calling the platform as a test does: a channel to each service and the
//! steps most tests begin with (tokens, organisations, principals, a
//! patient in someone's care), whether the services run in this process or
//! as processes of their own.

use sharedcare_kit::testing::with_token;
use sharedcare_proto::{
    common::v1::{PrincipalKind, Purpose},
    consent::v1::{self as consent, consent_service_client::ConsentServiceClient},
    identity::v1::{
        self as identity, CreateOrganisationRequest, CreatePrincipalRequest, IssueTokenRequest,
        identity_service_client::IdentityServiceClient,
    },
    records::v1::{self as records, records_service_client::RecordsServiceClient},
};
use tonic::transport::Channel;

use crate::{ADMIN_CLIENT_ID, ADMIN_SECRET, allergy};

/// A channel to each service.
#[derive(Clone)]
pub struct Clients {
    pub identity: Channel,
    pub consent: Channel,
    pub records: Channel,
    pub audit: Channel,
}

impl Clients {
    /// Siân O'Brien (NHS number 999 000 0018), registered by the GP
    /// practice A81001's PAS `gp_pas`, which asserts it is her registered
    /// GP; `gp` writes her an AllergyIntolerance. Her patient id and the
    /// record.
    pub async fn cared_for_patient(&self, gp_pas: &str, gp: &str) -> (String, records::Record) {
        let patient_id = IdentityServiceClient::new(self.identity.clone())
            .register_patient(with_token(
                identity::RegisterPatientRequest {
                    confirm_new_patient: false,
                    nhs_number: "999 000 0018".into(),
                    demographics: Some(identity::Demographics {
                        given_names: vec!["Siân".into()],
                        family_name: "O'Brien".into(),
                        birth_date: "1961-07-14".into(),
                        gender: identity::Gender::Female as i32,
                        postcode: "LS1 4AP".into(),
                        ..Default::default()
                    }),
                },
                gp_pas,
            ))
            .await
            .expect("registered")
            .into_inner()
            .patient
            .expect("patient")
            .patient_id;
        ConsentServiceClient::new(self.consent.clone())
            .record_care_relationship(with_token(
                consent::RecordCareRelationshipRequest {
                    patient_id: patient_id.clone(),
                    organisation_ods_code: "A81001".into(),
                    kind: consent::CareRelationshipKind::RegisteredGp as i32,
                    ..Default::default()
                },
                gp_pas,
            ))
            .await
            .expect("the GP cares for the patient");
        let created = RecordsServiceClient::new(self.records.clone())
            .create_record(with_token(allergy(&patient_id), gp))
            .await
            .expect("created")
            .into_inner()
            .record
            .expect("record");
        (patient_id, created)
    }

    /// A token for a client, from identity.
    pub async fn token(&self, client_id: &str, secret: &str) -> String {
        IdentityServiceClient::new(self.identity.clone())
            .issue_token(IssueTokenRequest {
                client_id: client_id.into(),
                client_secret: secret.into(),
                scopes: vec![],
                purpose: 0,
                ..Default::default()
            })
            .await
            .expect("token issued")
            .into_inner()
            .access_token
    }

    pub async fn admin_token(&self) -> String {
        self.token(ADMIN_CLIENT_ID, ADMIN_SECRET).await
    }

    /// Adds an organisation (as admin).
    pub async fn organisation(&self, admin: &str, ods: &str) {
        IdentityServiceClient::new(self.identity.clone())
            .create_organisation(with_token(
                CreateOrganisationRequest {
                    ods_code: ods.into(),
                    name: format!("Organisation {ods}"),
                },
                admin,
            ))
            .await
            .expect("organisation created");
    }

    /// Creates a principal (as admin) and returns a token for it.
    pub async fn principal(&self, admin: &str, request: CreatePrincipalRequest) -> String {
        self.principal_with_purpose(admin, request, Purpose::Unspecified)
            .await
    }

    /// Creates a principal and returns a token for `purpose`.
    pub async fn principal_with_purpose(
        &self,
        admin: &str,
        request: CreatePrincipalRequest,
        purpose: Purpose,
    ) -> String {
        let created = IdentityServiceClient::new(self.identity.clone())
            .create_principal(with_token(request, admin))
            .await
            .expect("principal created")
            .into_inner();
        let client_id = created.principal.expect("principal").client_id;
        IdentityServiceClient::new(self.identity.clone())
            .issue_token(IssueTokenRequest {
                client_id,
                client_secret: created.client_secret,
                scopes: vec![],
                purpose: purpose as i32,
                ..Default::default()
            })
            .await
            .expect("token issued")
            .into_inner()
            .access_token
    }

    /// Creates a principal (as admin): its id, client id and secret.
    pub async fn credentials(
        &self,
        admin: &str,
        request: CreatePrincipalRequest,
    ) -> (String, String, String) {
        let created = IdentityServiceClient::new(self.identity.clone())
            .create_principal(with_token(request, admin))
            .await
            .expect("principal created")
            .into_inner();
        let principal = created.principal.expect("principal");
        (
            principal.principal_id,
            principal.client_id,
            created.client_secret,
        )
    }

    /// A member of staff at `ods` in `role` (default scopes; capabilities
    /// from identity's role map).
    pub async fn staff(&self, admin: &str, ods: &str, role: &str) -> String {
        self.principal(
            admin,
            CreatePrincipalRequest {
                kind: PrincipalKind::Staff as i32,
                display_name: format!("{role} at {ods}"),
                organisation_ods_code: ods.into(),
                role: role.into(),
                ..Default::default()
            },
        )
        .await
    }

    /// The organisation's patient administration system: an application
    /// that registers patients and asserts its organisation's relationships.
    pub async fn pas(&self, admin: &str, ods: &str) -> String {
        self.principal(
            admin,
            CreatePrincipalRequest {
                kind: PrincipalKind::Application as i32,
                display_name: format!("PAS at {ods}"),
                organisation_ods_code: ods.into(),
                scopes: [
                    "patients.read",
                    "patients.write",
                    "records.read",
                    "records.write",
                    "consent.read",
                    "consent.write",
                ]
                .map(str::to_owned)
                .to_vec(),
                ..Default::default()
            },
        )
        .await
    }

    /// The patient, signed in for themselves.
    pub async fn patient(&self, admin: &str, patient_id: &str) -> String {
        self.principal(
            admin,
            CreatePrincipalRequest {
                kind: PrincipalKind::Patient as i32,
                display_name: "the patient".into(),
                patient_id: patient_id.into(),
                ..Default::default()
            },
        )
        .await
    }
}
