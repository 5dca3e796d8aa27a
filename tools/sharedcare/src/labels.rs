//! Proto enums and timestamps as short words for the terminal, and the
//! command-line spellings of the enums users choose from.

use clap::ValueEnum;
use sharedcare_proto::{
    audit::v1::{Action, Outcome},
    common::v1::{PrincipalKind, Purpose, RecordCategory},
    consent::v1::{CareRelationshipKind, DirectiveSource, Effect},
    identity::v1::Gender,
};

/// `PURPOSE_DIRECT_CARE` → `DIRECT_CARE`; unknown numbers stay numbers.
fn short(name: Option<&'static str>, prefix: &str, value: i32) -> String {
    match name {
        Some(name) => name.strip_prefix(prefix).unwrap_or(name).to_owned(),
        None => value.to_string(),
    }
}

pub fn action(value: i32) -> String {
    short(
        Action::try_from(value).ok().map(|a| a.as_str_name()),
        "ACTION_",
        value,
    )
}

pub fn outcome(value: i32) -> String {
    short(
        Outcome::try_from(value).ok().map(|o| o.as_str_name()),
        "OUTCOME_",
        value,
    )
}

pub fn purpose(value: i32) -> String {
    short(
        Purpose::try_from(value).ok().map(|p| p.as_str_name()),
        "PURPOSE_",
        value,
    )
}

pub fn category(value: i32) -> String {
    short(
        RecordCategory::try_from(value)
            .ok()
            .map(|c| c.as_str_name()),
        "RECORD_CATEGORY_",
        value,
    )
}

pub fn relationship_kind(value: i32) -> String {
    short(
        CareRelationshipKind::try_from(value)
            .ok()
            .map(|k| k.as_str_name()),
        "CARE_RELATIONSHIP_KIND_",
        value,
    )
}

pub fn principal_kind(value: i32) -> String {
    short(
        PrincipalKind::try_from(value).ok().map(|k| k.as_str_name()),
        "PRINCIPAL_KIND_",
        value,
    )
}

/// Who recorded a directive: `PATIENT` or `CLINICIAN` (on the patient's
/// behalf).
pub fn directive_source(value: i32) -> String {
    short(
        DirectiveSource::try_from(value)
            .ok()
            .map(|s| s.as_str_name()),
        "DIRECTIVE_SOURCE_",
        value,
    )
}

pub fn effect(value: i32) -> String {
    short(
        Effect::try_from(value).ok().map(|e| e.as_str_name()),
        "EFFECT_",
        value,
    )
}

/// A list of purposes, comma-separated; `any` when empty.
pub fn purposes(values: &[i32]) -> String {
    list(values, purpose)
}

/// A list of record categories, comma-separated; `any` when empty.
pub fn categories(values: &[i32]) -> String {
    list(values, category)
}

fn list(values: &[i32], label: fn(i32) -> String) -> String {
    if values.is_empty() {
        return "any".to_owned();
    }
    values
        .iter()
        .map(|v| label(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn gender(value: i32) -> String {
    short(
        Gender::try_from(value).ok().map(|g| g.as_str_name()),
        "GENDER_",
        value,
    )
}

/// A timestamp as `2025-01-31T09:05:00Z`; `-` when unset.
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    match sharedcare_kit::proto_time::from_proto("time", t) {
        Ok(Some(t)) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Ok(None) => "-".to_owned(),
        Err(_) => "(invalid time)".to_owned(),
    }
}

/// Purposes of use, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PurposeArg {
    DirectCare,
    Research,
    Planning,
    PatientAccess,
    EmergencyCare,
    Safeguarding,
    Commissioning,
}

impl PurposeArg {
    pub fn to_proto(self) -> Purpose {
        match self {
            PurposeArg::DirectCare => Purpose::DirectCare,
            PurposeArg::Research => Purpose::Research,
            PurposeArg::Planning => Purpose::Planning,
            PurposeArg::PatientAccess => Purpose::PatientAccess,
            PurposeArg::EmergencyCare => Purpose::EmergencyCare,
            PurposeArg::Safeguarding => Purpose::Safeguarding,
            PurposeArg::Commissioning => Purpose::Commissioning,
        }
    }
}

/// `Purpose` for an optional flag: unspecified lets the server use the
/// token's purpose.
pub fn purpose_or_unspecified(purpose: Option<PurposeArg>) -> i32 {
    purpose.map_or(Purpose::Unspecified, PurposeArg::to_proto) as i32
}

/// Record categories, as typed on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CategoryArg {
    General,
    SexualHealth,
    MentalHealth,
    Safeguarding,
    SocialCare,
}

impl CategoryArg {
    pub fn to_proto(self) -> RecordCategory {
        match self {
            CategoryArg::General => RecordCategory::General,
            CategoryArg::SexualHealth => RecordCategory::SexualHealth,
            CategoryArg::MentalHealth => RecordCategory::MentalHealth,
            CategoryArg::Safeguarding => RecordCategory::Safeguarding,
            CategoryArg::SocialCare => RecordCategory::SocialCare,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_lose_their_prefix() {
        assert_eq!(action(Action::Read as i32), "READ");
        assert_eq!(outcome(Outcome::Denied as i32), "DENIED");
        assert_eq!(purpose(Purpose::DirectCare as i32), "DIRECT_CARE");
        assert_eq!(
            category(RecordCategory::MentalHealth as i32),
            "MENTAL_HEALTH"
        );
        assert_eq!(
            relationship_kind(CareRelationshipKind::RegisteredGp as i32),
            "REGISTERED_GP"
        );
        assert_eq!(principal_kind(PrincipalKind::Patient as i32), "PATIENT");
        assert_eq!(
            directive_source(DirectiveSource::Clinician as i32),
            "CLINICIAN"
        );
        assert_eq!(effect(Effect::Deny as i32), "DENY");
        assert_eq!(
            categories(&[RecordCategory::SexualHealth as i32]),
            "SEXUAL_HEALTH"
        );
        assert_eq!(purposes(&[]), "any");
        assert_eq!(action(99), "99");
    }

    #[test]
    fn times_print_in_utc() {
        let t = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(time(Some(&t)), "2023-11-14T22:13:20Z");
        assert_eq!(time(None), "-");
    }
}
