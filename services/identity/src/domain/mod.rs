//! identity's domain: plain Rust, no network, no database.

pub mod matching;
mod merge;
mod nhs_number;
mod patient;
mod principal;
mod roles;

pub use merge::{MAX_MERGE_CHAIN, MergeEvent, MergeKind};
pub use nhs_number::NhsNumber;
pub use patient::{
    ContactPoint, ContactSystem, Demographics, Gender, LocalIdentifier, NotSamePerson, Patient,
    RawDetails, fold_name, plain_text,
};
pub use principal::{
    ClientSecret, KNOWN_SCOPES, Organisation, Principal, default_purposes, default_scopes,
    parse_role, purposes_for_kind, purposes_from_names, purposes_from_pb, scopes_for_kind,
    validate_scopes,
};
pub use roles::RoleMap;
pub use sharedcare_kit::ids::OdsCode;
