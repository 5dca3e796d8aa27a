//! Patient directives: permit or deny, narrowed by purpose, organisation,
//! staff role, record category and period. An empty list or unset field
//! means "any".

use chrono::{DateTime, Utc};

use super::{Effect, OdsCode, PatientId, Period, Purpose, RecordCategory};

/// Longest note recorded with a directive.
pub const MAX_NOTE_CHARS: usize = 500;

/// Where a directive came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectiveSource {
    /// The patient recorded it themselves.
    Patient,
    /// Staff caring for the patient recorded it on the patient's behalf.
    Clinician,
}

impl DirectiveSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DirectiveSource::Patient => "patient",
            DirectiveSource::Clinician => "clinician",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "patient" => Some(DirectiveSource::Patient),
            "clinician" => Some(DirectiveSource::Clinician),
            _ => None,
        }
    }
}

/// Who recorded a directive, at which organisation, from which source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub recorded_by: String,
    /// None when the patient recorded it.
    pub organisation: Option<OdsCode>,
    pub source: DirectiveSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub id: String,
    pub patient_id: PatientId,
    pub effect: Effect,
    pub purposes: Vec<Purpose>,
    pub organisation: Option<OdsCode>,
    pub staff_role: Option<String>,
    pub categories: Vec<RecordCategory>,
    pub period: Period,
    pub note: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub provenance: Provenance,
    pub revoked_by: Option<String>,
}

impl Directive {
    /// In force at `now`: within its period and not revoked by then.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.period.contains(now) && self.revoked_at.is_none_or(|revoked| revoked > now)
    }

    /// Whether it speaks to this use: each of its conditions is either
    /// unset or met.
    pub fn applies_to(
        &self,
        purpose: Purpose,
        organisation: Option<&OdsCode>,
        role: &str,
        category: RecordCategory,
    ) -> bool {
        (self.purposes.is_empty() || self.purposes.contains(&purpose))
            && self
                .organisation
                .as_ref()
                .is_none_or(|o| Some(o) == organisation)
            && self.staff_role.as_deref().is_none_or(|r| r == role)
            && (self.categories.is_empty() || self.categories.contains(&category))
    }
}
