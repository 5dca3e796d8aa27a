//! Patient matching: whether a person asked about is one the index already
//! holds, by NHS number and by demographics when the number is missing or
//! mistyped. Pure Rust; the store adds blind indexes over the blocking keys
//! and the gRPC layer decides what to do with a `Decision`. See
//! docs/patient-matching.md for the weights, thresholds and measured quality.

mod blocking;
mod dates;
mod names;
mod person;
mod postcode;
mod rank;
mod score;

pub use blocking::blocking_keys;
pub use dates::{DateAgreement, PartialDate};
pub use names::{NameAgreement, NameKey};
pub use person::{Person, PreparedPerson};
pub use postcode::{Postcode, PostcodeAgreement};
pub use rank::{Ranked, rank, unique_match};
pub use score::{
    Agreement, Decision, Field, FieldResult, MATCH_THRESHOLD, MatchScore, POSSIBLE_THRESHOLD,
    PairLevel, decide, score,
};
