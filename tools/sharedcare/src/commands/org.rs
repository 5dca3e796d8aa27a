//! `sharedcare org`: organisations by ODS code.

use clap::Subcommand;
use sharedcare_proto::identity::v1::{
    CreateOrganisationRequest, GetOrganisationRequest, Organisation,
};

use crate::output::out;
use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
    labels,
};

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Add an organisation (needs the `admin` scope).
    Create {
        /// ODS code, e.g. A81001.
        #[arg(long)]
        ods: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// Show an organisation.
    Get {
        /// ODS code.
        #[arg(long)]
        ods: String,
    },
}

/// Calls CreateOrganisation.
pub async fn create(services: &Services, ods: &str, name: &str) -> anyhow::Result<Organisation> {
    let response = services
        .identity()?
        .create_organisation(bearer(
            CreateOrganisationRequest {
                ods_code: ods.to_owned(),
                name: name.to_owned(),
            },
            services.token()?,
        )?)
        .await
        .grpc()?;
    Ok(response.organisation.unwrap_or_default())
}

pub async fn run(services: &Services, command: OrgCommand) -> anyhow::Result<()> {
    let organisation = match command {
        OrgCommand::Create { ods, name } => create(services, &ods, &name).await?,
        OrgCommand::Get { ods } => services
            .identity()?
            .get_organisation(bearer(
                GetOrganisationRequest { ods_code: ods },
                services.token()?,
            )?)
            .await
            .grpc()?
            .organisation
            .unwrap_or_default(),
    };
    out!("ods_code:    {}", organisation.ods_code);
    out!("name:        {}", organisation.name);
    out!(
        "created:     {}",
        labels::time(organisation.create_time.as_ref())
    );
    Ok(())
}
