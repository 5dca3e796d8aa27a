use chrono::{DateTime, Utc};
use sharedcare_kit::{Error, ids::PatientId};

const MAX_ID_CHARS: usize = 64;

fn parse_id(field: &str, input: &str) -> Result<String, Error> {
    if input.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if input.len() > MAX_ID_CHARS
        || !input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(Error::invalid(
            field,
            format!("must be up to {MAX_ID_CHARS} letters, digits, '-' or '.'"),
        ));
    }
    Ok(input.to_owned())
}

/// A record's logical id, assigned by the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordId(String);

impl RecordId {
    pub fn new() -> Self {
        RecordId(uuid::Uuid::now_v7().to_string())
    }

    pub fn parse(field: &str, input: &str) -> Result<Self, Error> {
        parse_id(field, input).map(RecordId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RecordId {
    fn default() -> Self {
        Self::new()
    }
}

/// The part of the record a resource belongs to; consent rules follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    General,
    SexualHealth,
    MentalHealth,
    Safeguarding,
    SocialCare,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::General,
        Category::SexualHealth,
        Category::MentalHealth,
        Category::Safeguarding,
        Category::SocialCare,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::General => "general",
            Category::SexualHealth => "sexual_health",
            Category::MentalHealth => "mental_health",
            Category::Safeguarding => "safeguarding",
            Category::SocialCare => "social_care",
        }
    }

    pub fn from_stored(s: &str) -> Option<Category> {
        Some(match s {
            "general" => Category::General,
            "sexual_health" => Category::SexualHealth,
            "mental_health" => Category::MentalHealth,
            "safeguarding" => Category::Safeguarding,
            "social_care" => Category::SocialCare,
            _ => return None,
        })
    }
}

/// One version of one FHIR resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: RecordId,
    pub patient_id: PatientId,
    pub resource_type: String,
    pub version: i64,
    pub last_updated: DateTime<Utc>,
    pub category: Category,
    /// This version deleted the record (a tombstone).
    pub deleted: bool,
    /// The resource with `id` and `meta` set by the server; empty for a
    /// tombstone.
    pub resource_json: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fhir_ids() {
        assert!(RecordId::parse("record_id", "0192f1c2-aaaa-7bbb-8ccc-0123456789ab").is_ok());
        let err = RecordId::parse("record_id", "a/b").expect_err("slash");
        assert_eq!(err.field.as_deref(), Some("record_id"));
        assert!(RecordId::parse("record_id", &"a".repeat(65)).is_err());
    }
}
