//! audit's rows of the access model (docs/access-model.md).

use sharedcare_kit::access::{AccessTable, Caller, Capability, Patients, Rule, caller, staff_with};
use sharedcare_proto::common::v1::PrincipalKind::{Patient, Service};

const APPENDERS: &[Caller] = &[caller(Service, "audit.append", Patients::Any)];

const AUDITORS: &[Caller] = &[
    staff_with("audit.read", Capability::PlatformAuditor, Patients::Any),
    staff_with(
        "audit.read",
        Capability::PrivacyOfficer,
        Patients::OwnOrganisationAccesses,
    ),
];

pub static ACCESS: AccessTable = AccessTable {
    service: "sharedcare.audit.v1.AuditService",
    rules: &[
        Rule {
            method: "Append",
            callers: APPENDERS,
            purposes: "—",
            audit: "is the audit; the appending principal is taken from its token",
        },
        Rule {
            method: "AppendBatch",
            callers: APPENDERS,
            purposes: "—",
            audit: "as Append",
        },
        Rule {
            method: "Query",
            callers: AUDITORS,
            purposes: "—",
            audit: "— (reads of the log are not yet themselves logged)",
        },
        Rule {
            method: "AccessReport",
            callers: &[
                caller(Patient, "audit.read", Patients::Own),
                staff_with("audit.read", Capability::PlatformAuditor, Patients::Any),
                staff_with(
                    "audit.read",
                    Capability::PrivacyOfficer,
                    Patients::OwnOrganisationAccesses,
                ),
            ],
            purposes: "—",
            audit: "— (as Query)",
        },
        Rule {
            method: "SignedTreeHead",
            callers: AUDITORS,
            purposes: "—",
            audit: "— (UNIMPLEMENTED until the Merkle issue)",
        },
        Rule {
            method: "InclusionProof",
            callers: AUDITORS,
            purposes: "—",
            audit: "— (UNIMPLEMENTED until the Merkle issue)",
        },
        Rule {
            method: "ConsistencyProof",
            callers: AUDITORS,
            purposes: "—",
            audit: "— (UNIMPLEMENTED until the Merkle issue)",
        },
    ],
};
