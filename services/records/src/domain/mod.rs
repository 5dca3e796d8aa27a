//! records' domain: plain Rust, no network, no database.

mod fhir;
mod record;

pub use fhir::{SUPPORTED_RESOURCE_TYPES, ValidResource};
pub use record::{Category, Record, RecordId};
pub use sharedcare_kit::ids::PatientId;
