//! "Who saw my record", in plain words: one sentence per access, from the
//! names the actor's token carried at the time and the platform's
//! vocabulary (`kit::vocab`), never from what the actor is called today.

use sharedcare_kit::vocab::{reason_text, role_name};
use sharedcare_proto::{
    audit::v1::{AccessReportLine, Action, AuditEvent, Outcome},
    common::v1::{PrincipalKind, Purpose},
};

/// What a report line says in words.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Words {
    pub actor_name: String,
    pub role_name: String,
    pub organisation_name: String,
    pub reason_text: String,
    pub summary: String,
}

/// The report line for entry `sequence`, an `event` as stored: its codes
/// and its words (no entry or proof).
pub fn line(sequence: i64, event: AuditEvent) -> AccessReportLine {
    let words = words(&event);
    AccessReportLine {
        occur_time: event.occur_time,
        actor: event.actor,
        action: event.action,
        resource_type: event.resource_type,
        purpose: event.purpose,
        outcome: event.outcome,
        outcome_reason: event.outcome_reason,
        break_glass: event.break_glass,
        sequence,
        actor_name: words.actor_name,
        role_name: words.role_name,
        organisation_name: words.organisation_name,
        reason_text: words.reason_text,
        summary: words.summary,
        entry: None,
        inclusion_proof: Vec::new(),
    }
}

/// The words for one stored event.
pub fn words(event: &AuditEvent) -> Words {
    let actor = event.actor.clone().unwrap_or_default();
    let is_patient = actor.kind == PrincipalKind::Patient as i32;
    let actor_name = if is_patient {
        "you".to_owned()
    } else {
        actor.display_name.clone()
    };
    let role = if actor.role.is_empty() {
        String::new()
    } else {
        role_name(&actor.role).map_or_else(|| actor.role.clone(), str::to_owned)
    };
    let reason = reason_text(&event.outcome_reason)
        .unwrap_or_default()
        .to_owned();

    let who = who(&actor_name, &role, &actor, is_patient);
    let outcome = Outcome::try_from(event.outcome).unwrap_or(Outcome::Unspecified);
    let verb = verb(event.action, outcome);
    let what = match event.record_ids.len() {
        0 => what(&event.resource_type),
        1 => format!("1 {}", noun(&event.resource_type)),
        n => format!("{n} {}s", noun(&event.resource_type)),
    };
    let why = why(event.purpose);
    let result = match outcome {
        Outcome::Success => "allowed",
        Outcome::Denied => "refused",
        Outcome::Failed => "failed",
        Outcome::Unspecified => "outcome not recorded",
    };
    let because = if reason.is_empty() {
        match event.outcome_reason.as_str() {
            "" => String::new(),
            code => format!(" ({code})"),
        }
    } else {
        format!(": {reason}")
    };
    let emergency = if event.break_glass {
        "EMERGENCY ACCESS (break-glass): "
    } else {
        ""
    };
    let mut summary = format!("{emergency}{who} {verb} {what}{why} — {result}{because}.");
    if let Some(first) = summary.get(..1) {
        summary = first.to_uppercase() + &summary[1..];
    }
    Words {
        actor_name,
        role_name: role,
        organisation_name: actor.organisation_name.clone(),
        reason_text: reason,
        summary,
    }
}

/// "Dr Asha Patel (Clinical Practitioner) at Leeds General Infirmary
/// (RR8)"; ids stand in for missing names.
fn who(
    name: &str,
    role: &str,
    actor: &sharedcare_proto::common::v1::Actor,
    is_patient: bool,
) -> String {
    if is_patient {
        return name.to_owned();
    }
    let who = if name.is_empty() {
        let kind = match PrincipalKind::try_from(actor.kind) {
            Ok(PrincipalKind::Application) => "an application",
            Ok(PrincipalKind::Service) => "a platform service",
            Ok(PrincipalKind::Admin) => "a platform administrator",
            _ => "a member of staff",
        };
        format!("{kind} (id {})", actor.principal_id)
    } else {
        name.to_owned()
    };
    let at = match (
        actor.organisation_name.as_str(),
        actor.organisation_ods_code.as_str(),
    ) {
        ("", "") => None,
        ("", code) => Some(format!("at organisation {code}")),
        (name, "") => Some(format!("at {name}")),
        (name, code) => Some(format!("at {name} ({code})")),
    };
    match (role.is_empty(), at) {
        (true, None) => who,
        (true, Some(at)) => format!("{who} {at}"),
        (false, None) => format!("{who}, {role}"),
        (false, Some(at)) => format!("{who}, {role}, {at}"),
    }
}

fn verb(action: i32, outcome: Outcome) -> &'static str {
    let done = matches!(outcome, Outcome::Success);
    match (
        Action::try_from(action).unwrap_or(Action::Unspecified),
        done,
    ) {
        (Action::Read, true) => "looked at",
        (Action::Read, false) => "tried to look at",
        (Action::Create, true) => "added",
        (Action::Create, false) => "tried to add",
        (Action::Update, true) => "changed",
        (Action::Update, false) => "tried to change",
        (Action::Delete, true) => "deleted",
        (Action::Delete, false) => "tried to delete",
        (Action::Search, true) => "searched",
        (Action::Search, false) => "tried to search",
        (Action::Export, true) => "exported",
        (Action::Export, false) => "tried to export",
        (Action::Unspecified, _) => "accessed",
    }
}

/// "an Observation", "a Directive", "the record".
fn what(resource_type: &str) -> String {
    match resource_type.chars().next() {
        None => "the record".to_owned(),
        Some(c) if "AEIOUaeiou".contains(c) => format!("an {resource_type}"),
        Some(_) => format!("a {resource_type}"),
    }
}

/// "Observation", or "record" when the type is not one.
fn noun(resource_type: &str) -> &str {
    if resource_type.is_empty() {
        "record"
    } else {
        resource_type
    }
}

fn why(purpose: i32) -> &'static str {
    match Purpose::try_from(purpose).unwrap_or(Purpose::Unspecified) {
        Purpose::DirectCare => " for the patient's care",
        Purpose::Research => " for research",
        Purpose::Planning => " for planning services",
        Purpose::PatientAccess => "",
        Purpose::EmergencyCare => " for the patient's emergency care",
        Purpose::Safeguarding => " to safeguard the patient",
        Purpose::Commissioning => " for commissioning services",
        Purpose::Unspecified => "",
    }
}

#[cfg(test)]
mod tests {
    use sharedcare_proto::common::v1::Actor;

    use super::*;

    fn event(actor: Actor, outcome: Outcome, reason: &str) -> AuditEvent {
        AuditEvent {
            actor: Some(actor),
            action: Action::Read as i32,
            resource_type: "Observation".into(),
            purpose: Purpose::DirectCare as i32,
            outcome: outcome as i32,
            outcome_reason: reason.into(),
            ..AuditEvent::default()
        }
    }

    fn clinician() -> Actor {
        Actor {
            principal_id: "pr-1".into(),
            kind: PrincipalKind::Staff as i32,
            organisation_ods_code: "RR8".into(),
            role: "R8000".into(),
            display_name: "Dr Asha Patel".into(),
            organisation_name: "Leeds General Infirmary".into(),
            ..Actor::default()
        }
    }

    #[test]
    fn a_clinicians_read_is_one_plain_sentence() {
        let w = words(&event(clinician(), Outcome::Success, "CARE_RELATIONSHIP"));
        assert_eq!(
            w.summary,
            "Dr Asha Patel, Clinical Practitioner, at Leeds General Infirmary (RR8) looked at an \
             Observation for the patient's care — allowed: they are caring for the patient."
        );
        assert_eq!(w.role_name, "Clinical Practitioner");
        assert_eq!(w.organisation_name, "Leeds General Infirmary");
    }

    #[test]
    fn a_search_says_how_many_records_it_disclosed() {
        let mut e = event(clinician(), Outcome::Success, "CARE_RELATIONSHIP");
        e.action = Action::Search as i32;
        e.resource_type = "Condition".into();
        e.record_ids = vec!["r-1".into(), "r-2".into()];
        assert!(
            words(&e)
                .summary
                .contains("searched 2 Conditions for the patient's care"),
            "{}",
            words(&e).summary
        );
        e.resource_type.clear();
        e.record_ids.truncate(1);
        e.action = Action::Export as i32;
        assert!(
            words(&e).summary.contains("exported 1 record for"),
            "{}",
            words(&e).summary
        );
    }

    #[test]
    fn a_refusal_break_glass_and_unknown_codes_are_said_as_they_are() {
        let mut e = event(clinician(), Outcome::Denied, "SOMETHING_NEW");
        e.break_glass = true;
        let w = words(&e);
        assert!(
            w.summary
                .starts_with("EMERGENCY ACCESS (break-glass): Dr Asha Patel"),
            "{}",
            w.summary
        );
        assert!(
            w.summary.ends_with(
                "tried to look at an Observation for the patient's care — refused (SOMETHING_NEW)."
            ),
            "{}",
            w.summary
        );
        assert_eq!(w.reason_text, "");
    }

    #[test]
    fn the_patient_is_you_and_a_nameless_actor_is_named_by_kind_and_id() {
        let patient = Actor {
            principal_id: "pp-1".into(),
            kind: PrincipalKind::Patient as i32,
            patient_id: "pat-1".into(),
            ..Actor::default()
        };
        let mut e = event(patient, Outcome::Success, "PATIENT_OWN_RECORD");
        e.purpose = Purpose::PatientAccess as i32;
        assert_eq!(
            words(&e).summary,
            "You looked at an Observation — allowed: it is the patient's own record."
        );

        let app = Actor {
            principal_id: "app-9".into(),
            kind: PrincipalKind::Application as i32,
            organisation_ods_code: "A81001".into(),
            ..Actor::default()
        };
        let w = words(&event(app, Outcome::Success, ""));
        assert_eq!(
            w.summary,
            "An application (id app-9) at organisation A81001 looked at an Observation for the \
             patient's care — allowed."
        );
    }
}
