//! Organisations and principals ensured at start from a TOML file: how a
//! fresh platform gets its admin client and its services' credentials.

use std::path::Path;

use serde::Deserialize;
use sharedcare_kit::{Error, auth::kind_from_str};
use sharedcare_proto::common::v1::PrincipalKind;

use crate::{
    domain::{
        ClientSecret, OdsCode, Organisation, Principal, purposes_for_kind, purposes_from_names,
        scopes_for_kind,
    },
    store::IdentityStore,
};

#[derive(Debug, Deserialize)]
pub struct BootstrapFile {
    #[serde(default)]
    pub organisations: Vec<BootstrapOrganisation>,
    #[serde(default)]
    pub principals: Vec<BootstrapPrincipal>,
}

#[derive(Debug, Deserialize)]
pub struct BootstrapOrganisation {
    pub ods_code: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct BootstrapPrincipal {
    pub client_id: String,
    pub client_secret: String,
    /// "admin", "service", "staff" or "application" (patient principals are
    /// created with CreatePrincipal, bound to a registered patient).
    pub kind: String,
    pub display_name: String,
    pub organisation: String,
    pub role: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Purpose names (`direct_care`, `research`, `planning`); empty: the
    /// kind's default.
    #[serde(default)]
    pub purposes: Vec<String>,
}

impl BootstrapFile {
    pub fn read(path: &Path) -> Result<Self, Error> {
        config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| Error::invalid("identity.bootstrap_file", e.to_string()))
    }
}

/// Creates what is missing and refreshes the principals' secrets and scopes.
pub async fn apply(store: &dyn IdentityStore, file: BootstrapFile) -> Result<(), Error> {
    let now = chrono::Utc::now();
    for org in file.organisations {
        let ods_code = OdsCode::parse("organisations.ods_code", &org.ods_code)?;
        if store.get_organisation(&ods_code).await?.is_none() {
            store
                .create_organisation(Organisation {
                    ods_code,
                    name: org.name,
                    created_at: now,
                })
                .await?;
        }
    }
    for p in file.principals {
        let kind = kind_from_str(&p.kind)
            .filter(|k| !matches!(k, PrincipalKind::Unspecified | PrincipalKind::Patient))
            .ok_or_else(|| {
                Error::invalid(
                    "principals.kind",
                    "must be admin, service, staff or application",
                )
            })?;
        let organisation = OdsCode::parse("principals.organisation", &p.organisation)?;
        if store.get_organisation(&organisation).await?.is_none() {
            return Err(Error::invalid(
                "principals.organisation",
                format!("organisation {organisation} is not in the bootstrap file"),
            ));
        }
        if p.client_secret.len() < 32 {
            return Err(Error::invalid(
                "principals.client_secret",
                "must be at least 32 characters",
            ));
        }
        let scopes = scopes_for_kind("principals.scopes", kind, &p.scopes, true)?;
        let purposes = purposes_for_kind(
            "principals.purposes",
            kind,
            &purposes_from_names("principals.purposes", &p.purposes)?,
        )?;
        store
            .upsert_principal(Principal {
                id: uuid::Uuid::now_v7().to_string(),
                kind,
                display_name: p.display_name,
                organisation: Some(organisation),
                role: p.role,
                scopes,
                purposes,
                patient_id: None,
                client_id: p.client_id,
                secret_hash: ClientSecret::from_string(p.client_secret).hash(),
                created_at: now,
            })
            .await?;
    }
    Ok(())
}
