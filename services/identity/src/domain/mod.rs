//! identity's domain: plain Rust, no network, no database.

mod nhs_number;
mod patient;
mod principal;

pub use nhs_number::NhsNumber;
pub use patient::{Demographics, Gender, Patient};
pub use principal::{
    ClientSecret, KNOWN_SCOPES, Organisation, Principal, default_scopes, validate_scopes,
};
pub use sharedcare_kit::ids::OdsCode;
