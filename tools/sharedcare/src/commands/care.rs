//! `sharedcare care-relationship`, `refer` and `end-relationship`: an
//! organisation caring for a patient, the legitimate relationship consent
//! permits direct care on. An organisation asserts relationships only for
//! itself (its PAS, or staff whose role may assert them); a referral is how
//! it brings in another organisation; it ends only its own.

use clap::{Args, ValueEnum};
use sharedcare_proto::consent::v1::{
    CareRelationship, CareRelationshipKind, EndCareRelationshipRequest,
    ListCareRelationshipsRequest, RecordCareRelationshipRequest, ReferPatientRequest,
};

use crate::output::out;
use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
    labels,
};

#[derive(Debug, Args)]
pub struct CareRelationshipArgs {
    /// Patient id.
    #[arg(long)]
    pub patient: String,
    /// ODS code of the caring organisation: the caller's own.
    #[arg(long)]
    pub ods: String,
    /// What kind of care (a referral is made with `sharedcare refer`).
    #[arg(long, value_enum, default_value_t = KindArg::RegisteredGp)]
    pub kind: KindArg,
    /// Only this staff member (principal id) of the organisation.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub staff: String,
    /// The team caring for the patient.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub team: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    RegisteredGp,
    HospitalEpisode,
    CareHomePlacement,
    CommunityCare,
    SocialCareTeam,
}

impl KindArg {
    pub(crate) fn to_proto(self) -> CareRelationshipKind {
        match self {
            KindArg::RegisteredGp => CareRelationshipKind::RegisteredGp,
            KindArg::HospitalEpisode => CareRelationshipKind::HospitalEpisode,
            KindArg::CareHomePlacement => CareRelationshipKind::CareHomePlacement,
            KindArg::CommunityCare => CareRelationshipKind::CommunityCare,
            KindArg::SocialCareTeam => CareRelationshipKind::SocialCareTeam,
        }
    }
}

#[derive(Debug, Args)]
pub struct ReferArgs {
    /// Patient id; the caller's organisation must be caring for them.
    #[arg(long)]
    pub patient: String,
    /// ODS code of the organisation the patient is referred to.
    #[arg(long)]
    pub ods: String,
}

#[derive(Debug, Args)]
pub struct EndArgs {
    /// Patient id.
    #[arg(long)]
    pub patient: String,
    /// The relationship to end (one of the caller's organisation's), as
    /// printed when it was recorded.
    #[arg(long)]
    pub relationship: String,
}

/// Calls RecordCareRelationship, starting now and open-ended.
pub async fn record(
    services: &Services,
    args: CareRelationshipArgs,
) -> anyhow::Result<CareRelationship> {
    let response = services
        .consent()?
        .record_care_relationship(bearer(
            RecordCareRelationshipRequest {
                patient_id: args.patient,
                organisation_ods_code: args.ods,
                kind: args.kind.to_proto() as i32,
                start_time: None,
                end_time: None,
                staff_principal_id: args.staff,
                team: args.team,
            },
            services.token()?,
        )?)
        .await
        .grpc()?;
    Ok(response.relationship.unwrap_or_default())
}

/// Calls ReferPatient, starting now and open-ended.
pub async fn refer(services: &Services, args: ReferArgs) -> anyhow::Result<CareRelationship> {
    let response = services
        .consent()?
        .refer_patient(bearer(
            ReferPatientRequest {
                patient_id: args.patient,
                organisation_ods_code: args.ods,
                start_time: None,
                end_time: None,
            },
            services.token()?,
        )?)
        .await
        .grpc()?;
    Ok(response.relationship.unwrap_or_default())
}

/// Calls ListCareRelationships page after page: the patient's current
/// care relationships.
pub async fn list(services: &Services, patient: &str) -> anyhow::Result<Vec<CareRelationship>> {
    let mut client = services.consent()?;
    let mut page_token = String::new();
    let mut relationships = Vec::new();
    loop {
        let page = client
            .list_care_relationships(bearer(
                ListCareRelationshipsRequest {
                    patient_id: patient.to_owned(),
                    page_size: 100,
                    page_token,
                    include_ended: false,
                },
                services.token()?,
            )?)
            .await
            .grpc()?;
        relationships.extend(page.relationships);
        if page.next_page_token.is_empty() {
            return Ok(relationships);
        }
        page_token = page.next_page_token;
    }
}

/// Calls EndCareRelationship, ending it now.
pub async fn end(services: &Services, args: EndArgs) -> anyhow::Result<CareRelationship> {
    let response = services
        .consent()?
        .end_care_relationship(bearer(
            EndCareRelationshipRequest {
                patient_id: args.patient,
                relationship_id: args.relationship,
                end_time: None,
            },
            services.token()?,
        )?)
        .await
        .grpc()?;
    Ok(response.relationship.unwrap_or_default())
}

pub async fn run(services: &Services, args: CareRelationshipArgs) -> anyhow::Result<()> {
    print(&record(services, args).await?);
    Ok(())
}

pub async fn run_refer(services: &Services, args: ReferArgs) -> anyhow::Result<()> {
    print(&refer(services, args).await?);
    Ok(())
}

pub async fn run_end(services: &Services, args: EndArgs) -> anyhow::Result<()> {
    print(&end(services, args).await?);
    Ok(())
}

pub fn print(relationship: &CareRelationship) {
    out!("relationship_id: {}", relationship.relationship_id);
    out!("patient_id:      {}", relationship.patient_id);
    out!("organisation:    {}", relationship.organisation_ods_code);
    out!(
        "kind:            {}",
        labels::relationship_kind(relationship.kind)
    );
    out!(
        "start:           {}",
        labels::time(relationship.start_time.as_ref())
    );
    if relationship.end_time.is_some() {
        out!(
            "end:             {}",
            labels::time(relationship.end_time.as_ref())
        );
    }
    out!(
        "recorded_by:     {} ({})",
        relationship.recorded_by,
        relationship.recorded_by_ods_code
    );
    if !relationship.ended_by.is_empty() {
        out!("ended_by:        {}", relationship.ended_by);
    }
}
