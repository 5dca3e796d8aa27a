//! An audit event as the reporting service saw it, built only valid.

use chrono::{DateTime, Utc};
use sharedcare_kit::Error;

/// Longest id or code we accept (event id, patient id, principal, ...).
pub const MAX_ID_CHARS: usize = 128;
/// Longest free-text field (the outcome reason).
pub const MAX_TEXT_CHARS: usize = 1024;
/// Most events in one AppendBatch.
pub const MAX_BATCH: usize = 500;

/// A required text field: present, not blank, at most `max_chars` long.
/// The value is kept exactly as sent (it is part of the hashed record).
pub fn required_text(field: &str, value: &str, max_chars: usize) -> Result<String, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    optional_text(field, value, max_chars)
}

/// An optional text field: empty means absent; at most `max_chars` long.
pub fn optional_text(field: &str, value: &str, max_chars: usize) -> Result<String, Error> {
    if value.chars().count() > max_chars {
        return Err(Error::invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// The sender's id for an event: the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    pub fn parse(field: &str, value: &str) -> Result<Self, Error> {
        required_text(field, value, MAX_ID_CHARS).map(EventId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub use sharedcare_kit::ids::PatientId;

/// What was done to the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
    Search,
    Export,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The access happened.
    Success,
    /// Consent (or scope) refused it.
    Denied,
    /// It was permitted but failed.
    Failed,
}

/// Why the data was used; unspecified is allowed (the event says what it was told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Unspecified,
    DirectCare,
    Research,
    Planning,
    PatientAccess,
    EmergencyCare,
    Safeguarding,
    Commissioning,
}

/// What kind of principal acted; unspecified is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    Unspecified,
    Staff,
    Application,
    Service,
    Admin,
    /// A patient acting for themselves (their own access, or their own
    /// directives).
    Patient,
}

/// Who acted, at which organisation, in which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Required.
    pub principal_id: String,
    pub kind: PrincipalKind,
    /// Required for every kind but a patient (patients have no
    /// organisation; empty when absent).
    pub organisation_ods_code: String,
    /// Optional (empty when absent).
    pub role: String,
    /// The patient a patient actor's token is bound to: present exactly
    /// when `kind` is [`PrincipalKind::Patient`].
    pub patient_id: Option<PatientId>,
    /// The names the actor's token carried (optional; for access reports).
    pub display_name: String,
    pub organisation_name: String,
    /// The application acting for a staff actor, if one was.
    pub acting_application: Option<ActingApplication>,
}

/// An application acting for a named member of staff (its token's `act`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActingApplication {
    /// Required.
    pub principal_id: String,
    /// Optional (empty when absent).
    pub display_name: String,
}

/// One access, validated. Optional text fields are empty when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub event_id: EventId,
    pub occur_time: DateTime<Utc>,
    pub actor: Actor,
    pub patient_id: PatientId,
    pub action: Action,
    pub resource_type: String,
    pub record_id: String,
    /// The records a search or export page disclosed together.
    pub record_ids: Vec<String>,
    pub purpose: Purpose,
    pub outcome: Outcome,
    pub outcome_reason: String,
    pub break_glass: bool,
    /// Required.
    pub source_service: String,
    pub decision_id: String,
    pub trace_id: String,
    /// The principal whose token appended the event: taken by audit from
    /// the token, never from what the sender claims. Part of the hashed
    /// bytes, so the log says which service vouched for each entry.
    pub appended_by: String,
}

/// An event ready to be logged: its canonical bytes (what is stored and
/// hashed) and the keys the log is indexed by, taken from the same event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    pub event_id: EventId,
    pub patient_id: PatientId,
    pub bytes: Vec<u8>,
    /// For a break-glass event, the acting organisation's ODS code (empty
    /// for an actor with none): its privacy officer's feed is read by it.
    /// `None` for every other event.
    pub break_glass_by: Option<String>,
}

impl EncodedEvent {
    /// Encodes a validated event with `encode` (the wire encoding, which the
    /// gRPC layer owns), keeping the keys consistent with the bytes.
    pub fn new(event: &AuditEvent, encode: impl FnOnce(&AuditEvent) -> Vec<u8>) -> Self {
        EncodedEvent {
            event_id: event.event_id.clone(),
            patient_id: event.patient_id.clone(),
            bytes: encode(event),
            break_glass_by: event
                .break_glass
                .then(|| event.actor.organisation_ods_code.clone()),
        }
    }

    /// Whether `existing` records exactly this event: an idempotent replay
    /// when true, a conflicting reuse of the event id when false
    /// (`break_glass_by` is derived from the bytes, so they cover it).
    pub fn is_replay_of(&self, existing: &super::Entry) -> bool {
        existing.event_id == self.event_id
            && existing.patient_id == self.patient_id
            && existing.event == self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_text_refuses_empty_and_blank_naming_the_field() {
        for value in ["", "   ", "\t"] {
            let err = required_text("event.source_service", value, 10).expect_err("refused");
            assert!(err.is_invalid_argument());
            assert_eq!(err.field.as_deref(), Some("event.source_service"));
            assert!(err.message.contains("is required"), "{}", err.message);
        }
    }

    #[test]
    fn text_is_kept_exactly_as_sent() {
        assert_eq!(
            required_text("f", " records ", 10).expect("ok"),
            " records "
        );
        assert_eq!(optional_text("f", "", 10).expect("ok"), "");
    }

    #[test]
    fn length_is_counted_in_characters() {
        let max = "é".repeat(MAX_ID_CHARS);
        assert!(EventId::parse("event.event_id", &max).is_ok());
        let over = "a".repeat(MAX_ID_CHARS + 1);
        let err = EventId::parse("event.event_id", &over).expect_err("too long");
        assert_eq!(err.field.as_deref(), Some("event.event_id"));
        assert!(err.message.contains("at most 128"), "{}", err.message);
    }

    #[test]
    fn control_characters_are_refused() {
        let err = optional_text("event.outcome_reason", "a\nb", 100).expect_err("refused");
        assert_eq!(err.field.as_deref(), Some("event.outcome_reason"));
    }

    #[test]
    fn patient_id_is_required() {
        let err = PatientId::parse("events[2].patient_id", "").expect_err("refused");
        assert_eq!(err.field.as_deref(), Some("events[2].patient_id"));
        assert_eq!(
            PatientId::parse("p", "9990001234").expect("ok").as_str(),
            "9990001234"
        );
    }
}
