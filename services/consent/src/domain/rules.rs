//! The configurable parts of the decision: what each kind of relationship
//! sees, and how break-glass works.

use chrono::Duration;

use super::{CareRelationship, Directive, RelationshipScopes};

/// Break-glass: emergency access without a care relationship, for staff
/// whose role carries the `break_glass` capability (identity's role map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassRules {
    /// How long a grant lasts; then break-glass must be asked for again.
    pub grant_for: Duration,
    /// Whether break-glass overrides a patient's objection (a DENY
    /// directive that applies). Off unless configured.
    pub overrides_patient_deny: bool,
}

impl Default for BreakGlassRules {
    fn default() -> Self {
        BreakGlassRules {
            grant_for: Duration::minutes(60),
            overrides_patient_deny: false,
        }
    }
}

/// Everything configurable that a decision depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub scopes: RelationshipScopes,
    pub break_glass: BreakGlassRules,
}

impl Rules {
    pub fn with_scopes(scopes: RelationshipScopes) -> Self {
        Rules {
            scopes,
            ..Rules::default()
        }
    }
}

/// The patient's consent version: how many changes their relationships and
/// directives have seen (each recorded, ended early or revoked once; nothing
/// is deleted), so it only grows and two decisions at the same version were
/// made from the same consent.
pub fn consent_version(relationships: &[CareRelationship], directives: &[Directive]) -> u64 {
    let changes = relationships.iter().map(|r| u64::from(r.version()));
    let more = directives.iter().map(|d| u64::from(d.version()));
    changes.chain(more).sum()
}
