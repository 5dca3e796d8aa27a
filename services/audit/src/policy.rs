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

/// Tree heads and proofs are hashes and sizes: they reveal no patient's
/// data, so everyone who may read some of the log may check it.
const PROVERS: &[Caller] = &[
    caller(Patient, "audit.read", Patients::None),
    staff_with("audit.read", Capability::PlatformAuditor, Patients::None),
    staff_with("audit.read", Capability::PrivacyOfficer, Patients::None),
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
            method: "ListEntries",
            callers: &[staff_with(
                "audit.read",
                Capability::PlatformAuditor,
                Patients::Any,
            )],
            purposes: "—",
            audit: "— (as Query)",
        },
        Rule {
            method: "ListBreakGlassAccesses",
            callers: AUDITORS,
            purposes: "—",
            audit: "— (as Query)",
        },
        Rule {
            method: "SignedTreeHead",
            callers: PROVERS,
            purposes: "—",
            audit: "—",
        },
        Rule {
            method: "InclusionProof",
            callers: PROVERS,
            purposes: "—",
            audit: "—",
        },
        Rule {
            method: "ConsistencyProof",
            callers: PROVERS,
            purposes: "—",
            audit: "—",
        },
    ],
};
