//! The access model, walked cell by cell over real sockets with the four
//! real services: every row of every service's access table (the same
//! tables `docs/access-model.md` is rendered from) × every kind of principal
//! the platform issues tokens to, for a patient with and without a care
//! relationship. An allowed cell passes the access check (its answer may
//! still be NOT_FOUND or UNIMPLEMENTED: that is the RPC speaking, not the
//! guard); a refused cell is PERMISSION_DENIED with a message naming the
//! rule, reveals nothing about the patient, and stores nothing.

use base64::Engine;
use sharedcare_kit::{
    access::{AccessTable, Capability, Patients},
    auth::{Claims, Principal},
    testing::{TestDatabase, with_token},
};
use sharedcare_proto::{
    audit::v1::{self as audit, audit_service_client::AuditServiceClient},
    common::v1::{PrincipalKind, Purpose},
    consent::v1::{self as consent, consent_service_client::ConsentServiceClient},
    identity::v1::{self as identity, identity_service_client::IdentityServiceClient},
    records::v1::{self as records, records_service_client::RecordsServiceClient},
};
use sharedcare_tests::{Backend, Platform};
use tonic::{Code, Status};

const FAMILY_NAME: &str = "Attwood-Hargreaves";
const NHS_NUMBER: &str = "9990000018";

/// One member of the cast: a token and what it says about its holder.
struct Member {
    name: &'static str,
    token: String,
    principal: Principal,
}

/// What the cells act on: a patient cared for by A81001 (and no one else),
/// with a record, a directive and a relationship.
struct Target {
    patient_id: String,
    record_id: String,
    directive_id: String,
}

/// The organisation caring for the target patient.
const CARING: &str = "A81001";

fn principal_of(token: &str) -> Principal {
    let payload = token.split('.').nth(1).expect("a JWT");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: Claims = serde_json::from_slice(&json).expect("claims");
    Principal::from_claims(&claims).expect("valid claims")
}

/// Whether the table lets `member` call `method` for the target patient.
fn expected(table: &AccessTable, method: &str, member: &Member, target: &Target) -> bool {
    let Ok(grant) = table.admit(method, &member.principal) else {
        return false;
    };
    match grant.patients {
        Patients::Own => member.principal.patient.as_deref() == Some(&target.patient_id),
        Patients::Related => member.principal.organisation == CARING,
        Patients::Any | Patients::None | Patients::OwnOrganisationAccesses => true,
    }
}

/// What is stored about the patient — relationships (and which have
/// ended), directives (and which are revoked), records — read straight from
/// the databases: a refusal must not change it.
struct Stored {
    consent: sea_orm::DatabaseConnection,
    records: sea_orm::DatabaseConnection,
}

impl Stored {
    async fn open(p: &Platform) -> Self {
        Stored {
            consent: sea_orm::Database::connect(p.consent_db_url.as_str())
                .await
                .expect("consent's database"),
            records: sea_orm::Database::connect(p.records_db_url.as_str())
                .await
                .expect("records' database"),
        }
    }

    async fn snapshot(&self) -> Vec<i64> {
        use sea_orm::{ConnectionTrait, Statement};
        let mut counts = Vec::new();
        for (db, sql) in [
            (
                &self.consent,
                "SELECT COUNT(*) AS n FROM consent_care_relationships",
            ),
            (
                &self.consent,
                "SELECT COUNT(end_time) AS n FROM consent_care_relationships",
            ),
            (
                &self.consent,
                "SELECT COUNT(*) AS n FROM consent_directives",
            ),
            (
                &self.consent,
                "SELECT COUNT(revoked_at) AS n FROM consent_directives",
            ),
            (
                &self.records,
                "SELECT COUNT(*) AS n FROM records_resource_versions",
            ),
        ] {
            let row = db
                .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
                .expect("count")
                .expect("a row");
            counts.push(row.try_get::<i64>("", "n").expect("n"));
        }
        counts
    }
}

/// Calls `service`/`method` as `token` about the target. Every row of every
/// table has an arm here; a row without one fails the test.
async fn call(
    p: &Platform,
    service: &str,
    method: &str,
    token: &str,
    t: &Target,
) -> Result<(), Status> {
    let patient_id = t.patient_id.clone();
    let mut identity_client = IdentityServiceClient::new(p.identity.channel.clone());
    let mut consent_client = ConsentServiceClient::new(p.consent.channel.clone());
    let mut records_client = RecordsServiceClient::new(p.records.channel.clone());
    let mut audit_client = AuditServiceClient::new(p.audit.channel.clone());
    let fresh_ods = || {
        // Unique per call, so an allowed CreateOrganisation always creates.
        let n = uuid::Uuid::new_v4().as_u128() % 900 + 100;
        format!("Q{n}")
    };
    match (service, method) {
        ("identity", "RegisterPatient") => identity_client
            .register_patient(with_token(
                identity::RegisterPatientRequest {
                    confirm_new_patient: false,
                    nhs_number: NHS_NUMBER.into(),
                    demographics: Some(demographics()),
                },
                token,
            ))
            .await
            .map(drop),
        ("identity", "GetPatient") => identity_client
            .get_patient(with_token(
                identity::GetPatientRequest { patient_id },
                token,
            ))
            .await
            .map(drop),
        ("identity", "ResolvePatient") => identity_client
            .resolve_patient(with_token(
                identity::ResolvePatientRequest { patient_id },
                token,
            ))
            .await
            .map(drop),
        ("identity", "TracePatient") => identity_client
            .trace_patient(with_token(
                identity::TracePatientRequest {
                    nhs_number: NHS_NUMBER.into(),
                    demographics: None,
                    max_results: 1,
                    duplicates_of_patient_id: String::new(),
                },
                token,
            ))
            .await
            .map(drop),
        ("identity", "MergePatients") => identity_client
            .merge_patients(with_token(
                identity::MergePatientsRequest {
                    superseded_patient_id: patient_id.clone(),
                    surviving_patient_id: patient_id,
                },
                token,
            ))
            .await
            .map(drop),
        ("identity", "CreateOrganisation") => identity_client
            .create_organisation(with_token(
                identity::CreateOrganisationRequest {
                    ods_code: fresh_ods(),
                    name: "A new organisation".into(),
                },
                token,
            ))
            .await
            .map(drop),
        ("identity", "GetOrganisation") => identity_client
            .get_organisation(with_token(
                identity::GetOrganisationRequest {
                    ods_code: CARING.into(),
                },
                token,
            ))
            .await
            .map(drop),
        ("identity", "CreatePrincipal") => identity_client
            .create_principal(with_token(
                identity::CreatePrincipalRequest {
                    kind: PrincipalKind::Staff as i32,
                    display_name: "A new clinician".into(),
                    organisation_ods_code: CARING.into(),
                    role: "R8000".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        // Not the current version: an allowed cell is FAILED_PRECONDITION
        // and changes nothing.
        ("identity", "UpdateDemographics") => identity_client
            .update_demographics(with_token(
                identity::UpdateDemographicsRequest {
                    patient_id,
                    demographics: Some(demographics()),
                    if_match: 99,
                },
                token,
            ))
            .await
            .map(drop),
        ("identity", "ListPatientVersions") => identity_client
            .list_patient_versions(with_token(
                identity::ListPatientVersionsRequest { patient_id },
                token,
            ))
            .await
            .map(drop),
        // Not merged: an allowed cell is FAILED_PRECONDITION and changes
        // nothing.
        ("identity", "UnmergePatients") => identity_client
            .unmerge_patients(with_token(
                identity::UnmergePatientsRequest {
                    superseded_patient_id: patient_id,
                },
                token,
            ))
            .await
            .map(drop),
        ("identity", "WatchPatientMerges") => identity_client
            .watch_patient_merges(with_token(
                identity::WatchPatientMergesRequest {
                    resume_after_sequence: 0,
                },
                token,
            ))
            .await
            .map(drop),
        // The same patient twice: an allowed cell is INVALID_ARGUMENT and
        // links nothing.
        ("identity", "MarkNotSamePerson") => identity_client
            .mark_not_same_person(with_token(
                identity::MarkNotSamePersonRequest {
                    patient_id: patient_id.clone(),
                    other_patient_id: patient_id,
                    reason: "checked".into(),
                },
                token,
            ))
            .await
            .map(drop),
        ("identity", "IntrospectToken") => identity_client
            .introspect_token(with_token(
                identity::IntrospectTokenRequest {
                    token: token.to_owned(),
                },
                token,
            ))
            .await
            .map(drop),
        ("identity", "RotateSigningKey") => identity_client
            .rotate_signing_key(with_token(identity::RotateSigningKeyRequest {}, token))
            .await
            .map(drop),
        // No such principal: an allowed cell meets NOT_FOUND and revokes
        // no one the walk still needs.
        ("identity", "RevokePrincipal") => identity_client
            .revoke_principal(with_token(
                identity::RevokePrincipalRequest {
                    principal_id: "no-such-principal".into(),
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "RecordCareRelationship") => {
            // For the caller's own organisation (the allowed case); the
            // other organisation's case is its own test below.
            // A past episode, so an allowed cell leaves who is caring now
            // unchanged.
            let own = principal_of(token).organisation;
            let days_ago = |d: i64| prost_types::Timestamp {
                seconds: chrono_now() - d * 86_400,
                nanos: 0,
            };
            consent_client
                .record_care_relationship(with_token(
                    consent::RecordCareRelationshipRequest {
                        patient_id,
                        organisation_ods_code: if own.is_empty() { CARING.into() } else { own },
                        kind: consent::CareRelationshipKind::CommunityCare as i32,
                        start_time: Some(days_ago(10)),
                        end_time: Some(days_ago(5)),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop)
        }
        ("consent", "ReferPatient") => consent_client
            .refer_patient(with_token(
                consent::ReferPatientRequest {
                    patient_id,
                    organisation_ods_code: "C83003".into(),
                    start_time: None,
                    end_time: None,
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "EndCareRelationship") => consent_client
            .end_care_relationship(with_token(
                consent::EndCareRelationshipRequest {
                    patient_id,
                    relationship_id: "no-such-relationship".into(),
                    end_time: None,
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "ListCareRelationships") => consent_client
            .list_care_relationships(with_token(
                consent::ListCareRelationshipsRequest {
                    patient_id,
                    include_ended: true,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "RecordGpRegistration") => {
            // Registered where she already is (the allowed case changes
            // nothing: A81001 is her registered GP).
            consent_client
                .record_gp_registration(with_token(
                    consent::RecordGpRegistrationRequest {
                        patient_id,
                        organisation_ods_code: CARING.into(),
                        registered_time: None,
                    },
                    token,
                ))
                .await
                .map(drop)
        }
        ("consent", "RecordDirective") => consent_client
            .record_directive(with_token(
                consent::RecordDirectiveRequest {
                    directive: Some(consent::Directive {
                        patient_id,
                        effect: consent::Effect::Permit as i32,
                        purposes: vec![Purpose::Research as i32],
                        ..Default::default()
                    }),
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "RevokeDirective") => consent_client
            .revoke_directive(with_token(
                consent::RevokeDirectiveRequest {
                    // The patient's real objection: a refused cell must not
                    // touch it (the snapshot would show it revoked).
                    directive_id: t.directive_id.clone(),
                    patient_id,
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "ListDirectives") => consent_client
            .list_directives(with_token(
                consent::ListDirectivesRequest {
                    patient_id,
                    include_history: true,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "SetNationalOptOut") => consent_client
            .set_national_opt_out(with_token(
                consent::SetNationalOptOutRequest {
                    patient_id,
                    opted_out: false,
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "Evaluate") => consent_client
            .evaluate(with_token(
                consent::EvaluateRequest {
                    patient_id,
                    actor: Some(principal_of(token).actor()),
                    purpose: Purpose::DirectCare as i32,
                    category: 0,
                    break_glass: None,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "BatchEvaluate") => consent_client
            .batch_evaluate(with_token(
                consent::BatchEvaluateRequest {
                    requests: vec![consent::EvaluateRequest {
                        patient_id,
                        actor: Some(principal_of(token).actor()),
                        purpose: Purpose::DirectCare as i32,
                        ..Default::default()
                    }],
                },
                token,
            ))
            .await
            .map(drop),
        ("consent", "WatchChanges") => consent_client
            .watch_changes(with_token(
                tokio_stream::iter([consent::WatchChangesRequest::default()]),
                token,
            ))
            .await
            .map(drop),
        ("records", "CreateRecord") => records_client
            .create_record(with_token(
                records::CreateRecordRequest {
                    patient_id: patient_id.clone(),
                    resource_json: observation(&patient_id),
                    category: 0,
                    purpose: 0,
                    idempotency_key: String::new(),
                },
                token,
            ))
            .await
            .map(drop),
        ("records", "UpdateRecord") => records_client
            .update_record(with_token(
                records::UpdateRecordRequest {
                    patient_id: patient_id.clone(),
                    record_id: t.record_id.clone(),
                    resource_json: observation(&patient_id),
                    if_match_version: 1,
                    purpose: 0,
                    category: 0,
                },
                token,
            ))
            .await
            .map(drop),
        ("records", "DeleteRecord") => records_client
            .delete_record(with_token(
                records::DeleteRecordRequest {
                    patient_id: patient_id.clone(),
                    record_id: t.record_id.clone(),
                    if_match_version: 2,
                    purpose: 0,
                },
                token,
            ))
            .await
            .map(drop),
        ("records", "GetRecord") => records_client
            .get_record(with_token(
                records::GetRecordRequest {
                    patient_id,
                    record_id: t.record_id.clone(),
                    purpose: 0,
                    break_glass_reason: String::new(),
                },
                token,
            ))
            .await
            .map(drop),
        ("records", "History") => records_client
            .history(with_token(
                records::HistoryRequest {
                    patient_id,
                    record_id: t.record_id.clone(),
                    page_size: 0,
                    page_token: String::new(),
                    purpose: 0,
                },
                token,
            ))
            .await
            .map(drop),
        ("records", "Search") => records_client
            .search(with_token(
                records::SearchRequest {
                    patient_id,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        ("records", "ExportPatient") => records_client
            .export_patient(with_token(
                records::ExportPatientRequest {
                    patient_id,
                    purpose: 0,
                },
                token,
            ))
            .await
            .map(drop),
        ("records", "WatchRecords") => records_client
            .watch_records(with_token(records::WatchRecordsRequest::default(), token))
            .await
            .map(drop),
        ("audit", "Append") => audit_client
            .append(with_token(
                audit::AppendRequest {
                    event: Some(audit_event(&patient_id, token)),
                },
                token,
            ))
            .await
            .map(drop),
        ("audit", "AppendBatch") => audit_client
            .append_batch(with_token(
                audit::AppendBatchRequest {
                    events: vec![audit_event(&patient_id, token)],
                },
                token,
            ))
            .await
            .map(drop),
        ("audit", "Query") => audit_client
            .query(with_token(
                audit::QueryRequest {
                    patient_id,
                    page_size: 0,
                    page_token: String::new(),
                },
                token,
            ))
            .await
            .map(drop),
        ("audit", "AccessReport") => audit_client
            .access_report(with_token(
                audit::AccessReportRequest {
                    patient_id,
                    page_size: 0,
                    page_token: String::new(),
                    with_proofs: false,
                },
                token,
            ))
            .await
            .map(drop),
        ("audit", "ListEntries") => audit_client
            .list_entries(with_token(audit::ListEntriesRequest::default(), token))
            .await
            .map(drop),
        ("audit", "ListBreakGlassAccesses") => audit_client
            .list_break_glass_accesses(with_token(
                audit::ListBreakGlassAccessesRequest::default(),
                token,
            ))
            .await
            .map(drop),
        ("audit", "SignedTreeHead") => audit_client
            .signed_tree_head(with_token(audit::SignedTreeHeadRequest::default(), token))
            .await
            .map(drop),
        ("audit", "InclusionProof") => audit_client
            .inclusion_proof(with_token(
                audit::InclusionProofRequest {
                    sequence: 1,
                    tree_size: 1,
                },
                token,
            ))
            .await
            .map(drop),
        ("audit", "ConsistencyProof") => audit_client
            .consistency_proof(with_token(
                audit::ConsistencyProofRequest {
                    first_tree_size: 1,
                    second_tree_size: 1,
                },
                token,
            ))
            .await
            .map(drop),
        _ => panic!("no call for {service}/{method}: add one for the new row"),
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn demographics() -> identity::Demographics {
    identity::Demographics {
        given_names: vec!["Eleanor".into()],
        family_name: FAMILY_NAME.into(),
        birth_date: "1961-07-14".into(),
        gender: identity::Gender::Female as i32,
        postcode: "LS1 4AP".into(),
        ..Default::default()
    }
}

fn observation(patient_id: &str) -> String {
    serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "valueQuantity": {"value": 64, "unit": "/min"}
    })
    .to_string()
}

fn audit_event(patient_id: &str, token: &str) -> audit::AuditEvent {
    let principal = principal_of(token);
    let mut actor = principal.actor();
    if actor.organisation_ods_code.is_empty() && actor.patient_id.is_empty() {
        actor.organisation_ods_code = "X26".into();
    }
    audit::AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_750_000_000,
            nanos: 0,
        }),
        actor: Some(actor),
        patient_id: patient_id.into(),
        action: audit::Action::Read as i32,
        purpose: Purpose::DirectCare as i32,
        outcome: audit::Outcome::Success as i32,
        source_service: "table-test".into(),
        ..Default::default()
    }
}

async fn walk_the_table(backend: Backend) {
    let p = Platform::start(backend).await;
    let admin = p.admin_token().await;
    for ods in [CARING, "B82002", "C83003"] {
        p.organisation(&admin, ods).await;
    }
    let pas = p.pas(&admin, CARING).await;

    // The patient, registered by the caring organisation's system, and
    // another patient.
    let mut identity_client = IdentityServiceClient::new(p.identity.channel.clone());
    let patient_id = identity_client
        .register_patient(with_token(
            identity::RegisterPatientRequest {
                confirm_new_patient: false,
                nhs_number: NHS_NUMBER.into(),
                demographics: Some(demographics()),
            },
            &pas,
        ))
        .await
        .expect("registered")
        .into_inner()
        .patient
        .expect("patient")
        .patient_id;
    let other_patient_id = identity_client
        .register_patient(with_token(
            identity::RegisterPatientRequest {
                confirm_new_patient: false,
                nhs_number: "9990000026".into(),
                demographics: Some(identity::Demographics {
                    family_name: "Other".into(),
                    ..demographics()
                }),
            },
            &pas,
        ))
        .await
        .expect("registered")
        .into_inner()
        .patient
        .expect("patient")
        .patient_id;

    // A81001 cares for the patient; it writes a record; the patient objects
    // to research.
    ConsentServiceClient::new(p.consent.channel.clone())
        .record_care_relationship(with_token(
            consent::RecordCareRelationshipRequest {
                patient_id: patient_id.clone(),
                organisation_ods_code: CARING.into(),
                kind: consent::CareRelationshipKind::RegisteredGp as i32,
                start_time: None,
                end_time: None,
                ..Default::default()
            },
            &pas,
        ))
        .await
        .expect("relationship");
    let record_id = RecordsServiceClient::new(p.records.channel.clone())
        .create_record(with_token(
            records::CreateRecordRequest {
                patient_id: patient_id.clone(),
                resource_json: observation(&patient_id),
                category: 0,
                purpose: 0,
                idempotency_key: String::new(),
            },
            &pas,
        ))
        .await
        .expect("record")
        .into_inner()
        .record
        .expect("record")
        .record_id;
    let patient_token = p.patient(&admin, &patient_id).await;
    let directive_id = ConsentServiceClient::new(p.consent.channel.clone())
        .record_directive(with_token(
            consent::RecordDirectiveRequest {
                directive: Some(consent::Directive {
                    patient_id: patient_id.clone(),
                    effect: consent::Effect::Deny as i32,
                    purposes: vec![Purpose::Research as i32],
                    ..Default::default()
                }),
            },
            &patient_token,
        ))
        .await
        .expect("directive")
        .into_inner()
        .directive
        .expect("directive")
        .directive_id;
    let target = Target {
        patient_id,
        record_id,
        directive_id,
    };

    // Everyone the platform issues tokens to.
    let records_service = p.token("records", sharedcare_tests::RECORDS_SECRET).await;
    let cast_tokens: Vec<(&'static str, String)> = vec![
        ("admin", admin.clone()),
        ("service", records_service),
        ("patient (own)", patient_token.clone()),
        (
            "patient (another)",
            p.patient(&admin, &other_patient_id).await,
        ),
        ("clinician (caring)", p.staff(&admin, CARING, "R8000").await),
        (
            "clinician (not caring)",
            p.staff(&admin, "B82002", "R8000").await,
        ),
        ("clerk (caring)", p.staff(&admin, CARING, "R8008").await),
        ("PAS (caring)", pas.clone()),
        ("PAS (not caring)", p.pas(&admin, "B82002").await),
        (
            "privacy officer (caring)",
            p.staff(&admin, CARING, "privacy-officer").await,
        ),
        (
            "platform auditor",
            p.staff(&admin, "X26", "platform-auditor").await,
        ),
        (
            "introspecting service",
            p.principal(
                &admin,
                identity::CreatePrincipalRequest {
                    kind: PrincipalKind::Service as i32,
                    display_name: "Resource server".into(),
                    organisation_ods_code: "X26".into(),
                    scopes: vec!["tokens.introspect".into()],
                    ..Default::default()
                },
            )
            .await,
        ),
        ("identity service", p.identity_self_token().await),
        (
            "national opt-out service",
            p.principal(
                &admin,
                identity::CreatePrincipalRequest {
                    kind: PrincipalKind::Service as i32,
                    display_name: "National opt-out service".into(),
                    organisation_ods_code: "X26".into(),
                    scopes: vec!["consent.national_opt_out".into()],
                    ..Default::default()
                },
            )
            .await,
        ),
    ];
    let cast: Vec<Member> = cast_tokens
        .into_iter()
        .map(|(name, token)| Member {
            name,
            principal: principal_of(&token),
            token,
        })
        .collect();
    // The role map gave the roles their capabilities.
    let caps = |name: &str| {
        cast.iter()
            .find(|m| m.name == name)
            .expect("member")
            .principal
            .capabilities
            .clone()
    };
    assert!(caps("clerk (caring)").contains(&Capability::AssertRelationships));
    assert!(caps("clinician (caring)").contains(&Capability::RecordDirectives));
    assert!(caps("privacy officer (caring)").contains(&Capability::PrivacyOfficer));
    assert!(caps("platform auditor").contains(&Capability::PlatformAuditor));

    let tables: [(&str, &AccessTable); 4] = [
        ("identity", &sharedcare_identity::policy::ACCESS),
        ("consent", &sharedcare_consent::policy::ACCESS),
        ("records", &sharedcare_records::policy::ACCESS),
        ("audit", &sharedcare_audit::policy::ACCESS),
    ];
    let stored = Stored::open(&p).await;
    let (mut allowed, mut refused) = (0, 0);
    for (service, table) in tables {
        for rule in table.rules {
            if rule.callers.is_empty() {
                continue; // public: IssueToken, GetJwks, ListRevocations, tested below
            }
            for member in &cast {
                let cell = format!("{service}/{} as {}", rule.method, member.name);
                let allow = expected(table, rule.method, member, &target);
                let before = if allow {
                    vec![]
                } else {
                    stored.snapshot().await
                };
                let result = call(&p, service, rule.method, &member.token, &target).await;
                if allow {
                    allowed += 1;
                    if let Err(status) = &result {
                        assert!(
                            !matches!(
                                status.code(),
                                Code::PermissionDenied | Code::Unauthenticated
                            ),
                            "{cell} should pass the access check: {status:?}"
                        );
                    }
                } else if result
                    .as_ref()
                    .is_err_and(|s| s.code() == Code::Unimplemented)
                {
                    // An RPC of a later issue checks only the caller columns
                    // for now; its patient check lands with it.
                    assert!(
                        table.admit(rule.method, &member.principal).is_ok(),
                        "{cell}: refused callers never reach UNIMPLEMENTED"
                    );
                } else {
                    refused += 1;
                    let status = result.expect_err(&cell);
                    assert_eq!(status.code(), Code::PermissionDenied, "{cell}: {status:?}");
                    let message = status.message();
                    assert!(
                        message.contains(rule.method) || message.starts_with("consent denied:"),
                        "{cell}: the refusal names the rule: {message}"
                    );
                    assert!(
                        !message.contains(FAMILY_NAME) && !message.contains(NHS_NUMBER),
                        "{cell}: a refusal reveals nothing: {message}"
                    );
                    assert_eq!(
                        stored.snapshot().await,
                        before,
                        "{cell}: a refusal stores nothing"
                    );
                }
            }
        }
    }
    println!("access table: {allowed} cells allowed, {refused} refused");
    assert!(
        allowed > 40 && refused > 150,
        "{allowed} allowed, {refused} refused"
    );

    // The public rows need no token.
    IdentityServiceClient::new(p.identity.channel.clone())
        .get_jwks(identity::GetJwksRequest {})
        .await
        .expect("JWKS without a token");
    IdentityServiceClient::new(p.identity.channel.clone())
        .list_revocations(identity::ListRevocationsRequest {})
        .await
        .expect("revocations without a token");

    p.stop().await;
}

#[tokio::test]
async fn every_cell_of_the_access_table_on_sqlite() {
    walk_the_table(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_cell_of_the_access_table_on_postgres() {
    let Some(db) = TestDatabase::postgres("every_cell_of_the_access_table").await else {
        return;
    };
    walk_the_table(Backend::Postgres(db)).await;
}
