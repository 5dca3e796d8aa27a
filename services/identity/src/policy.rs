//! identity's rows of the access model (docs/access-model.md).

use sharedcare_kit::access::{AccessTable, Capability, Patients, Rule, caller, staff_with};
use sharedcare_proto::common::v1::PrincipalKind::{Admin, Application, Patient, Service, Staff};

pub static ACCESS: AccessTable = AccessTable {
    service: "sharedcare.identity.v1.IdentityService",
    rules: &[
        Rule {
            method: "RegisterPatient",
            callers: &[
                caller(Staff, "patients.write", Patients::Any),
                caller(Application, "patients.write", Patients::Any),
            ],
            purposes: "—",
            audit: "a registration (CREATE Patient), the match it returned (READ Patient), or \
                    the candidates an ambiguous answer showed (SEARCH Patient)",
        },
        Rule {
            method: "GetPatient",
            callers: &[
                caller(Patient, "patients.read", Patients::Own),
                caller(Staff, "patients.read", Patients::Related),
                caller(Application, "patients.read", Patients::Related),
            ],
            purposes: "one of the token's permitted purposes; consent decides as for a record",
            audit: "every read and every denial (READ Patient)",
        },
        Rule {
            method: "UpdateDemographics",
            callers: &[
                caller(Staff, "patients.write", Patients::Related),
                caller(Application, "patients.write", Patients::Related),
            ],
            purposes: "one of the token's permitted purposes; consent decides as for a record",
            audit: "every change and every denial (UPDATE Patient)",
        },
        Rule {
            method: "ListPatientVersions",
            callers: &[
                caller(Patient, "patients.read", Patients::Own),
                caller(Staff, "patients.read", Patients::Related),
                caller(Application, "patients.read", Patients::Related),
            ],
            purposes: "one of the token's permitted purposes; consent decides as for a record",
            audit: "every read and every denial (READ Patient)",
        },
        Rule {
            method: "ResolvePatient",
            callers: &[caller(Service, "patients.read", Patients::Any)],
            purposes: "—",
            audit: "— (existence only, to platform services; no personal data)",
        },
        Rule {
            method: "TracePatient",
            callers: &[
                staff_with("patients.read", Capability::TracePatients, Patients::Any),
                caller(Application, "patients.read", Patients::Any),
            ],
            purposes: "one of the token's permitted purposes; staff see up to 50 candidates, \
                       an application the one confident match or none",
            audit: "every candidate returned (SEARCH Patient)",
        },
        Rule {
            method: "MarkNotSamePerson",
            callers: &[staff_with(
                "patients.write",
                Capability::TracePatients,
                Patients::Any,
            )],
            purposes: "—",
            audit: "each link, on both patients (UPDATE Patient)",
        },
        Rule {
            method: "MergePatients",
            callers: &[staff_with(
                "patients.write",
                Capability::MergePatients,
                Patients::Any,
            )],
            purposes: "—",
            audit: "each merge, on both patients (UPDATE Patient)",
        },
        Rule {
            method: "UnmergePatients",
            callers: &[staff_with(
                "patients.write",
                Capability::MergePatients,
                Patients::Any,
            )],
            purposes: "—",
            audit: "each unmerge, on both patients (UPDATE Patient)",
        },
        Rule {
            method: "WatchPatientMerges",
            callers: &[caller(Service, "patients.read", Patients::None)],
            purposes: "—",
            audit: "— (patient ids only, to platform services; no personal data)",
        },
        Rule {
            method: "CreateOrganisation",
            callers: &[caller(Admin, "admin", Patients::None)],
            purposes: "—",
            audit: "—",
        },
        Rule {
            method: "GetOrganisation",
            callers: &[
                caller(Admin, "admin", Patients::None),
                caller(Staff, "patients.read", Patients::None),
                caller(Application, "patients.read", Patients::None),
                caller(Service, "patients.read", Patients::None),
                caller(Patient, "patients.read", Patients::None),
            ],
            purposes: "—",
            audit: "— (no personal data)",
        },
        Rule {
            method: "CreatePrincipal",
            callers: &[caller(Admin, "admin", Patients::None)],
            purposes: "—",
            audit: "—",
        },
        Rule {
            method: "IssueToken",
            callers: &[],
            purposes: "the principal's permitted purposes only",
            audit: "—",
        },
        Rule {
            method: "GetJwks",
            callers: &[],
            purposes: "—",
            audit: "—",
        },
        Rule {
            method: "IntrospectToken",
            callers: &[caller(Service, "tokens.introspect", Patients::None)],
            purposes: "—",
            audit: "— (no patient data: who a token names and what it allows)",
        },
        Rule {
            method: "RotateSigningKey",
            callers: &[caller(Admin, "admin", Patients::None)],
            purposes: "—",
            audit: "— (no patient data; logged with the new key id)",
        },
        Rule {
            method: "RevokePrincipal",
            callers: &[caller(Admin, "admin", Patients::None)],
            purposes: "—",
            audit: "— (no patient data; logged with the principal id)",
        },
        Rule {
            method: "ListRevocations",
            callers: &[],
            purposes: "—",
            audit: "—",
        },
    ],
};
