//! consent's domain: plain Rust, no network, no database. Values are built
//! valid (`parse` names the request field that is wrong), and the decision
//! "may this actor use this patient's data for this purpose?" is a pure
//! function, [`evaluate`], of what is known about the patient.

mod directive;
mod evaluate;
mod period;
mod relationship;
mod rules;
mod scopes;
mod values;
mod vocabulary;

pub use directive::{Directive, DirectiveKind, DirectiveSource, MAX_NOTE_CHARS, Provenance};
pub use evaluate::{
    Actor, BreakGlass, Decision, EvaluationRequest, Exemption, Obligation, ObligationCode, Outcome,
    Reason, ReasonCode, evaluate,
};
pub use period::{Period, to_micros};
pub use relationship::CareRelationship;
pub use rules::{BreakGlassRules, Rules, consent_version};
pub use scopes::RelationshipScopes;
pub use values::{MAX_ID_CHARS, OdsCode, PatientId, optional_text, required_id};
pub use vocabulary::{CareRelationshipKind, Effect, Purpose, RecordCategory};
