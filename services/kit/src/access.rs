//! The access model: for every RPC, who may call it (principal kind, scope,
//! capability), for which patients, and what lands in audit. Each service
//! declares its table once; the auth layer enforces the caller columns before
//! a request is decoded, and handlers enforce the patient column through the
//! [`Grant`] the layer leaves in the request. `docs/access-model.md` is
//! rendered from these tables, and a test keeps the two identical.

use std::fmt::Write as _;

use sharedcare_proto::common::v1::PrincipalKind;

use crate::{Error, auth::Principal};

/// What a staff role allows beyond its scopes. Roles map to capabilities in
/// identity's configuration; tokens carry the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Assert and end care relationships for the role's own organisation.
    AssertRelationships,
    /// Refer a patient the organisation cares for to another organisation.
    Refer,
    /// Record and revoke directives on a patient's behalf, and read them.
    RecordDirectives,
    /// Read the audit entries of accesses made by the role's organisation.
    PrivacyOfficer,
    /// Read any audit entry.
    PlatformAuditor,
    /// Trace patients by demographics, see candidates, and record that two
    /// patients are not the same person.
    TracePatients,
    /// Emergency access without a relationship (the break-glass issue).
    BreakGlass,
    /// Merge duplicate patients and undo merges: a duty of its own, since a
    /// wrong merge puts one person's record in another's.
    MergePatients,
    /// See a restricted patient's address, telecom and GP practice, and
    /// lift a restriction.
    ViewRestricted,
}

impl Capability {
    pub const ALL: [Capability; 9] = [
        Capability::AssertRelationships,
        Capability::Refer,
        Capability::RecordDirectives,
        Capability::PrivacyOfficer,
        Capability::PlatformAuditor,
        Capability::TracePatients,
        Capability::BreakGlass,
        Capability::MergePatients,
        Capability::ViewRestricted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::AssertRelationships => "assert_relationships",
            Capability::Refer => "refer",
            Capability::RecordDirectives => "record_directives",
            Capability::PrivacyOfficer => "privacy_officer",
            Capability::PlatformAuditor => "platform_auditor",
            Capability::TracePatients => "trace_patients",
            Capability::BreakGlass => "break_glass",
            Capability::MergePatients => "merge_patients",
            Capability::ViewRestricted => "view_restricted",
        }
    }

    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Which patients a caller may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patients {
    /// Only the patient the token is bound to.
    Own,
    /// Patients the caller's organisation has a current care relationship
    /// with (decided by consent).
    Related,
    /// Any patient.
    Any,
    /// Audit entries about accesses made by the caller's own organisation.
    OwnOrganisationAccesses,
    /// The call names no patient.
    None,
}

impl Patients {
    fn describe(self) -> &'static str {
        match self {
            Patients::Own => "own",
            Patients::Related => "related",
            Patients::Any => "any",
            Patients::OwnOrganisationAccesses => "own organisation's accesses",
            Patients::None => "—",
        }
    }
}

/// One way of being allowed to call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub kind: PrincipalKind,
    pub scope: &'static str,
    pub capability: Option<Capability>,
    pub patients: Patients,
}

/// A caller of `kind` holding `scope`.
pub const fn caller(kind: PrincipalKind, scope: &'static str, patients: Patients) -> Caller {
    Caller {
        kind,
        scope,
        capability: None,
        patients,
    }
}

/// A staff caller holding `scope` whose role gives `capability`.
pub const fn staff_with(scope: &'static str, capability: Capability, patients: Patients) -> Caller {
    Caller {
        kind: PrincipalKind::Staff,
        scope,
        capability: Some(capability),
        patients,
    }
}

/// One row of the access model.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The RPC's name, e.g. "RecordCareRelationship".
    pub method: &'static str,
    /// Any one of these may call it. Empty: no token needed (public).
    pub callers: &'static [Caller],
    /// Which purposes, in words.
    pub purposes: &'static str,
    /// What lands in audit, in words.
    pub audit: &'static str,
}

/// A service's access table.
#[derive(Debug)]
pub struct AccessTable {
    /// Fully qualified gRPC service name, e.g. "sharedcare.consent.v1.ConsentService".
    pub service: &'static str,
    pub rules: &'static [Rule],
}

impl AccessTable {
    pub fn rule(&self, method: &str) -> Option<&'static Rule> {
        self.rules.iter().find(|r| r.method == method)
    }

    /// The method a request path names, when the path belongs to this
    /// service ("/<service>/<method>").
    pub fn method_of<'p>(&self, path: &'p str) -> Option<&'p str> {
        path.strip_prefix('/')?
            .strip_prefix(self.service)?
            .strip_prefix('/')
    }

    /// The rule for a request path, when the path belongs to this service.
    pub fn rule_for_path(&self, path: &str) -> Option<&'static Rule> {
        self.rule(self.method_of(path)?)
    }

    /// Whether the path is one of this service's public RPCs.
    pub fn is_public(&self, path: &str) -> bool {
        self.rule_for_path(path)
            .is_some_and(|rule| rule.callers.is_empty())
    }

    /// The first way `principal` may call `method`, or PERMISSION_DENIED
    /// naming the rule.
    pub fn admit(&self, method: &str, principal: &Principal) -> Result<Grant, Error> {
        let rule = self.rule(method).ok_or_else(|| {
            Error::permission_denied(format!("{method} has no access rule: refused"))
                .with_reason("NO_ACCESS_RULE")
        })?;
        let found = rule.callers.iter().find(|c| {
            c.kind == principal.kind
                && principal.scopes.contains(c.scope)
                && c.capability
                    .is_none_or(|cap| principal.capabilities.contains(&cap))
        });
        match found {
            Some(caller) => Ok(Grant {
                principal: principal.clone(),
                method: rule.method,
                patients: caller.patients,
            }),
            None => Err(Error::permission_denied(format!(
                "{} may be called only by {}",
                rule.method,
                describe_callers(rule.callers)
            ))
            .with_reason("ACCESS_RULE")),
        }
    }

    /// This table as markdown rows (the body of docs/access-model.md).
    pub fn markdown_rows(&self) -> String {
        let mut out = String::new();
        for rule in self.rules {
            let (callers, patients) = if rule.callers.is_empty() {
                ("anyone (no token)".to_owned(), "—".to_owned())
            } else {
                (
                    rule.callers
                        .iter()
                        .map(describe_caller)
                        .collect::<Vec<_>>()
                        .join("<br>"),
                    rule.callers
                        .iter()
                        .map(|c| format!("{}: {}", kind_name(c.kind), c.patients.describe()))
                        .collect::<Vec<_>>()
                        .join("<br>"),
                )
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                rule.method, callers, patients, rule.purposes, rule.audit
            );
        }
        out
    }
}

fn kind_name(kind: PrincipalKind) -> &'static str {
    crate::auth::kind_to_str(kind)
}

fn describe_caller(c: &Caller) -> String {
    match c.capability {
        Some(cap) => format!(
            "{} with `{}` and capability `{}`",
            kind_name(c.kind),
            c.scope,
            cap.as_str()
        ),
        None => format!("{} with `{}`", kind_name(c.kind), c.scope),
    }
}

fn describe_callers(callers: &[Caller]) -> String {
    callers
        .iter()
        .map(describe_caller)
        .collect::<Vec<_>>()
        .join("; or ")
}

/// What the auth layer admitted a request as: the verified principal and
/// which patients it may name on this RPC. Handlers take it with [`grant`].
#[derive(Debug, Clone)]
pub struct Grant {
    pub principal: Principal,
    pub method: &'static str,
    pub patients: Patients,
}

impl Grant {
    /// For `Patients::Own` grants: PERMISSION_DENIED unless `patient_id` is
    /// the token's own patient. Other grants pass (their check is the
    /// service's: a relationship, or none).
    pub fn check_own(&self, patient_id: &str) -> Result<(), Error> {
        if self.patients != Patients::Own {
            return Ok(());
        }
        match &self.principal.patient {
            Some(own) if own == patient_id => Ok(()),
            _ => Err(Error::permission_denied(format!(
                "{}: a patient may name only their own patient_id",
                self.method
            ))
            .with_reason("NOT_OWN_PATIENT")),
        }
    }
}

/// The grant the auth layer placed on this request. UNAUTHENTICATED if the
/// layer did not run (a wiring bug: fail closed).
pub fn grant<T>(request: &tonic::Request<T>) -> Result<Grant, Error> {
    request
        .extensions()
        .get::<Grant>()
        .cloned()
        .ok_or_else(|| Error::unauthenticated("no verified token on this request"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use sharedcare_proto::common::v1::Purpose;

    use super::*;

    const TABLE: AccessTable = AccessTable {
        service: "sharedcare.test.v1.TestService",
        rules: &[
            Rule {
                method: "Open",
                callers: &[],
                purposes: "—",
                audit: "—",
            },
            Rule {
                method: "Assert",
                callers: &[
                    caller(PrincipalKind::Application, "consent.write", Patients::Any),
                    staff_with(
                        "consent.write",
                        Capability::AssertRelationships,
                        Patients::Any,
                    ),
                ],
                purposes: "—",
                audit: "—",
            },
        ],
    };

    fn principal(kind: PrincipalKind, scopes: &[&str], caps: &[Capability]) -> Principal {
        Principal {
            id: "p".into(),
            kind,
            organisation: "A81001".into(),
            role: "R8000".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            purpose: Some(Purpose::DirectCare),
            purposes: BTreeSet::from([Purpose::DirectCare]),
            capabilities: caps.iter().copied().collect(),
            patient: None,
            display_name: String::new(),
            organisation_name: String::new(),
            acting_application: None,
        }
    }

    #[test]
    fn paths_map_to_rules() {
        assert!(TABLE.is_public("/sharedcare.test.v1.TestService/Open"));
        assert!(!TABLE.is_public("/sharedcare.test.v1.TestService/Assert"));
        assert!(TABLE.rule_for_path("/other.Service/Assert").is_none());
    }

    #[test]
    fn a_capability_is_needed_when_the_rule_names_one() {
        let staff = principal(PrincipalKind::Staff, &["consent.write"], &[]);
        let err = TABLE.admit("Assert", &staff).expect_err("no capability");
        assert!(
            err.message.contains("assert_relationships"),
            "{}",
            err.message
        );
        let clerk = principal(
            PrincipalKind::Staff,
            &["consent.write"],
            &[Capability::AssertRelationships],
        );
        assert!(TABLE.admit("Assert", &clerk).is_ok());
        let app = principal(PrincipalKind::Application, &["consent.write"], &[]);
        assert!(TABLE.admit("Assert", &app).is_ok());
        let app = principal(PrincipalKind::Application, &[], &[]);
        assert!(TABLE.admit("Assert", &app).is_err());
    }

    #[test]
    fn a_method_without_a_rule_is_refused() {
        let app = principal(PrincipalKind::Application, &["consent.write"], &[]);
        let err = TABLE.admit("Unknown", &app).expect_err("no rule");
        assert!(err.message.contains("no access rule"));
    }

    #[test]
    fn own_patient_grants_name_only_their_patient() {
        let mut patient = principal(PrincipalKind::Patient, &[], &[]);
        patient.patient = Some("p1".into());
        let grant = Grant {
            principal: patient,
            method: "Get",
            patients: Patients::Own,
        };
        assert!(grant.check_own("p1").is_ok());
        assert!(grant.check_own("p2").is_err());
    }

    #[test]
    fn capabilities_round_trip() {
        for cap in Capability::ALL {
            assert_eq!(Capability::parse(cap.as_str()), Some(cap));
        }
        assert_eq!(Capability::parse("root"), None);
    }
}
