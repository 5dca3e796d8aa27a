//! consent's rows of the access model (docs/access-model.md).

use sharedcare_kit::access::{AccessTable, Capability, Patients, Rule, caller, staff_with};
use sharedcare_proto::common::v1::PrincipalKind::{Application, Patient, Service};

pub static ACCESS: AccessTable = AccessTable {
    service: "sharedcare.consent.v1.ConsentService",
    rules: &[
        Rule {
            method: "RecordCareRelationship",
            callers: &[
                caller(Application, "consent.write", Patients::Any),
                staff_with(
                    "consent.write",
                    Capability::AssertRelationships,
                    Patients::Any,
                ),
            ],
            purposes: "—",
            audit: "the assertion (CREATE CareRelationship), naming who asserted it",
        },
        Rule {
            method: "ReferPatient",
            callers: &[
                caller(Application, "consent.write", Patients::Related),
                staff_with("consent.write", Capability::Refer, Patients::Related),
            ],
            purposes: "—",
            audit: "the referral (CREATE CareRelationship, reason REFERRAL)",
        },
        Rule {
            method: "EndCareRelationship",
            callers: &[
                caller(Application, "consent.write", Patients::Related),
                staff_with(
                    "consent.write",
                    Capability::AssertRelationships,
                    Patients::Related,
                ),
            ],
            purposes: "—",
            audit: "the end (UPDATE CareRelationship)",
        },
        Rule {
            method: "ListCareRelationships",
            callers: &[
                caller(Patient, "consent.read", Patients::Own),
                caller(Application, "consent.read", Patients::Related),
                staff_with(
                    "consent.read",
                    Capability::AssertRelationships,
                    Patients::Related,
                ),
                staff_with(
                    "consent.read",
                    Capability::RecordDirectives,
                    Patients::Related,
                ),
            ],
            purposes: "—",
            audit: "the read (READ CareRelationship)",
        },
        Rule {
            method: "RecordGpRegistration",
            callers: &[caller(Service, "consent.registrations", Patients::Any)],
            purposes: "—",
            audit: "the registered-GP relationship made (CREATE CareRelationship, reason \
                    GP_REGISTRATION) and each other practice's ended (UPDATE, reason \
                    GP_REGISTRATION_MOVED), naming identity as recorder",
        },
        Rule {
            method: "RecordDirective",
            callers: &[
                caller(Patient, "consent.write", Patients::Own),
                staff_with(
                    "consent.write",
                    Capability::RecordDirectives,
                    Patients::Related,
                ),
            ],
            purposes: "—",
            audit: "the directive (CREATE Directive), with its provenance",
        },
        Rule {
            method: "RevokeDirective",
            callers: &[
                caller(Patient, "consent.write", Patients::Own),
                staff_with(
                    "consent.write",
                    Capability::RecordDirectives,
                    Patients::Related,
                ),
            ],
            purposes: "—",
            audit: "the revocation (DELETE Directive)",
        },
        Rule {
            method: "ListDirectives",
            callers: &[
                caller(Patient, "consent.read", Patients::Own),
                staff_with(
                    "consent.read",
                    Capability::RecordDirectives,
                    Patients::Related,
                ),
            ],
            purposes: "—",
            audit: "the read (READ Directive)",
        },
        Rule {
            method: "SetNationalOptOut",
            callers: &[
                caller(Patient, "consent.write", Patients::Own),
                // The national opt-out service, as a platform service.
                caller(Service, "consent.national_opt_out", Patients::Any),
            ],
            purposes: "—",
            audit: "the change (CREATE or DELETE Directive, reason OPT_OUT_CHANGED), or the read \
                    when nothing changed",
        },
        Rule {
            method: "Evaluate",
            callers: &[caller(Service, "consent.evaluate", Patients::Any)],
            purposes: "the end user's, as the calling service states it",
            audit: "by the calling service, with the decision id; a break-glass grant by consent \
                    (CREATE CareRelationship, flagged break-glass, naming the end user)",
        },
        Rule {
            method: "BatchEvaluate",
            callers: &[caller(Service, "consent.evaluate", Patients::Any)],
            purposes: "the end user's, as the calling service states it",
            audit: "as Evaluate, for each request",
        },
        Rule {
            method: "WatchChanges",
            callers: &[caller(Service, "consent.evaluate", Patients::Any)],
            purposes: "—",
            audit: "— (carries patient ids only, no consent content; services only)",
        },
    ],
};
