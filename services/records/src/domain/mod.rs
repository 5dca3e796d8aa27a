//! records' domain: plain Rust, no network, no database.

mod classify;
mod fhir;
mod idempotency;
mod index;
mod record;

pub use classify::{
    ClassificationMap, DEFAULT_MAP, DEFAULT_MAP_NAME, ICD_10, ICD_10_UK, LOINC, MapError,
    SNOMED_CT, most_sensitive, sensitivity,
};
pub use fhir::{SUPPORTED_RESOURCE_TYPES, ValidResource};
pub use idempotency::IdempotencyKey;
pub use index::{DateRange, MAX_TOKENS, SearchIndex, Token, TokenParam, TokenQuery, extract};
pub use record::{Category, Record, RecordId};
pub use sharedcare_kit::ids::PatientId;
