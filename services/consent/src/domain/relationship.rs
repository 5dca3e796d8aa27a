//! Care relationships: the legitimate relationship behind direct care.

use chrono::{DateTime, Utc};

use super::{CareRelationshipKind, OdsCode, PatientId, Period};

/// An organisation caring for a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareRelationship {
    pub id: String,
    pub patient_id: PatientId,
    pub organisation: OdsCode,
    pub kind: CareRelationshipKind,
    pub period: Period,
    /// The principal that recorded it.
    pub recorded_by: String,
    /// The organisation that recorded it: the caring organisation itself,
    /// or the referring one for a referral.
    pub recorded_by_organisation: OdsCode,
    /// The principal that ended it early, once it has.
    pub ended_by: Option<String>,
}

impl CareRelationship {
    /// Whether it has started and not ended at `now`.
    pub fn is_current(&self, now: DateTime<Utc>) -> bool {
        self.period.contains(now)
    }
}
