//! `sharedcare record`: create and read FHIR R4 resources in a patient's
//! shared record. Every call is consent-checked and audited by records.

use std::{io::Read, path::PathBuf};

use anyhow::Context;
use clap::Subcommand;
use sharedcare_proto::records::v1::{CreateRecordRequest, GetRecordRequest, Record};

use crate::output::out;
use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
    labels::{self, CategoryArg, PurposeArg, purpose_or_unspecified},
};

#[derive(Debug, Subcommand)]
pub enum RecordCommand {
    /// Store a FHIR R4 resource as version 1; prints it as stored.
    Create {
        /// Patient id; the resource's subject/patient must be Patient/<id>.
        #[arg(long)]
        patient: String,
        /// The resource as JSON; `-` reads standard input.
        #[arg(long)]
        file: PathBuf,
        /// The writer's label for the part of the record it belongs to. records
        /// classifies the resource by its codes (the classification map); a
        /// label can raise that category, never lower it.
        #[arg(long, value_enum)]
        category: Option<CategoryArg>,
        /// Purpose of use [default: the token's].
        #[arg(long, value_enum)]
        purpose: Option<PurposeArg>,
    },
    /// Read the current version of a record.
    Get {
        /// Patient id.
        #[arg(long)]
        patient: String,
        /// Record id, as returned by `record create`.
        #[arg(long)]
        record: String,
        /// Purpose of use [default: the token's].
        #[arg(long, value_enum)]
        purpose: Option<PurposeArg>,
    },
}

/// Calls CreateRecord.
pub async fn create(
    services: &Services,
    token: &str,
    patient: &str,
    resource_json: String,
    category: Option<CategoryArg>,
    purpose: Option<PurposeArg>,
) -> anyhow::Result<Record> {
    let response = services
        .records()?
        .create_record(bearer(
            CreateRecordRequest {
                patient_id: patient.to_owned(),
                resource_json,
                category: category.map_or(0, |c| c.to_proto() as i32),
                purpose: purpose_or_unspecified(purpose),
                idempotency_key: String::new(),
            },
            token,
        )?)
        .await
        .grpc()?;
    Ok(response.record.unwrap_or_default())
}

/// Calls GetRecord.
pub async fn get(
    services: &Services,
    token: &str,
    patient: &str,
    record: &str,
    purpose: Option<PurposeArg>,
) -> anyhow::Result<Record> {
    let response = services
        .records()?
        .get_record(bearer(
            GetRecordRequest {
                patient_id: patient.to_owned(),
                record_id: record.to_owned(),
                purpose: purpose_or_unspecified(purpose),
            },
            token,
        )?)
        .await
        .grpc()?;
    Ok(response.record.unwrap_or_default())
}

pub async fn run(services: &Services, command: RecordCommand) -> anyhow::Result<()> {
    let token = services.token()?;
    let record = match command {
        RecordCommand::Create {
            patient,
            file,
            category,
            purpose,
        } => {
            let json = read_resource(&file)?;
            create(services, token, &patient, json, category, purpose).await?
        }
        RecordCommand::Get {
            patient,
            record,
            purpose,
        } => get(services, token, &patient, &record, purpose).await?,
    };
    print_record(&record);
    Ok(())
}

/// The resource from a file, or from standard input for `-`.
fn read_resource(file: &std::path::Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut json = String::new();
        std::io::stdin()
            .read_to_string(&mut json)
            .context("reading the resource from standard input")?;
        Ok(json)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}

/// The record's identity, then its JSON as stored (pretty-printed).
pub fn print_record(record: &Record) {
    out!("record_id:     {}", record.record_id);
    out!("patient_id:    {}", record.patient_id);
    out!("resource_type: {}", record.resource_type);
    out!("version:       {}", record.version);
    out!("category:      {}", labels::category(record.category));
    out!(
        "last_updated:  {}",
        labels::time(record.last_updated.as_ref())
    );
    out!("{}", pretty_json(&record.resource_json));
}

/// Pretty-printed JSON; the text unchanged if it does not parse.
pub fn pretty_json(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.to_owned())
}
