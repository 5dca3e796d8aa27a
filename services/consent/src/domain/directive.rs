//! Patient directives: permit or deny, narrowed by purpose, organisation,
//! staff member, staff role, record category and period. An empty list or
//! unset field means "any". The National Data Opt-out is a directive of its
//! own kind (see [`DirectiveKind::NationalOptOut`]).

use chrono::{DateTime, Utc};

use super::{Actor, Effect, OdsCode, PatientId, Period, Purpose, RecordCategory};

/// Longest note recorded with a directive.
pub const MAX_NOTE_CHARS: usize = 500;

/// Where a directive came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectiveSource {
    /// The patient recorded it themselves.
    Patient,
    /// Staff caring for the patient recorded it on the patient's behalf.
    Clinician,
    /// The national opt-out service recorded the patient's choice.
    NationalOptOutService,
}

impl DirectiveSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DirectiveSource::Patient => "patient",
            DirectiveSource::Clinician => "clinician",
            DirectiveSource::NationalOptOutService => "national_opt_out_service",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "patient" => Some(DirectiveSource::Patient),
            "clinician" => Some(DirectiveSource::Clinician),
            "national_opt_out_service" => Some(DirectiveSource::NationalOptOutService),
            _ => None,
        }
    }
}

/// What a directive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectiveKind {
    /// A patient's own permit or deny (`RecordDirective`).
    Patient,
    /// The National Data Opt-out (`SetNationalOptOut`): a DENY of the
    /// purposes in [`DirectiveKind::OPT_OUT_PURPOSES`], lifted only by its
    /// exemptions. Never ends by itself, death included.
    NationalOptOut,
}

impl DirectiveKind {
    /// What the National Data Opt-out covers: uses beyond the patient's
    /// care. Never direct care, emergency care or safeguarding.
    pub const OPT_OUT_PURPOSES: [Purpose; 3] =
        [Purpose::Research, Purpose::Planning, Purpose::Commissioning];

    pub fn as_str(self) -> &'static str {
        match self {
            DirectiveKind::Patient => "patient",
            DirectiveKind::NationalOptOut => "national_opt_out",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        match s {
            "patient" => Some(DirectiveKind::Patient),
            "national_opt_out" => Some(DirectiveKind::NationalOptOut),
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
    pub kind: DirectiveKind,
    pub effect: Effect,
    pub purposes: Vec<Purpose>,
    pub organisation: Option<OdsCode>,
    /// Applies only to this staff member (principal id) when set.
    pub staff_member: Option<String>,
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

    /// Whether it speaks to this use by `actor`: each of its conditions is
    /// either unset or met.
    pub fn applies_to(&self, purpose: Purpose, actor: &Actor, category: RecordCategory) -> bool {
        (self.purposes.is_empty() || self.purposes.contains(&purpose))
            && self
                .organisation
                .as_ref()
                .is_none_or(|o| Some(o) == actor.organisation.as_ref())
            && self
                .staff_member
                .as_deref()
                .is_none_or(|m| m == actor.principal_id)
            && self.staff_role.as_deref().is_none_or(|r| r == actor.role)
            && (self.categories.is_empty() || self.categories.contains(&category))
    }

    /// How narrowly it is drawn: the number of its conditions that are set.
    /// Among the directives that apply, the most specific decide.
    pub fn specificity(&self) -> u8 {
        [
            !self.purposes.is_empty(),
            self.organisation.is_some(),
            self.staff_member.is_some(),
            self.staff_role.is_some(),
            !self.categories.is_empty(),
        ]
        .into_iter()
        .map(u8::from)
        .sum()
    }

    /// Its version: 1 as recorded, 2 once revoked. Nothing is deleted.
    pub fn version(&self) -> u32 {
        if self.revoked_at.is_some() { 2 } else { 1 }
    }
}
