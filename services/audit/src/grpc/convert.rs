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
    ActingApplication, Action, Actor, AuditEvent, EncodedEvent, Entry, EventId, MAX_ID_CHARS,
    MAX_TEXT_CHARS, Outcome, PatientId, PrincipalKind, Purpose, checkpoint::SignedHead,
    optional_text, required_text,
};

/// How far ahead of audit's clock an event's time may be (clock skew
/// between services), no further.
const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Validates `event`, naming fields below `prefix` (`event` or `events[2]`).
/// `appended_by` is the principal whose token carried the event: it replaces
/// whatever the sender put in the event's own `appended_by`.
pub fn decode_event(
    prefix: &str,
    event: Option<pb::AuditEvent>,
    appended_by: &str,
) -> Result<AuditEvent, Error> {
    let event = event.ok_or_else(|| Error::invalid(prefix, "is required"))?;
    let f = |name: &str| format!("{prefix}.{name}");
    let event_id = EventId::parse(&f("event_id"), &event.event_id)?;
    let occur_time = proto_time::from_proto(&f("occur_time"), event.occur_time.as_ref())?
        .ok_or_else(|| Error::invalid(f("occur_time"), "is required"))?;
    if occur_time > chrono::Utc::now() + MAX_CLOCK_SKEW {
        return Err(Error::invalid(
            f("occur_time"),
            "is in the future (more than 5 minutes ahead of audit's clock)",
        ));
    }
    let actor = decode_actor(
        &f("actor"),
        event
            .actor
            .ok_or_else(|| Error::invalid(f("actor"), "is required"))?,
    )?;
    Ok(AuditEvent {
        event_id,
        occur_time,
        actor,
        patient_id: PatientId::parse(&f("patient_id"), &event.patient_id)?,
        action: decode_action(&f("action"), event.action)?,
        resource_type: optional_text(&f("resource_type"), &event.resource_type, MAX_ID_CHARS)?,
        record_id: optional_text(&f("record_id"), &event.record_id, MAX_ID_CHARS)?,
        record_ids: decode_record_ids(&f("record_ids"), event.record_ids)?,
        purpose: decode_purpose(&f("purpose"), event.purpose)?,
        outcome: decode_outcome(&f("outcome"), event.outcome)?,
        outcome_reason: optional_text(&f("outcome_reason"), &event.outcome_reason, MAX_TEXT_CHARS)?,
        break_glass: event.break_glass,
        source_service: required_text(&f("source_service"), &event.source_service, MAX_ID_CHARS)?,
        decision_id: optional_text(&f("decision_id"), &event.decision_id, MAX_ID_CHARS)?,
        trace_id: optional_text(&f("trace_id"), &event.trace_id, MAX_ID_CHARS)?,
        appended_by: appended_by.to_owned(),
    })
}

/// Most records one event may name (a page of search results).
const MAX_RECORD_IDS: usize = 500;

fn decode_record_ids(field: &str, ids: Vec<String>) -> Result<Vec<String>, Error> {
    if ids.len() > MAX_RECORD_IDS {
        return Err(Error::invalid(
            field,
            format!("names at most {MAX_RECORD_IDS} records"),
        ));
    }
    for id in &ids {
        if id.trim().is_empty() || id.chars().count() > MAX_ID_CHARS {
            return Err(Error::invalid(
                field,
                format!("each must be 1 to {MAX_ID_CHARS} characters"),
            ));
        }
    }
    Ok(ids)
}

/// An actor: a patient names the patient their token is bound to and has no
/// organisation to require; every other kind acts for an organisation and
/// names no patient.
fn decode_actor(prefix: &str, actor: common::Actor) -> Result<Actor, Error> {
    let f = |name: &str| format!("{prefix}.{name}");
    let kind = decode_kind(&f("kind"), actor.kind)?;
    let organisation = &actor.organisation_ods_code;
    let (organisation_ods_code, patient_id) = if kind == PrincipalKind::Patient {
        (
            optional_text(&f("organisation_ods_code"), organisation, MAX_ID_CHARS)?,
            Some(PatientId::parse(&f("patient_id"), &actor.patient_id)?),
        )
    } else {
        if !actor.patient_id.is_empty() {
            return Err(Error::invalid(
                f("patient_id"),
                "must be empty unless the actor is a patient",
            ));
        }
        (
            required_text(&f("organisation_ods_code"), organisation, MAX_ID_CHARS)?,
            None,
        )
    };
    Ok(Actor {
        principal_id: required_text(&f("principal_id"), &actor.principal_id, MAX_ID_CHARS)?,
        kind,
        organisation_ods_code,
        role: optional_text(&f("role"), &actor.role, MAX_ID_CHARS)?,
        patient_id,
        display_name: optional_text(&f("display_name"), &actor.display_name, MAX_ID_CHARS)?,
        organisation_name: optional_text(
            &f("organisation_name"),
            &actor.organisation_name,
            MAX_ID_CHARS,
        )?,
        acting_application: match actor.acting_application {
            None => None,
            Some(_) if kind != PrincipalKind::Staff => {
                return Err(Error::invalid(
                    f("acting_application"),
                    "is only for a staff actor",
                ));
            }
            Some(app) => Some(ActingApplication {
                principal_id: required_text(
                    &f("acting_application.principal_id"),
                    &app.principal_id,
                    MAX_ID_CHARS,
                )?,
                display_name: optional_text(
                    &f("acting_application.display_name"),
                    &app.display_name,
                    MAX_ID_CHARS,
                )?,
            }),
        },
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
            patient_id: e
                .actor
                .patient_id
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            display_name: e.actor.display_name.clone(),
            organisation_name: e.actor.organisation_name.clone(),
            // Not kept: the trail records who acted, not what their role allows.
            capabilities: vec![],
            acting_application: e.actor.acting_application.as_ref().map(|a| {
                common::ActingApplication {
                    principal_id: a.principal_id.clone(),
                    display_name: a.display_name.clone(),
                }
            }),
        }),
        patient_id: e.patient_id.as_str().to_owned(),
        action: encode_action(e.action) as i32,
        resource_type: e.resource_type.clone(),
        record_id: e.record_id.clone(),
        record_ids: e.record_ids.clone(),
        purpose: encode_purpose(e.purpose) as i32,
        outcome: encode_outcome(e.outcome) as i32,
        outcome_reason: e.outcome_reason.clone(),
        break_glass: e.break_glass,
        source_service: e.source_service.clone(),
        decision_id: e.decision_id.clone(),
        trace_id: e.trace_id.clone(),
        appended_by: e.appended_by.clone(),
        // Transport only: never in the leaf.
        trace_parent: String::new(),
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
        leaf_hash: entry.leaf_hash().to_vec(),
    })
}

/// A signed tree head for the wire.
pub fn encode_head(signed: &SignedHead) -> Result<pb::SignedTreeHeadResponse, Error> {
    Ok(pb::SignedTreeHeadResponse {
        tree_size: i64::try_from(signed.head.size)
            .map_err(|_| Error::internal("signing a tree head", "size out of range"))?,
        root_hash: signed.head.root.to_vec(),
        signature: signed.signature.to_vec(),
        checkpoint: signed.note.clone(),
        origin: signed.head.origin.clone(),
        key_id: signed.key_id.to_vec(),
    })
}

/// One line of "who accessed my record", in codes and in words.
pub fn encode_report_line(entry: &Entry) -> Result<pb::AccessReportLine, Error> {
    let sequence = i64::try_from(entry.sequence)
        .map_err(|_| Error::internal("reading the audit log", "sequence out of range"))?;
    Ok(crate::report::line(sequence, stored_event(entry)?))
}

/// A break-glass entry for the feed, with its line built as the access
/// report's are; `None` unless the stored event is flagged break-glass
/// and, when `organisation` is named, its actor is that organisation's.
/// The store found the entry by a column copied out of the event, which
/// the leaf hash does not cover: the event's own bytes decide.
pub fn encode_break_glass_access(
    entry: &Entry,
    organisation: Option<&str>,
) -> Result<Option<pb::BreakGlassAccess>, Error> {
    let event = stored_event(entry)?;
    let by = event
        .actor
        .as_ref()
        .map(|a| a.organisation_ods_code.as_str())
        .unwrap_or_default();
    if !event.break_glass || organisation.is_some_and(|o| o != by) {
        return Ok(None);
    }
    let sequence = i64::try_from(entry.sequence)
        .map_err(|_| Error::internal("reading the audit log", "sequence out of range"))?;
    Ok(Some(pb::BreakGlassAccess {
        patient_id: event.patient_id.clone(),
        line: Some(crate::report::line(sequence, event)),
    }))
}

/// The organisation of the actor of a stored entry ("" for a patient).
pub fn actor_organisation(entry: &Entry) -> Result<String, Error> {
    Ok(stored_event(entry)?
        .actor
        .map(|a| a.organisation_ods_code)
        .unwrap_or_default())
}

/// The stored event, with the indexed columns laid over what the bytes say:
/// what the log is queried by is what an auditor hashes (see
/// `domain::entry`), so a row whose columns were changed no longer matches
/// its leaf.
fn stored_event(entry: &Entry) -> Result<pb::AuditEvent, Error> {
    let mut event = pb::AuditEvent::decode(entry.event.as_slice()).map_err(|e| {
        Error::internal(
            "reading the audit log",
            format!(
                "entry {}: stored event does not decode: {e}",
                entry.sequence
            ),
        )
    })?;
    event.event_id = entry.event_id.as_str().to_owned();
    event.patient_id = entry.patient_id.as_str().to_owned();
    Ok(event)
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
        Ok(common::Purpose::EmergencyCare) => Ok(Purpose::EmergencyCare),
        Ok(common::Purpose::Safeguarding) => Ok(Purpose::Safeguarding),
        Ok(common::Purpose::Commissioning) => Ok(Purpose::Commissioning),
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
        Purpose::EmergencyCare => common::Purpose::EmergencyCare,
        Purpose::Safeguarding => common::Purpose::Safeguarding,
        Purpose::Commissioning => common::Purpose::Commissioning,
    }
}

fn decode_kind(field: &str, value: i32) -> Result<PrincipalKind, Error> {
    match common::PrincipalKind::try_from(value) {
        Ok(common::PrincipalKind::Unspecified) => Ok(PrincipalKind::Unspecified),
        Ok(common::PrincipalKind::Staff) => Ok(PrincipalKind::Staff),
        Ok(common::PrincipalKind::Application) => Ok(PrincipalKind::Application),
        Ok(common::PrincipalKind::Service) => Ok(PrincipalKind::Service),
        Ok(common::PrincipalKind::Admin) => Ok(PrincipalKind::Admin),
        Ok(common::PrincipalKind::Patient) => Ok(PrincipalKind::Patient),
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
        PrincipalKind::Patient => common::PrincipalKind::Patient,
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
                patient_id: String::new(),
                display_name: "Dr Asha Patel".into(),
                organisation_name: "Leeds Health Centre".into(),
                capabilities: vec![],
                acting_application: Some(common::ActingApplication {
                    principal_id: "app-1".into(),
                    display_name: "Leeds EPR".into(),
                }),
            }),
            patient_id: "patient-1".into(),
            action: pb::Action::Read as i32,
            resource_type: "Observation".into(),
            record_id: "rec-1".into(),
            record_ids: vec!["rec-2".into(), "rec-3".into()],
            purpose: common::Purpose::DirectCare as i32,
            outcome: pb::Outcome::Denied as i32,
            outcome_reason: "DIRECTIVE_DENY".into(),
            break_glass: true,
            source_service: "records".into(),
            decision_id: "dec-1".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            appended_by: "svc-records".into(),
            trace_parent: String::new(),
        }
    }

    fn decode(prefix: &str, e: pb::AuditEvent) -> Result<AuditEvent, Error> {
        decode_event(prefix, Some(e), "svc-records")
    }

    #[test]
    fn a_valid_event_round_trips_exactly() {
        let wire = full_event();
        let event = decode("event", wire.clone()).expect("valid");
        assert_eq!(encode_event(&event), wire);
    }

    #[test]
    fn a_break_glass_event_is_indexed_by_its_actors_organisation() {
        let flagged = decode("event", full_event()).expect("valid");
        assert_eq!(
            encode_for_log(&flagged).break_glass_by.as_deref(),
            Some("A81001")
        );
        let mut plain = full_event();
        plain.break_glass = false;
        let plain = decode("event", plain).expect("valid");
        assert_eq!(encode_for_log(&plain).break_glass_by, None);
    }

    #[test]
    fn appended_by_comes_from_the_token_not_the_event() {
        let mut claimed = full_event();
        claimed.appended_by = "svc-someone-else".into();
        let event = decode("event", claimed).expect("valid");
        assert_eq!(event.appended_by, "svc-records");
        let other = decode_event("event", Some(full_event()), "svc-consent").expect("valid");
        // Part of the hashed bytes: another appender is another event.
        assert_ne!(encode_for_log(&event).bytes, encode_for_log(&other).bytes);
    }

    fn patient_actor(e: &mut pb::AuditEvent) -> &mut common::Actor {
        let actor = e.actor.as_mut().expect("actor");
        actor.kind = common::PrincipalKind::Patient as i32;
        actor.organisation_ods_code.clear();
        actor.role.clear();
        actor.patient_id = "patient-1".into();
        // Only staff are acted for by an application.
        actor.acting_application = None;
        actor
    }

    #[test]
    fn an_acting_application_is_kept_and_only_for_staff() {
        let event = decode("event", full_event()).expect("valid");
        let app = event.actor.acting_application.as_ref().expect("kept");
        assert_eq!(app.principal_id, "app-1");
        assert_eq!(encode_event(&event), full_event());
        let mut wire = full_event();
        wire.actor.as_mut().expect("actor").kind = common::PrincipalKind::Application as i32;
        let err = decode("event", wire).expect_err("an application acts for staff only");
        assert_eq!(err.field.as_deref(), Some("event.actor.acting_application"));
        let mut wire = full_event();
        if let Some(app) = wire
            .actor
            .as_mut()
            .and_then(|a| a.acting_application.as_mut())
        {
            app.principal_id.clear();
        }
        let err = decode("event", wire).expect_err("names its application");
        assert_eq!(
            err.field.as_deref(),
            Some("event.actor.acting_application.principal_id")
        );
    }

    #[test]
    fn a_patient_actor_names_their_patient_and_no_organisation() {
        let mut wire = full_event();
        patient_actor(&mut wire);
        let event = decode("event", wire.clone()).expect("valid");
        assert_eq!(event.actor.kind, PrincipalKind::Patient);
        assert_eq!(
            event.actor.patient_id.as_ref().map(PatientId::as_str),
            Some("patient-1")
        );
        assert_eq!(encode_event(&event), wire);

        let mut e = full_event();
        patient_actor(&mut e).patient_id.clear();
        let err = decode("event", e).expect_err("no patient");
        assert_eq!(err.field.as_deref(), Some("event.actor.patient_id"));

        // Every other kind acts for an organisation and names no patient.
        let mut e = full_event();
        e.actor.as_mut().expect("actor").patient_id = "patient-1".into();
        let err = decode("events[3]", e).expect_err("staff naming a patient");
        assert_eq!(err.field.as_deref(), Some("events[3].actor.patient_id"));
        let mut e = full_event();
        e.actor
            .as_mut()
            .expect("actor")
            .organisation_ods_code
            .clear();
        let err = decode("event", e).expect_err("staff without organisation");
        assert_eq!(
            err.field.as_deref(),
            Some("event.actor.organisation_ods_code")
        );
    }

    #[test]
    fn canonical_bytes_ignore_unknown_fields() {
        let mut bytes = full_event().encode_to_vec();
        // Field 99, varint 1: a field from some future version of the API.
        bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
        let received = pb::AuditEvent::decode(bytes.as_slice()).expect("decodes");
        let a = encode_for_log(&decode("event", received).expect("valid"));
        let b = encode_for_log(&decode("event", full_event()).expect("valid"));
        assert_eq!(a, b);
        assert_eq!(a.bytes, full_event().encode_to_vec());
    }

    #[test]
    fn unknown_enum_values_are_refused() {
        let mut e = full_event();
        e.action = 42;
        let err = decode("event", e).expect_err("refused");
        assert_eq!(err.field.as_deref(), Some("event.action"));
        let mut e = full_event();
        e.purpose = 42;
        let err = decode("events[1]", e).expect_err("refused");
        assert_eq!(err.field.as_deref(), Some("events[1].purpose"));
    }
}
