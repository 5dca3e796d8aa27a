//! records' rows of the access model (docs/access-model.md). "Related" here
//! is decided by consent for every access: a current care relationship for
//! direct care, the patient's explicit consent for other purposes.

use sharedcare_kit::access::{AccessTable, Caller, Patients, Rule, caller};
use sharedcare_proto::common::v1::PrincipalKind::{Application, Patient, Service, Staff};

const READERS: &[Caller] = &[
    caller(Patient, "records.read", Patients::Own),
    caller(Staff, "records.read", Patients::Related),
    caller(Application, "records.read", Patients::Related),
];

const WRITERS: &[Caller] = &[
    caller(Staff, "records.write", Patients::Related),
    caller(Application, "records.write", Patients::Related),
];

const READ_PURPOSES: &str =
    "one of the token's permitted purposes (patients: patient access); consent decides";
const WRITE_PURPOSES: &str = "one of the token's permitted purposes; consent decides";

pub static ACCESS: AccessTable = AccessTable {
    service: "sharedcare.records.v1.RecordsService",
    rules: &[
        Rule {
            method: "CreateRecord",
            callers: WRITERS,
            purposes: WRITE_PURPOSES,
            audit: "every write (outbox, same transaction) and every denial",
        },
        Rule {
            method: "UpdateRecord",
            callers: WRITERS,
            purposes: WRITE_PURPOSES,
            audit: "as CreateRecord; consent is asked about the current and the new category",
        },
        Rule {
            method: "DeleteRecord",
            callers: WRITERS,
            purposes: WRITE_PURPOSES,
            audit: "as CreateRecord (the tombstone version)",
        },
        Rule {
            method: "GetRecord",
            callers: READERS,
            purposes: READ_PURPOSES,
            audit: "every read before the reply, and every denial",
        },
        Rule {
            method: "History",
            callers: READERS,
            purposes: READ_PURPOSES,
            audit: "as GetRecord: one event per page",
        },
        Rule {
            method: "Search",
            callers: READERS,
            purposes: READ_PURPOSES,
            audit: "one event per record returned, and every denial of the general record",
        },
        Rule {
            method: "ExportPatient",
            callers: READERS,
            purposes: READ_PURPOSES,
            audit: "one event per record sent, before it is sent, and every denial of the general record",
        },
        Rule {
            method: "WatchRecords",
            callers: &[
                caller(Service, "records.read", Patients::Any),
                caller(Application, "records.read", Patients::Any),
            ],
            purposes: "one of the token's permitted purposes; consent decides each change, and one it refuses is left out",
            audit: "— (a change carries ids and metadata only; reading the record is audited)",
        },
    ],
};
