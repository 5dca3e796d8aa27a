//! `sharedcare token`: client credentials in, access token out.

use clap::Args;
use sharedcare_proto::identity::v1::{IssueTokenRequest, IssueTokenResponse};

use crate::output::out;
use crate::{
    connect::{Services, plain},
    failure::GrpcResult,
    labels::{PurposeArg, purpose_or_unspecified},
};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The principal's client id (e.g. `admin`).
    #[arg(long)]
    pub client_id: String,
    /// The principal's client secret.
    #[arg(long, env = "SHAREDCARE_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: String,
    /// Ask for only these scopes (repeatable); none means all granted.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Purpose of use carried in the token; one of the principal's permitted
    /// purposes (another is PERMISSION_DENIED naming it) [default: the
    /// first of them].
    #[arg(long, value_enum)]
    pub purpose: Option<PurposeArg>,
    /// The one service the token is for (identity, consent, records or
    /// audit); others refuse it [default: every service].
    #[arg(long, default_value = "", hide_default_value = true)]
    pub audience: String,
    /// For an application acting for a member of staff at its organisation:
    /// that staff member's current access token.
    #[arg(
        long,
        env = "SHAREDCARE_ON_BEHALF_OF_TOKEN",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true
    )]
    pub on_behalf_of_token: String,
}

/// Calls IssueToken.
pub async fn issue(
    services: &Services,
    client_id: &str,
    client_secret: &str,
    scopes: Vec<String>,
    purpose: Option<PurposeArg>,
) -> anyhow::Result<IssueTokenResponse> {
    services
        .identity()?
        .issue_token(plain(IssueTokenRequest {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            scopes,
            purpose: purpose_or_unspecified(purpose),
            ..Default::default()
        }))
        .await
        .grpc()
}

/// Prints the token alone, so `$(sharedcare token ...)` captures it.
pub async fn run(services: &Services, args: TokenArgs) -> anyhow::Result<()> {
    let issued = services
        .identity()?
        .issue_token(plain(IssueTokenRequest {
            client_id: args.client_id,
            client_secret: args.client_secret,
            scopes: args.scopes,
            purpose: purpose_or_unspecified(args.purpose),
            audience: args.audience,
            on_behalf_of_token: args.on_behalf_of_token,
        }))
        .await
        .grpc()?;
    out!("{}", issued.access_token);
    Ok(())
}
