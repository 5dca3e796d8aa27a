//! Care relationships: the legitimate relationship behind direct care.

use chrono::{DateTime, Utc};

use super::{Actor, CareRelationshipKind, OdsCode, PatientId, Period};

/// An organisation caring for a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareRelationship {
    pub id: String,
    pub patient_id: PatientId,
    pub organisation: OdsCode,
    pub kind: CareRelationshipKind,
    pub period: Period,
    /// Only this staff member (principal id) of the organisation, when set;
    /// a break-glass grant always names one.
    pub staff_member: Option<String>,
    /// The team within the organisation, when one is named (for people:
    /// tokens carry no team, so it does not narrow decisions).
    pub team: Option<String>,
    /// Why break-glass was used, for a break-glass grant.
    pub reason: Option<String>,
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

    /// Whether it is `actor`'s: their organisation's, and theirs when it
    /// names a staff member.
    pub fn belongs_to(&self, actor: &Actor) -> bool {
        actor.organisation.as_ref() == Some(&self.organisation)
            && self
                .staff_member
                .as_deref()
                .is_none_or(|m| m == actor.principal_id)
    }

    /// Its version: 1 as recorded, 2 once ended early. Nothing is deleted.
    pub fn version(&self) -> u32 {
        if self.ended_by.is_some() { 2 } else { 1 }
    }
}
