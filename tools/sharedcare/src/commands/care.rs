//! `sharedcare care-relationship`: an organisation caring for a patient,
//! the legitimate relationship consent permits direct care on.

use clap::{Args, ValueEnum};
use sharedcare_proto::consent::v1::{
    CareRelationship, CareRelationshipKind, RecordCareRelationshipRequest,
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
    /// ODS code of the caring organisation.
    #[arg(long)]
    pub ods: String,
    /// What kind of care.
    #[arg(long, value_enum, default_value_t = KindArg::RegisteredGp)]
    pub kind: KindArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    RegisteredGp,
    HospitalEpisode,
    Referral,
    CareHomePlacement,
    CommunityCare,
}

impl KindArg {
    fn to_proto(self) -> CareRelationshipKind {
        match self {
            KindArg::RegisteredGp => CareRelationshipKind::RegisteredGp,
            KindArg::HospitalEpisode => CareRelationshipKind::HospitalEpisode,
            KindArg::Referral => CareRelationshipKind::Referral,
            KindArg::CareHomePlacement => CareRelationshipKind::CareHomePlacement,
            KindArg::CommunityCare => CareRelationshipKind::CommunityCare,
        }
    }
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
            },
            services.token()?,
        )?)
        .await
        .grpc()?;
    Ok(response.relationship.unwrap_or_default())
}

pub async fn run(services: &Services, args: CareRelationshipArgs) -> anyhow::Result<()> {
    let relationship = record(services, args).await?;
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
    Ok(())
}
