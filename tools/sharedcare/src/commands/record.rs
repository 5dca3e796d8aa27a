//! `sharedcare record`: create and read FHIR R4 resources in a patient's
//! shared record. Every call is consent-checked and audited by records.

use std::{io::Read, path::PathBuf};

use anyhow::Context;
use clap::Subcommand;
use sharedcare_proto::records::v1::{
    CreateRecordRequest, DeleteRecordRequest, GetRecordRequest, HistoryRequest, Record,
    SearchRequest, UpdateRecordRequest,
};

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
        /// Makes a retry safe: sent again with the same key (and the same
        /// resource), records answers with the first result.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Store a new version of a record, if the version you last read is
    /// still current.
    Update {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        record: String,
        /// The new resource as JSON; `-` reads standard input.
        #[arg(long)]
        file: PathBuf,
        /// The version you last read (records refuses if it is not current,
        /// naming the current one).
        #[arg(long)]
        if_match: i64,
        #[arg(long, value_enum)]
        category: Option<CategoryArg>,
        #[arg(long, value_enum)]
        purpose: Option<PurposeArg>,
    },
    /// Delete a record (a tombstone version; history keeps the rest).
    Delete {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        record: String,
        /// The version you last read.
        #[arg(long)]
        if_match: i64,
        #[arg(long, value_enum)]
        purpose: Option<PurposeArg>,
    },
    /// Every version of a record, newest first.
    History {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        record: String,
        #[arg(long, value_enum)]
        purpose: Option<PurposeArg>,
    },
    /// Search a patient's current records, newest clinical date first. Every
    /// filter narrows; a repeated filter matches any of its values.
    Search {
        #[arg(long)]
        patient: String,
        /// Resource type, e.g. Observation (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Record category (repeatable) [default: all that consent permits].
        #[arg(long = "category", value_enum)]
        categories: Vec<CategoryArg>,
        /// A code: `system|code`, `|code` or `code` (repeatable).
        #[arg(long = "code")]
        codes: Vec<String>,
        /// A FHIR category, given like a code (repeatable).
        #[arg(long = "fhir-category")]
        fhir_categories: Vec<String>,
        /// Clinical date on or after (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Clinical date before (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Last updated on or after.
        #[arg(long)]
        updated_from: Option<String>,
        /// Last updated before.
        #[arg(long)]
        updated_to: Option<String>,
        /// Records per page (1..500); all pages are fetched.
        #[arg(long, default_value_t = 100)]
        page_size: i32,
        /// Print each record in full, not one line each.
        #[arg(long)]
        full: bool,
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
        /// Break-glass: emergency access without a care relationship, with
        /// the reason it is needed now (direct or emergency care; roles
        /// allowed it only; flagged in the audit trail).
        #[arg(
            long,
            value_name = "REASON",
            default_value = "",
            hide_default_value = true
        )]
        break_glass: String,
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
    idempotency_key: Option<String>,
) -> anyhow::Result<Record> {
    let response = services
        .records()?
        .create_record(bearer(
            CreateRecordRequest {
                patient_id: patient.to_owned(),
                resource_json,
                category: category.map_or(0, |c| c.to_proto() as i32),
                purpose: purpose_or_unspecified(purpose),
                idempotency_key: idempotency_key.unwrap_or_default(),
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
    get_request(
        services,
        token,
        GetRecordRequest {
            patient_id: patient.to_owned(),
            record_id: record.to_owned(),
            purpose: purpose_or_unspecified(purpose),
            break_glass_reason: String::new(),
        },
    )
    .await
}

/// Calls GetRecord with `request` as it is.
pub async fn get_request(
    services: &Services,
    token: &str,
    request: GetRecordRequest,
) -> anyhow::Result<Record> {
    let response = services
        .records()?
        .get_record(bearer(request, token)?)
        .await
        .grpc()?;
    Ok(response.record.unwrap_or_default())
}

/// Calls Search with `request`, page after page until the last; every
/// record found, in the order records returned them.
pub async fn search(
    services: &Services,
    token: &str,
    mut request: SearchRequest,
) -> anyhow::Result<Vec<Record>> {
    let mut found = Vec::new();
    loop {
        let page = services
            .records()?
            .search(bearer(request.clone(), token)?)
            .await
            .grpc()?;
        found.extend(page.records);
        if page.next_page_token.is_empty() {
            return Ok(found);
        }
        request.page_token = page.next_page_token;
    }
}

pub async fn run(services: &Services, command: RecordCommand) -> anyhow::Result<()> {
    let token = services.token()?;
    let record = match command {
        RecordCommand::Create {
            patient,
            file,
            category,
            purpose,
            idempotency_key,
        } => {
            let json = read_resource(&file)?;
            create(
                services,
                token,
                &patient,
                json,
                category,
                purpose,
                idempotency_key,
            )
            .await?
        }
        RecordCommand::Update {
            patient,
            record,
            file,
            if_match,
            category,
            purpose,
        } => {
            let resource_json = read_resource(&file)?;
            services
                .records()?
                .update_record(bearer(
                    UpdateRecordRequest {
                        patient_id: patient,
                        record_id: record,
                        resource_json,
                        if_match_version: if_match,
                        purpose: purpose_or_unspecified(purpose),
                        category: category.map_or(0, |c| c.to_proto() as i32),
                    },
                    token,
                )?)
                .await
                .grpc()?
                .record
                .unwrap_or_default()
        }
        RecordCommand::Delete {
            patient,
            record,
            if_match,
            purpose,
        } => services
            .records()?
            .delete_record(bearer(
                DeleteRecordRequest {
                    patient_id: patient,
                    record_id: record,
                    if_match_version: if_match,
                    purpose: purpose_or_unspecified(purpose),
                },
                token,
            )?)
            .await
            .grpc()?
            .record
            .unwrap_or_default(),
        RecordCommand::Get {
            patient,
            record,
            purpose,
            break_glass,
        } => {
            get_request(
                services,
                token,
                GetRecordRequest {
                    patient_id: patient,
                    record_id: record,
                    purpose: purpose_or_unspecified(purpose),
                    break_glass_reason: break_glass,
                },
            )
            .await?
        }
        RecordCommand::History {
            patient,
            record,
            purpose,
        } => {
            let mut page_token = String::new();
            loop {
                let page = services
                    .records()?
                    .history(bearer(
                        HistoryRequest {
                            patient_id: patient.clone(),
                            record_id: record.clone(),
                            page_size: 100,
                            page_token,
                            purpose: purpose_or_unspecified(purpose),
                        },
                        token,
                    )?)
                    .await
                    .grpc()?;
                for version in &page.versions {
                    print_record(version);
                    out!("");
                }
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = page.next_page_token;
            }
        }
        RecordCommand::Search {
            patient,
            types,
            categories,
            codes,
            fhir_categories,
            from,
            to,
            updated_from,
            updated_to,
            page_size,
            full,
            purpose,
        } => {
            let request = SearchRequest {
                patient_id: patient,
                resource_types: types,
                page_size,
                page_token: String::new(),
                purpose: purpose_or_unspecified(purpose),
                categories: categories.iter().map(|c| c.to_proto() as i32).collect(),
                date_from: time_arg("--from", from.as_deref())?,
                date_to: time_arg("--to", to.as_deref())?,
                codes,
                fhir_categories,
                updated_from: time_arg("--updated-from", updated_from.as_deref())?,
                updated_to: time_arg("--updated-to", updated_to.as_deref())?,
                break_glass_reason: String::new(),
            };
            let found = search(services, token, request).await?;
            for record in &found {
                if full {
                    print_record(record);
                    out!("");
                } else {
                    out!(
                        "{}  {:<20} v{:<3} {:<14} {}",
                        record.record_id,
                        record.resource_type,
                        record.version,
                        labels::category(record.category),
                        labels::time(record.last_updated.as_ref())
                    );
                }
            }
            out!("{} record(s)", found.len());
            return Ok(());
        }
    };
    print_record(&record);
    Ok(())
}

/// A time given as a date (midnight UTC) or in RFC 3339.
fn time_arg(flag: &str, value: Option<&str>) -> anyhow::Result<Option<prost_types::Timestamp>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let time = if let Ok(date) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .with_context(|| format!("{flag}: {value} is not a date"))?
    } else {
        chrono::DateTime::parse_from_rfc3339(value)
            .with_context(|| format!("{flag}: {value} is neither YYYY-MM-DD nor RFC 3339"))?
            .with_timezone(&chrono::Utc)
    };
    Ok(Some(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }))
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
    if record.deleted {
        out!("deleted:       yes (a tombstone)");
    } else {
        // As stored: member order and number text are the writer's.
        out!("{}", record.resource_json);
    }
}
