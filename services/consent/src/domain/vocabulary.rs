//! The closed vocabularies consent reasons with, and their stored names.

/// Why data is being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    DirectCare,
    Research,
    Planning,
    PatientAccess,
    EmergencyCare,
    Safeguarding,
    Commissioning,
}

impl Purpose {
    /// Care of this patient: decided by a care relationship (and what its
    /// kind covers), not by explicit consent.
    pub fn rests_on_relationship(self) -> bool {
        matches!(
            self,
            Purpose::DirectCare | Purpose::EmergencyCare | Purpose::Safeguarding
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::DirectCare => "direct_care",
            Purpose::Research => "research",
            Purpose::Planning => "planning",
            Purpose::PatientAccess => "patient_access",
            Purpose::EmergencyCare => "emergency_care",
            Purpose::Safeguarding => "safeguarding",
            Purpose::Commissioning => "commissioning",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        Some(match s {
            "direct_care" => Purpose::DirectCare,
            "research" => Purpose::Research,
            "planning" => Purpose::Planning,
            "patient_access" => Purpose::PatientAccess,
            "emergency_care" => Purpose::EmergencyCare,
            "safeguarding" => Purpose::Safeguarding,
            "commissioning" => Purpose::Commissioning,
            _ => return None,
        })
    }
}

/// A part of the record with its own sharing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordCategory {
    General,
    SexualHealth,
    MentalHealth,
    Safeguarding,
    SocialCare,
}

impl RecordCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordCategory::General => "general",
            RecordCategory::SexualHealth => "sexual_health",
            RecordCategory::MentalHealth => "mental_health",
            RecordCategory::Safeguarding => "safeguarding",
            RecordCategory::SocialCare => "social_care",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        Some(match s {
            "general" => RecordCategory::General,
            "sexual_health" => RecordCategory::SexualHealth,
            "mental_health" => RecordCategory::MentalHealth,
            "safeguarding" => RecordCategory::Safeguarding,
            "social_care" => RecordCategory::SocialCare,
            _ => return None,
        })
    }
}

/// What a directive asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Permit,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Permit => "permit",
            Effect::Deny => "deny",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        Some(match s {
            "permit" => Effect::Permit,
            "deny" => Effect::Deny,
            _ => return None,
        })
    }
}

/// The legitimate relationship an organisation has with a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CareRelationshipKind {
    RegisteredGp,
    HospitalEpisode,
    Referral,
    CareHomePlacement,
    CommunityCare,
    SocialCareTeam,
    /// Emergency access granted by break-glass to one staff member, for a
    /// configured time: recorded by Evaluate, never asserted.
    BreakGlass,
}

impl CareRelationshipKind {
    /// The kinds an organisation asserts (not break-glass grants).
    pub const ALL: [CareRelationshipKind; 6] = [
        CareRelationshipKind::RegisteredGp,
        CareRelationshipKind::HospitalEpisode,
        CareRelationshipKind::Referral,
        CareRelationshipKind::CareHomePlacement,
        CareRelationshipKind::CommunityCare,
        CareRelationshipKind::SocialCareTeam,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CareRelationshipKind::RegisteredGp => "registered_gp",
            CareRelationshipKind::HospitalEpisode => "hospital_episode",
            CareRelationshipKind::Referral => "referral",
            CareRelationshipKind::CareHomePlacement => "care_home_placement",
            CareRelationshipKind::CommunityCare => "community_care",
            CareRelationshipKind::SocialCareTeam => "social_care_team",
            CareRelationshipKind::BreakGlass => "break_glass",
        }
    }

    pub fn from_stored(s: &str) -> Option<Self> {
        Some(match s {
            "registered_gp" => CareRelationshipKind::RegisteredGp,
            "hospital_episode" => CareRelationshipKind::HospitalEpisode,
            "referral" => CareRelationshipKind::Referral,
            "care_home_placement" => CareRelationshipKind::CareHomePlacement,
            "community_care" => CareRelationshipKind::CommunityCare,
            "social_care_team" => CareRelationshipKind::SocialCareTeam,
            "break_glass" => CareRelationshipKind::BreakGlass,
            _ => return None,
        })
    }

    /// How people say it, for decision messages.
    pub fn describe(self) -> &'static str {
        match self {
            CareRelationshipKind::RegisteredGp => "registered GP",
            CareRelationshipKind::HospitalEpisode => "hospital episode",
            CareRelationshipKind::Referral => "referral",
            CareRelationshipKind::CareHomePlacement => "care home placement",
            CareRelationshipKind::CommunityCare => "community care",
            CareRelationshipKind::SocialCareTeam => "social-care team",
            CareRelationshipKind::BreakGlass => "break-glass",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip() {
        for p in [
            Purpose::DirectCare,
            Purpose::Research,
            Purpose::Planning,
            Purpose::PatientAccess,
            Purpose::EmergencyCare,
            Purpose::Safeguarding,
            Purpose::Commissioning,
        ] {
            assert_eq!(Purpose::from_stored(p.as_str()), Some(p));
        }
        for c in [
            RecordCategory::General,
            RecordCategory::SexualHealth,
            RecordCategory::MentalHealth,
            RecordCategory::Safeguarding,
            RecordCategory::SocialCare,
        ] {
            assert_eq!(RecordCategory::from_stored(c.as_str()), Some(c));
        }
        for e in [Effect::Permit, Effect::Deny] {
            assert_eq!(Effect::from_stored(e.as_str()), Some(e));
        }
        for k in [
            CareRelationshipKind::RegisteredGp,
            CareRelationshipKind::HospitalEpisode,
            CareRelationshipKind::Referral,
            CareRelationshipKind::CareHomePlacement,
            CareRelationshipKind::CommunityCare,
            CareRelationshipKind::SocialCareTeam,
            CareRelationshipKind::BreakGlass,
        ] {
            assert_eq!(CareRelationshipKind::from_stored(k.as_str()), Some(k));
        }
        assert_eq!(Purpose::from_stored("marketing"), None);
    }
}
