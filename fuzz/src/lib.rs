//! Fuzz targets over everything that reads untrusted input: each takes
//! arbitrary bytes, feeds them to the production parser or verifier, and
//! checks what must hold beyond "no panic" (what parses writes back and
//! parses the same; nothing edited from a valid token, cursor, proof or
//! note is accepted).
//!
//! `tests/targets.rs` runs each over its corpus (`corpus/<target>/`) and a
//! few thousand generated inputs on every `cargo test`; `cargo-fuzz/` runs
//! them under libFuzzer for as long as asked (see README.md).

mod fhir;
mod identity;
mod import_line;
pub mod input;
pub mod merkle;
pub mod page_token;
pub mod proto_request;
pub mod token;

pub use fhir::{PATIENT, fhir_intake};
pub use identity::{birth_date, nhs_number, postcode};
pub use import_line::import_line;
pub use merkle::merkle;
pub use page_token::page_token;
pub use proto_request::proto_request;
pub use token::token;

/// A fuzz target: any bytes in, a panic when a check fails.
pub type Target = fn(&[u8]);

/// Every target by name: the name is its corpus directory and its cargo
/// fuzz target.
pub const TARGETS: &[(&str, Target)] = &[
    ("fhir_intake", fhir_intake),
    ("nhs_number", nhs_number),
    ("postcode", postcode),
    ("birth_date", birth_date),
    ("token", token),
    ("page_token", page_token),
    ("proto_request", proto_request),
    ("merkle", merkle),
    ("import_line", import_line),
];
