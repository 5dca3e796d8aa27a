//! Between the wire (`sharedcare.audit.v1`) and the domain: decoding
//! validates and names the field that is wrong; encoding is total.
//!
//! The canonical bytes of an event are the protobuf encoding of the event
//! as the domain holds it, re-encoded after validation: prost writes known
//! fields in field-number order, omits defaults and drops unknown fields,
//! so the same event always encodes to the same bytes whatever the sender's
//! encoder did.

use prost::Message;
use sharedcare_kit::{Error, proto_time};
use sharedcare_proto::{audit::v1 as pb, common::v1 as common};

use crate::domain::{
    Action, Actor, AuditEvent, EncodedEvent, Entry, EventId, MAX_ID_CHARS, MAX_TEXT_CHARS, Outcome,
    PatientId, PrincipalKind, Purpose, optional_text, required_text,
};

/// Validates `event`, naming fields below `prefix` (`event` or `events[2]`).
pub fn decode_event(prefix: &str, event: Option<pb::AuditEvent>) -> Result<AuditEvent, Error> {
    let event = event.ok_or_else(|| Error::invalid(prefix, "is required"))?;
    let f = |name: &str| format!("{prefix}.{name}");
    let event_id = EventId::parse(&f("event_id"), &event.event_id)?;
    let occur_time = proto_time::from_proto(&f("occur_time"), event.occur_time.as_ref())?
        .ok_or_else(|| Error::invalid(f("occur_time"), "is required"))?;
    let actor = event
        .actor
        .ok_or_else(|| Error::invalid(f("actor"), "is required"))?;
    let actor = Actor {
        principal_id: required_text(&f("actor.principal_id"), &actor.principal_id, MAX_ID_CHARS)?,
        kind: decode_kind(&f("actor.kind"), actor.kind)?,
        organisation_ods_code: required_text(
            &f("actor.organisation_ods_code"),
            &actor.organisation_ods_code,
            MAX_ID_CHARS,
        )?,
        role: optional_text(&f("actor.role"), &actor.role, MAX_ID_CHARS)?,
    };
    Ok(AuditEvent {
        event_id,
        occur_time,
        actor,
        patient_id: PatientId::parse(&f("patient_id"), &event.patient_id)?,
        action: decode_action(&f("action"), event.action)?,
        resource_type: optional_text(&f("resource_type"), &event.resource_type, MAX_ID_CHARS)?,
        record_id: optional_text(&f("record_id"), &event.record_id, MAX_ID_CHARS)?,
        purpose: decode_purpose(&f("purpose"), event.purpose)?,
        outcome: decode_outcome(&f("outcome"), event.outcome)?,
        outcome_reason: optional_text(&f("outcome_reason"), &event.outcome_reason, MAX_TEXT_CHARS)?,
        break_glass: event.break_glass,
        source_service: required_text(&f("source_service"), &event.source_service, MAX_ID_CHARS)?,
        decision_id: optional_text(&f("decision_id"), &event.decision_id, MAX_ID_CHARS)?,
        trace_id: optional_text(&f("trace_id"), &event.trace_id, MAX_ID_CHARS)?,
    })
}

/// The event's canonical bytes, with its keys: what the store logs.
pub fn encode_for_log(event: &AuditEvent) -> EncodedEvent {
    EncodedEvent::new(event, |e| encode_event(e).encode_to_vec())
}

pub fn encode_event(e: &AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        event_id: e.event_id.as_str().to_owned(),
        occur_time: Some(proto_time::to_proto(e.occur_time)),
        actor: Some(common::Actor {
            principal_id: e.actor.principal_id.clone(),
            kind: encode_kind(e.actor.kind) as i32,
            organisation_ods_code: e.actor.organisation_ods_code.clone(),
            role: e.actor.role.clone(),
        }),
        patient_id: e.patient_id.as_str().to_owned(),
        action: encode_action(e.action) as i32,
        resource_type: e.resource_type.clone(),
        record_id: e.record_id.clone(),
        purpose: encode_purpose(e.purpose) as i32,
        outcome: encode_outcome(e.outcome) as i32,
        outcome_reason: e.outcome_reason.clone(),
        break_glass: e.break_glass,
        source_service: e.source_service.clone(),
        decision_id: e.decision_id.clone(),
        trace_id: e.trace_id.clone(),
    }
}

/// A stored entry for the wire. Its event is decoded from the stored bytes,
/// which are returned exactly as hashed.
pub fn encode_entry(entry: &Entry) -> Result<pb::AuditEntry, Error> {
    Ok(pb::AuditEntry {
        sequence: i64::try_from(entry.sequence)
            .map_err(|_| Error::internal("reading the audit log", "sequence out of range"))?,
        event: Some(stored_event(entry)?),
        record_time: Some(proto_time::to_proto(entry.record_time)),
        previous_hash: entry.previous_hash.to_vec(),
        entry_hash: entry.entry_hash.to_vec(),
    })
}

/// One line of "who accessed my record".
pub fn encode_report_line(entry: &Entry) -> Result<pb::AccessReportLine, Error> {
    let event = stored_event(entry)?;
    Ok(pb::AccessReportLine {
        occur_time: event.occur_time,
        actor: event.actor,
        action: event.action,
        resource_type: event.resource_type,
        purpose: event.purpose,
        outcome: event.outcome,
        outcome_reason: event.outcome_reason,
        break_glass: event.break_glass,
    })
}

fn stored_event(entry: &Entry) -> Result<pb::AuditEvent, Error> {
    pb::AuditEvent::decode(entry.event.as_slice()).map_err(|e| {
        Error::internal(
            "reading the audit log",
            format!(
                "entry {}: stored event does not decode: {e}",
                entry.sequence
            ),
        )
    })
}

fn decode_action(field: &str, value: i32) -> Result<Action, Error> {
    match pb::Action::try_from(value) {
        Ok(pb::Action::Read) => Ok(Action::Read),
        Ok(pb::Action::Create) => Ok(Action::Create),
        Ok(pb::Action::Update) => Ok(Action::Update),
        Ok(pb::Action::Delete) => Ok(Action::Delete),
        Ok(pb::Action::Search) => Ok(Action::Search),
        Ok(pb::Action::Export) => Ok(Action::Export),
        Ok(pb::Action::Unspecified) => Err(Error::invalid(field, "is required")),
        Err(_) => Err(Error::invalid(field, "is not a known action")),
    }
}

fn encode_action(action: Action) -> pb::Action {
    match action {
        Action::Read => pb::Action::Read,
        Action::Create => pb::Action::Create,
        Action::Update => pb::Action::Update,
        Action::Delete => pb::Action::Delete,
        Action::Search => pb::Action::Search,
        Action::Export => pb::Action::Export,
    }
}

fn decode_outcome(field: &str, value: i32) -> Result<Outcome, Error> {
    match pb::Outcome::try_from(value) {
        Ok(pb::Outcome::Success) => Ok(Outcome::Success),
        Ok(pb::Outcome::Denied) => Ok(Outcome::Denied),
        Ok(pb::Outcome::Failed) => Ok(Outcome::Failed),
        Ok(pb::Outcome::Unspecified) => Err(Error::invalid(field, "is required")),
        Err(_) => Err(Error::invalid(field, "is not a known outcome")),
    }
}

fn encode_outcome(outcome: Outcome) -> pb::Outcome {
    match outcome {
        Outcome::Success => pb::Outcome::Success,
        Outcome::Denied => pb::Outcome::Denied,
        Outcome::Failed => pb::Outcome::Failed,
    }
}

fn decode_purpose(field: &str, value: i32) -> Result<Purpose, Error> {
    match common::Purpose::try_from(value) {
        Ok(common::Purpose::Unspecified) => Ok(Purpose::Unspecified),
        Ok(common::Purpose::DirectCare) => Ok(Purpose::DirectCare),
        Ok(common::Purpose::Research) => Ok(Purpose::Research),
        Ok(common::Purpose::Planning) => Ok(Purpose::Planning),
        Ok(common::Purpose::PatientAccess) => Ok(Purpose::PatientAccess),
        Err(_) => Err(Error::invalid(field, "is not a known purpose")),
    }
}

fn encode_purpose(purpose: Purpose) -> common::Purpose {
    match purpose {
        Purpose::Unspecified => common::Purpose::Unspecified,
        Purpose::DirectCare => common::Purpose::DirectCare,
        Purpose::Research => common::Purpose::Research,
        Purpose::Planning => common::Purpose::Planning,
        Purpose::PatientAccess => common::Purpose::PatientAccess,
    }
}

fn decode_kind(field: &str, value: i32) -> Result<PrincipalKind, Error> {
    match common::PrincipalKind::try_from(value) {
        Ok(common::PrincipalKind::Unspecified) => Ok(PrincipalKind::Unspecified),
        Ok(common::PrincipalKind::Staff) => Ok(PrincipalKind::Staff),
        Ok(common::PrincipalKind::Application) => Ok(PrincipalKind::Application),
        Ok(common::PrincipalKind::Service) => Ok(PrincipalKind::Service),
        Ok(common::PrincipalKind::Admin) => Ok(PrincipalKind::Admin),
        Err(_) => Err(Error::invalid(field, "is not a known principal kind")),
    }
}

fn encode_kind(kind: PrincipalKind) -> common::PrincipalKind {
    match kind {
        PrincipalKind::Unspecified => common::PrincipalKind::Unspecified,
        PrincipalKind::Staff => common::PrincipalKind::Staff,
        PrincipalKind::Application => common::PrincipalKind::Application,
        PrincipalKind::Service => common::PrincipalKind::Service,
        PrincipalKind::Admin => common::PrincipalKind::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_event() -> pb::AuditEvent {
        pb::AuditEvent {
            event_id: "ev-1".into(),
            occur_time: Some(prost_types::Timestamp {
                seconds: 1_750_000_000,
                nanos: 5,
            }),
            actor: Some(common::Actor {
                principal_id: "staff-1".into(),
                kind: common::PrincipalKind::Staff as i32,
                organisation_ods_code: "A81001".into(),
                role: "R8000".into(),
            }),
            patient_id: "patient-1".into(),
            action: pb::Action::Read as i32,
            resource_type: "Observation".into(),
            record_id: "rec-1".into(),
            purpose: common::Purpose::DirectCare as i32,
            outcome: pb::Outcome::Denied as i32,
            outcome_reason: "DIRECTIVE_DENY".into(),
            break_glass: true,
            source_service: "records".into(),
            decision_id: "dec-1".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        }
    }

    #[test]
    fn a_valid_event_round_trips_exactly() {
        let wire = full_event();
        let event = decode_event("event", Some(wire.clone())).expect("valid");
        assert_eq!(encode_event(&event), wire);
    }

    #[test]
    fn canonical_bytes_ignore_unknown_fields() {
        let mut bytes = full_event().encode_to_vec();
        // Field 99, varint 1: a field from some future version of the API.
        bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
        let received = pb::AuditEvent::decode(bytes.as_slice()).expect("decodes");
        let a = encode_for_log(&decode_event("event", Some(received)).expect("valid"));
        let b = encode_for_log(&decode_event("event", Some(full_event())).expect("valid"));
        assert_eq!(a, b);
        assert_eq!(a.bytes, full_event().encode_to_vec());
    }

    #[test]
    fn unknown_enum_values_are_refused() {
        let mut e = full_event();
        e.action = 42;
        let err = decode_event("event", Some(e)).expect_err("refused");
        assert_eq!(err.field.as_deref(), Some("event.action"));
        let mut e = full_event();
        e.purpose = 42;
        let err = decode_event("events[1]", Some(e)).expect_err("refused");
        assert_eq!(err.field.as_deref(), Some("events[1].purpose"));
    }
}
