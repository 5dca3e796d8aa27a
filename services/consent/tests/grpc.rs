//! consent over real gRPC sockets.

use std::{sync::Arc, time::Duration};

use prost_types::Timestamp;
use sharedcare_consent::{
    Directory,
    domain::{OdsCode, PatientId},
    spec,
    store::{ConsentStore, OUTBOX_TABLE, SqlStore},
};
use sharedcare_kit::{
    access::Capability,
    client::ServiceTokens,
    db::WriteGate,
    decisions::{CachedConsent, DecisionCacheSettings},
    outbox::{Outbox, OutboxSettings},
    peers::BoxFuture,
    peers::{ConsentGate, Decision, GrpcConsent},
    server::MessageLimits,
    testing::{
        FixedToken, MemoryAudit, TestAuthority, TestDatabase, TestServer, TestToken,
        outbox_drained, spawn, with_token,
    },
};
use sharedcare_proto::{
    audit::v1::{Action, AuditEvent, Outcome},
    common::v1::{Actor, PrincipalKind, Purpose, RecordCategory},
    consent::v1::{self as pb, consent_service_client::ConsentServiceClient},
};
use tonic::{Code, transport::Channel};

const PATIENT: &str = "0197a1c2-patient-under-test";
const OTHER_PATIENT: &str = "0197a1c2-another-patient";

/// identity, as far as consent asks: these organisations exist, and every
/// patient but `UNKNOWN_PATIENT`.
struct Known(&'static [&'static str]);

const UNKNOWN_PATIENT: &str = "0197a1c2-never-registered";

impl Directory for Known {
    fn organisation_exists(&self, code: &OdsCode) -> BoxFuture<'_, bool> {
        let found = self.0.contains(&code.as_str());
        Box::pin(async move { Ok(found) })
    }

    fn patient_exists(&self, patient: &PatientId) -> BoxFuture<'_, bool> {
        let found = patient.as_str() != UNKNOWN_PATIENT;
        Box::pin(async move { Ok(found) })
    }
}

/// consent as `open` layers it, on `url`, auditing into memory.
async fn serve(
    url: &str,
    authority: &TestAuthority,
) -> (TestServer, Arc<SqlStore>, Arc<Outbox>, Arc<MemoryAudit>) {
    let store = Arc::new(SqlStore::connect(url, 4).await.expect("store"));
    let audit = Arc::new(MemoryAudit::default());
    let outbox = Outbox::start(
        store.connection(),
        WriteGate::for_db(&store.connection()),
        OUTBOX_TABLE,
        audit.clone(),
        OutboxSettings {
            max_lag: Duration::from_millis(200),
            poll: Duration::from_millis(10),
            ..OutboxSettings::default()
        },
    );
    let (layered, changes) =
        sharedcare_consent::layered((*store).clone(), Duration::from_millis(HEARTBEAT_MS));
    let server = spawn(spec(
        layered,
        changes,
        outbox.clone(),
        Arc::new(Known(&["A81001", "RR8", "B82002"])),
        authority.verifier(),
        MessageLimits { max_bytes: 4 << 20 },
    ))
    .await;
    (server, store, outbox, audit)
}

const HEARTBEAT_MS: u64 = 100;

struct Fixture {
    server: TestServer,
    store: Arc<SqlStore>,
    audit: Arc<MemoryAudit>,
    outbox: Arc<Outbox>,
    authority: TestAuthority,
    db: TestDatabase,
}

impl Fixture {
    async fn start() -> Self {
        Self::start_on(TestDatabase::sqlite()).await
    }

    async fn start_on(db: TestDatabase) -> Self {
        let authority = TestAuthority::new();
        let (server, store, outbox, audit) = serve(db.url(), &authority).await;
        Fixture {
            server,
            store,
            audit,
            outbox,
            authority,
            db,
        }
    }

    /// Another consent process on the same database (PostgreSQL).
    async fn replica(&self) -> TestServer {
        serve(self.db.url(), &self.authority).await.0
    }

    fn client(&self) -> ConsentServiceClient<Channel> {
        ConsentServiceClient::new(self.server.channel.clone())
    }

    fn staff(&self, org: &str, scopes: &[&str], capabilities: &[Capability]) -> String {
        self.authority.sign(TestToken {
            kind: PrincipalKind::Staff,
            org,
            role: "R8000",
            scopes,
            purposes: &[Purpose::DirectCare],
            capabilities,
            patient: "",
        })
    }

    /// Staff at A81001 with every scope of consent but no capability.
    fn token(&self, scopes: &[&str]) -> String {
        self.staff("A81001", scopes, &[])
    }

    /// The organisation's patient administration system: asserts its own
    /// care relationships.
    fn pas(&self, org: &str) -> String {
        self.authority.token(
            PrincipalKind::Application,
            org,
            "",
            &["consent.write", "consent.read"],
        )
    }

    /// A clinician at `org` who records directives on patients' behalf and
    /// refers.
    fn clinician(&self, org: &str) -> String {
        self.staff(
            org,
            &["consent.write", "consent.read"],
            &[Capability::RecordDirectives, Capability::Refer],
        )
    }

    /// The patient themselves (or another one).
    fn patient(&self, patient: &str) -> String {
        self.authority.sign(TestToken {
            kind: PrincipalKind::Patient,
            org: "",
            role: "",
            scopes: &["consent.write", "consent.read"],
            purposes: &[Purpose::PatientAccess],
            capabilities: &[],
            patient,
        })
    }

    /// Records and reads directives: the patient.
    fn writer(&self) -> String {
        self.patient(PATIENT)
    }

    /// What reached audit, once consent's outbox has delivered everything.
    async fn audited(&self) -> Vec<AuditEvent> {
        outbox_drained(&self.store.connection(), OUTBOX_TABLE).await;
        self.audit.delivered()
    }

    /// A platform service asking for decisions.
    fn evaluator(&self) -> String {
        self.authority.token(
            PrincipalKind::Service,
            "X26",
            "records",
            &["consent.evaluate"],
        )
    }

    async fn record_relationship(&self, org: &str) -> pb::CareRelationship {
        self.client()
            .record_care_relationship(with_token(relationship_request(org), &self.pas(org)))
            .await
            .expect("recorded")
            .into_inner()
            .relationship
            .expect("relationship")
    }

    async fn record_directive(&self, directive: pb::Directive) -> pb::Directive {
        self.client()
            .record_directive(with_token(
                pb::RecordDirectiveRequest {
                    directive: Some(directive),
                },
                &self.writer(),
            ))
            .await
            .expect("recorded")
            .into_inner()
            .directive
            .expect("directive")
    }

    async fn revoke(&self, id: &str) -> Result<pb::Directive, tonic::Status> {
        let response = self
            .client()
            .revoke_directive(with_token(
                pb::RevokeDirectiveRequest {
                    directive_id: id.into(),
                    patient_id: PATIENT.into(),
                },
                &self.writer(),
            ))
            .await?;
        Ok(response.into_inner().directive.expect("directive"))
    }

    async fn list_directives(&self) -> Vec<pb::Directive> {
        self.client()
            .list_directives(with_token(
                pb::ListDirectivesRequest {
                    patient_id: PATIENT.into(),
                    include_history: true,
                    ..Default::default()
                },
                &self.writer(),
            ))
            .await
            .expect("listed")
            .into_inner()
            .directives
    }

    async fn evaluate(&self, request: pb::EvaluateRequest) -> pb::EvaluateResponse {
        self.client()
            .evaluate(with_token(request, &self.evaluator()))
            .await
            .expect("a decision, even a denial, is an answer")
            .into_inner()
    }
}

fn seconds_from_now(s: i64) -> Timestamp {
    Timestamp {
        seconds: chrono::Utc::now().timestamp() + s,
        nanos: 0,
    }
}

fn relationship_request(org: &str) -> pb::RecordCareRelationshipRequest {
    pb::RecordCareRelationshipRequest {
        patient_id: PATIENT.into(),
        organisation_ods_code: org.into(),
        kind: pb::CareRelationshipKind::RegisteredGp as i32,
        start_time: None,
        end_time: None,
        ..Default::default()
    }
}

fn deny_all() -> pb::Directive {
    pb::Directive {
        patient_id: PATIENT.into(),
        effect: pb::Effect::Deny as i32,
        ..Default::default()
    }
}

fn evaluate_request(org: &str, purpose: Purpose) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        patient_id: PATIENT.into(),
        actor: Some(Actor {
            principal_id: "staff-1".into(),
            kind: PrincipalKind::Staff as i32,
            organisation_ods_code: org.into(),
            role: "R8000".into(),
            patient_id: String::new(),
            ..Actor::default()
        }),
        purpose: purpose as i32,
        category: RecordCategory::Unspecified as i32,
        break_glass: None,
        ..Default::default()
    }
}

/// A field a bad request names, and how to spoil a good one.
type Case<T> = (&'static str, fn(&mut T));

fn reason_codes(response: &pb::EvaluateResponse) -> Vec<&str> {
    response.reasons.iter().map(|r| r.code.as_str()).collect()
}

#[tokio::test]
async fn care_relationships_are_recorded_and_listed_newest_first() {
    let f = Fixture::start().await;
    let before = chrono::Utc::now().timestamp();
    let current = f.record_relationship("a81001").await;
    assert_eq!(current.organisation_ods_code, "A81001", "stored upper case");
    assert_eq!(current.patient_id, PATIENT);
    assert_eq!(current.kind, pb::CareRelationshipKind::RegisteredGp as i32);
    assert!(current.start_time.expect("defaulted").seconds >= before);
    assert_eq!(current.end_time, None);
    assert!(current.recorded_by.starts_with("test-"), "the caller's id");
    assert_eq!(current.recorded_by_ods_code, "A81001");

    let mut past = relationship_request("RR8");
    past.kind = pb::CareRelationshipKind::HospitalEpisode as i32;
    past.start_time = Some(seconds_from_now(-86_400 * 10));
    past.end_time = Some(seconds_from_now(-86_400 * 3));
    let past = f
        .client()
        .record_care_relationship(with_token(past, &f.pas("RR8")))
        .await
        .expect("recorded")
        .into_inner()
        .relationship
        .expect("relationship");

    let listed = f
        .client()
        .list_care_relationships(with_token(
            pb::ListCareRelationshipsRequest {
                patient_id: PATIENT.into(),
                include_ended: true,
                ..Default::default()
            },
            &f.writer(),
        ))
        .await
        .expect("listed")
        .into_inner()
        .relationships;
    assert_eq!(listed, vec![current.clone(), past]);

    // Each assertion and the read are in the audit trail, naming who.
    let audited = f.audited().await;
    let summary: Vec<_> = audited
        .iter()
        .map(|e| {
            (
                e.action,
                e.resource_type.as_str(),
                e.outcome_reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Action::Create as i32, "CareRelationship", "ASSERTED"),
            (Action::Create as i32, "CareRelationship", "ASSERTED"),
            (Action::Read as i32, "CareRelationship", "LISTED"),
        ]
    );
    assert_eq!(audited[0].record_id, current.relationship_id);
    assert_eq!(
        audited[0].actor.as_ref().expect("actor").principal_id,
        current.recorded_by
    );
    assert!(audited.iter().all(|e| e.patient_id == PATIENT));
}

#[tokio::test]
async fn directives_are_recorded_listed_and_revoked_once() {
    let f = Fixture::start().await;
    let recorded = f
        .record_directive(pb::Directive {
            directive_id: "ignored".into(),
            purposes: vec![Purpose::Research as i32, Purpose::Research as i32],
            organisation_ods_code: "rr8".into(),
            staff_role: "R8000".into(),
            categories: vec![RecordCategory::MentalHealth as i32],
            end_time: Some(seconds_from_now(3_600)),
            note: "said so at clinic".into(),
            revoke_time: Some(seconds_from_now(0)),
            ..deny_all()
        })
        .await;
    assert_ne!(recorded.directive_id, "ignored");
    assert_eq!(recorded.source, pb::DirectiveSource::Patient as i32);
    assert!(recorded.recorded_by.starts_with("test-"));
    assert_eq!(recorded.recorded_by_ods_code, "");
    assert_eq!(
        recorded.purposes,
        vec![Purpose::Research as i32],
        "once each"
    );
    assert_eq!(recorded.organisation_ods_code, "RR8");
    assert!(recorded.create_time.is_some() && recorded.start_time.is_some());
    assert_eq!(recorded.revoke_time, None, "revoke_time is ignored");

    assert_eq!(f.list_directives().await, vec![recorded.clone()]);

    let revoked = f.revoke(&recorded.directive_id).await.expect("revoked");
    assert!(revoked.revoke_time.is_some());
    assert!(revoked.revoked_by.starts_with("test-"));
    assert_eq!(
        f.list_directives().await,
        vec![revoked],
        "revoked ones are listed"
    );

    let again = f.revoke(&recorded.directive_id).await.expect_err("twice");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let unknown = f.revoke("no-such-directive").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn direct_care_is_permitted_only_within_a_care_relationship() {
    let f = Fixture::start().await;
    let denied = f
        .evaluate(evaluate_request("A81001", Purpose::DirectCare))
        .await;
    assert_eq!(denied.decision, pb::Decision::Deny as i32);
    assert_eq!(reason_codes(&denied), ["NO_CARE_RELATIONSHIP"]);
    assert!(denied.reasons[0].message.contains("A81001"));

    let relationship = f.record_relationship("A81001").await;
    let permitted = f
        .evaluate(evaluate_request("a81001", Purpose::DirectCare))
        .await;
    assert_eq!(permitted.decision, pb::Decision::Permit as i32);
    assert_eq!(reason_codes(&permitted), ["CARE_RELATIONSHIP"]);
    assert_eq!(
        permitted.reasons[0].evidence_id,
        relationship.relationship_id
    );
    assert_eq!(permitted.obligations[0].code, "AUDIT");
    assert!(permitted.evaluate_time.is_some());
    assert_ne!(
        permitted.decision_id, denied.decision_id,
        "a fresh id each time"
    );
    uuid::Uuid::parse_str(&permitted.decision_id).expect("a uuid");

    // The relationship is the organisation's, not everyone's.
    let elsewhere = f
        .evaluate(evaluate_request("RR8", Purpose::DirectCare))
        .await;
    assert_eq!(reason_codes(&elsewhere), ["NO_CARE_RELATIONSHIP"]);
}

#[tokio::test]
async fn patient_directives_decide_objections_and_explicit_consent() {
    let f = Fixture::start().await;
    f.record_relationship("A81001").await;

    // An objection to sexual-health sharing with A81001 wins over the
    // relationship for that category only.
    let objection = f
        .record_directive(pb::Directive {
            organisation_ods_code: "A81001".into(),
            categories: vec![RecordCategory::SexualHealth as i32],
            ..deny_all()
        })
        .await;
    let mut sexual_health = evaluate_request("A81001", Purpose::DirectCare);
    sexual_health.category = RecordCategory::SexualHealth as i32;
    let denied = f.evaluate(sexual_health.clone()).await;
    assert_eq!(denied.decision, pb::Decision::Deny as i32);
    assert_eq!(reason_codes(&denied), ["PATIENT_DIRECTIVE_DENY"]);
    assert_eq!(denied.reasons[0].evidence_id, objection.directive_id);
    let general = f
        .evaluate(evaluate_request("A81001", Purpose::DirectCare))
        .await;
    assert_eq!(general.decision, pb::Decision::Permit as i32);

    // Break-glass does not override the patient's objection.
    sexual_health.break_glass = Some(pb::BreakGlass {
        reason: "unconscious in A&E".into(),
    });
    if let Some(actor) = sexual_health.actor.as_mut() {
        actor.capabilities = vec!["break_glass".into()];
    }
    let denied = f.evaluate(sexual_health.clone()).await;
    assert_eq!(
        reason_codes(&denied),
        ["PATIENT_DIRECTIVE_DENY", "BREAK_GLASS_REFUSED"]
    );

    // Once withdrawn, the objection no longer applies.
    f.revoke(&objection.directive_id).await.expect("revoked");
    sexual_health.break_glass = None;
    assert_eq!(
        f.evaluate(sexual_health).await.decision,
        pb::Decision::Permit as i32
    );

    // Research has no lawful basis until the patient consents to it.
    let research = evaluate_request("RR8", Purpose::Research);
    let denied = f.evaluate(research.clone()).await;
    assert_eq!(reason_codes(&denied), ["NO_LAWFUL_BASIS"]);
    assert!(denied.reasons[0].message.contains("research"));
    let consent = f
        .record_directive(pb::Directive {
            effect: pb::Effect::Permit as i32,
            purposes: vec![Purpose::Research as i32],
            ..deny_all()
        })
        .await;
    let permitted = f.evaluate(research).await;
    assert_eq!(permitted.decision, pb::Decision::Permit as i32);
    assert_eq!(reason_codes(&permitted), ["PATIENT_DIRECTIVE_PERMIT"]);
    assert_eq!(permitted.reasons[0].evidence_id, consent.directive_id);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_stored() {
    let f = Fixture::start().await;
    let writer = f.writer();
    let pas = f.pas("A81001");
    let expect_invalid = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    };

    let relationship_cases: Vec<Case<pb::RecordCareRelationshipRequest>> = vec![
        ("patient_id", |r| r.patient_id = " ".into()),
        ("patient_id", |r| r.patient_id = "p".repeat(65)),
        ("organisation_ods_code", |r| {
            r.organisation_ods_code = "".into()
        }),
        ("organisation_ods_code", |r| {
            r.organisation_ods_code = "A8-001".into()
        }),
        ("organisation_ods_code", |r| {
            r.organisation_ods_code = "A810011".into()
        }),
        ("kind", |r| r.kind = 0),
        ("kind", |r| r.kind = 99),
        ("end_time", |r| {
            r.start_time = Some(seconds_from_now(0));
            r.end_time = Some(seconds_from_now(-1));
        }),
        ("start_time", |r| {
            r.start_time = Some(Timestamp {
                seconds: 0,
                nanos: -1,
            })
        }),
    ];
    for (field, spoil) in relationship_cases {
        let mut request = relationship_request("A81001");
        spoil(&mut request);
        let status = f
            .client()
            .record_care_relationship(with_token(request, &pas))
            .await
            .expect_err(field);
        expect_invalid(status, field);
    }

    let directive_cases: Vec<Case<pb::Directive>> = vec![
        ("directive.patient_id", |d| d.patient_id.clear()),
        ("directive.effect", |d| d.effect = 0),
        ("directive.purposes", |d| {
            d.purposes = vec![Purpose::Research as i32, 0]
        }),
        ("directive.categories", |d| d.categories = vec![0]),
        ("directive.categories", |d| d.categories = vec![42]),
        ("directive.organisation_ods_code", |d| {
            d.organisation_ods_code = "R8".into()
        }),
        // Well formed, but no such organisation.
        ("directive.organisation_ods_code", |d| {
            d.organisation_ods_code = "ZZ999".into()
        }),
        ("directive.staff_principal_id", |d| {
            d.staff_principal_id = "s".repeat(65)
        }),
        ("directive.kind", |d| d.kind = 7),
        ("directive.staff_role", |d| d.staff_role = "r".repeat(65)),
        ("directive.end_time", |d| {
            d.start_time = Some(seconds_from_now(100));
            d.end_time = Some(seconds_from_now(100));
        }),
        ("directive.note", |d| d.note = "n".repeat(501)),
    ];
    for (field, spoil) in directive_cases {
        let mut directive = deny_all();
        spoil(&mut directive);
        let status = f
            .client()
            .record_directive(with_token(
                pb::RecordDirectiveRequest {
                    directive: Some(directive),
                },
                &writer,
            ))
            .await
            .expect_err(field);
        expect_invalid(status, field);
    }
    let status = f
        .client()
        .record_directive(with_token(pb::RecordDirectiveRequest::default(), &writer))
        .await
        .expect_err("no directive");
    expect_invalid(status, "directive");

    let patient = PatientId::parse("patient_id", PATIENT).expect("valid");
    assert!(
        f.store
            .list_relationships(&patient)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        f.store
            .list_directives(&patient)
            .await
            .expect("list")
            .is_empty()
    );

    let evaluate_cases: Vec<Case<pb::EvaluateRequest>> = vec![
        ("patient_id", |r| r.patient_id.clear()),
        ("actor", |r| r.actor = None),
        ("actor.organisation_ods_code", |r| {
            r.actor
                .as_mut()
                .expect("actor")
                .organisation_ods_code
                .clear()
        }),
        ("purpose", |r| r.purpose = Purpose::Unspecified as i32),
        ("category", |r| r.category = 17),
        ("break_glass.reason", |r| {
            r.break_glass = Some(pb::BreakGlass { reason: " ".into() })
        }),
    ];
    for (field, spoil) in evaluate_cases {
        let mut request = evaluate_request("A81001", Purpose::DirectCare);
        spoil(&mut request);
        let status = f
            .client()
            .evaluate(with_token(request, &f.evaluator()))
            .await
            .expect_err(field);
        expect_invalid(status, field);
    }

    for status in [
        f.client()
            .list_directives(with_token(pb::ListDirectivesRequest::default(), &writer))
            .await
            .expect_err("no patient"),
        f.client()
            .revoke_directive(with_token(pb::RevokeDirectiveRequest::default(), &writer))
            .await
            .expect_err("no id"),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn every_call_needs_a_token_with_its_scope() {
    let f = Fixture::start().await;
    let status = f
        .client()
        .evaluate(evaluate_request("A81001", Purpose::DirectCare))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let forged = TestAuthority::new().token(
        PrincipalKind::Service,
        "X26",
        "records",
        &["consent.evaluate"],
    );
    let status = f
        .client()
        .evaluate(with_token(
            evaluate_request("A81001", Purpose::DirectCare),
            &forged,
        ))
        .await
        .expect_err("signed by an unknown key");
    assert_eq!(status.code(), Code::Unauthenticated);

    let reader = f
        .authority
        .token(PrincipalKind::Application, "A81001", "", &["consent.read"]);
    let status = f
        .client()
        .record_care_relationship(with_token(relationship_request("A81001"), &reader))
        .await
        .expect_err("read-only");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("consent.write"));

    // Recording consent is not the same as asking for decisions.
    let status = f
        .client()
        .evaluate(with_token(
            evaluate_request("A81001", Purpose::DirectCare),
            &f.pas("A81001"),
        ))
        .await
        .expect_err("no evaluate scope");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("consent.evaluate"));

    let status = f
        .client()
        .list_care_relationships(with_token(
            pb::ListCareRelationshipsRequest {
                patient_id: PATIENT.into(),
                include_ended: true,
                ..Default::default()
            },
            &f.evaluator(),
        ))
        .await
        .expect_err("no read scope");
    assert_eq!(status.code(), Code::PermissionDenied);
}

fn research_consent() -> pb::Directive {
    pb::Directive {
        patient_id: PATIENT.into(),
        effect: pb::Effect::Permit as i32,
        purposes: vec![Purpose::Research as i32],
        ..Default::default()
    }
}

/// The national opt-out service, as a platform service.
fn opt_out_service(f: &Fixture) -> String {
    f.authority.token(
        PrincipalKind::Service,
        "X26",
        "ndop",
        &["consent.national_opt_out"],
    )
}

async fn set_opt_out(
    f: &Fixture,
    patient: &str,
    opted_out: bool,
    token: &str,
) -> Result<pb::SetNationalOptOutResponse, tonic::Status> {
    f.client()
        .set_national_opt_out(with_token(
            pb::SetNationalOptOutRequest {
                patient_id: patient.into(),
                opted_out,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn the_national_opt_out_is_set_by_the_patient_or_its_service_and_refuses_research() {
    let f = Fixture::start().await;
    f.record_relationship("A81001").await;
    f.record_directive(research_consent()).await;
    let research = evaluate_request("A81001", Purpose::Research);
    assert_eq!(
        f.evaluate(research.clone()).await.decision,
        pb::Decision::Permit as i32
    );

    // The patient opts out; asking twice changes nothing.
    let set = set_opt_out(&f, PATIENT, true, &f.writer())
        .await
        .expect("set");
    assert!(set.opted_out);
    let opt_out = set.directive.expect("the opt-out");
    assert_eq!(opt_out.kind, pb::DirectiveKind::NationalOptOut as i32);
    assert_eq!(opt_out.source, pb::DirectiveSource::Patient as i32);
    assert_eq!(opt_out.end_time, None, "it persists until withdrawn");
    let again = set_opt_out(&f, PATIENT, true, &f.writer())
        .await
        .expect("set");
    assert_eq!(
        again.directive.expect("same").directive_id,
        opt_out.directive_id
    );

    // Research is refused despite the patient's general consent; care is not
    // touched.
    let refused = f.evaluate(research.clone()).await;
    assert_eq!(reason_codes(&refused), ["NATIONAL_OPT_OUT"]);
    assert_eq!(refused.reasons[0].evidence_id, opt_out.directive_id);
    assert_eq!(
        f.evaluate(evaluate_request("A81001", Purpose::DirectCare))
            .await
            .decision,
        pb::Decision::Permit as i32
    );
    // An exemption, claimed, lifts it and is named.
    let anonymised = pb::EvaluateRequest {
        opt_out_exemptions: vec![pb::OptOutExemption::AnonymisedData as i32],
        ..research.clone()
    };
    let permitted = f.evaluate(anonymised).await;
    assert_eq!(
        reason_codes(&permitted),
        ["PATIENT_DIRECTIVE_PERMIT", "OPT_OUT_EXEMPTION"]
    );
    let bad_inputs = [
        (
            pb::EvaluateRequest {
                opt_out_exemptions: vec![pb::OptOutExemption::LegalRequirement as i32],
                ..research.clone()
            },
            "legal_basis",
        ),
        (
            pb::EvaluateRequest {
                opt_out_exemptions: vec![pb::OptOutExemption::AnonymisedData as i32],
                ..evaluate_request("A81001", Purpose::DirectCare)
            },
            "opt_out_exemptions",
        ),
        (
            pb::EvaluateRequest {
                opt_out_exemptions: vec![99],
                ..research.clone()
            },
            "opt_out_exemptions",
        ),
    ];
    for (request, field) in bad_inputs {
        let status = f
            .client()
            .evaluate(with_token(request, &f.evaluator()))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // Only SetNationalOptOut changes it.
    let status = f.revoke(&opt_out.directive_id).await.expect_err("not here");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = f
        .client()
        .record_directive(with_token(
            pb::RecordDirectiveRequest {
                directive: Some(pb::Directive {
                    kind: pb::DirectiveKind::NationalOptOut as i32,
                    ..deny_all()
                }),
            },
            &f.writer(),
        ))
        .await
        .expect_err("not a patient directive");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("directive.kind"));
    // Not by a clinician, even one recording directives for the patient.
    let status = set_opt_out(&f, PATIENT, false, &f.clinician("A81001"))
        .await
        .expect_err("not theirs to set");
    assert_eq!(status.code(), Code::PermissionDenied);

    // The national service withdraws it, and sets another patient's.
    let service = opt_out_service(&f);
    let withdrawn = set_opt_out(&f, PATIENT, false, &service)
        .await
        .expect("withdrawn");
    assert!(!withdrawn.opted_out);
    let withdrawn = withdrawn.directive.expect("the withdrawn opt-out");
    assert_eq!(withdrawn.version, 2);
    assert!(withdrawn.revoke_time.is_some());
    assert_eq!(
        f.evaluate(research).await.decision,
        pb::Decision::Permit as i32
    );
    let other = set_opt_out(&f, OTHER_PATIENT, true, &service)
        .await
        .expect("set");
    assert_eq!(
        other.directive.expect("opt-out").source,
        pb::DirectiveSource::NationalOptOutService as i32
    );
    let status = set_opt_out(&f, UNKNOWN_PATIENT, true, &service)
        .await
        .expect_err("unknown patient");
    assert_eq!(status.code(), Code::NotFound);

    let reasons: Vec<(i32, String)> = f
        .audited()
        .await
        .into_iter()
        .filter(|e| e.outcome_reason == "OPT_OUT_CHANGED")
        .map(|e| (e.action, e.patient_id))
        .collect();
    assert_eq!(
        reasons,
        [
            (Action::Create as i32, PATIENT.to_owned()),
            (Action::Read as i32, PATIENT.to_owned()),
            (Action::Delete as i32, PATIENT.to_owned()),
            (Action::Create as i32, OTHER_PATIENT.to_owned()),
        ]
    );
}

/// A&E staff whose role allows break-glass.
fn emergency_request(principal: &str) -> pb::EvaluateRequest {
    let mut request = evaluate_request("RR8", Purpose::EmergencyCare);
    if let Some(actor) = request.actor.as_mut() {
        actor.principal_id = principal.into();
        actor.capabilities = vec!["break_glass".into()];
    }
    request
}

async fn relationship_count(f: &Fixture) -> usize {
    let patient = PatientId::parse("patient_id", PATIENT).expect("valid");
    f.store
        .list_relationships(&patient)
        .await
        .expect("listed")
        .len()
}

#[tokio::test]
async fn break_glass_records_a_time_boxed_grant_audited_flagged_and_listed() {
    let f = Fixture::start().await;
    let version_before = f.evaluate(emergency_request("ae-1")).await.consent_version;

    // Refused requests store nothing.
    let no_reason = pb::EvaluateRequest {
        break_glass: Some(pb::BreakGlass { reason: " ".into() }),
        ..emergency_request("ae-1")
    };
    let for_research = pb::EvaluateRequest {
        purpose: Purpose::Research as i32,
        break_glass: Some(pb::BreakGlass {
            reason: "curious".into(),
        }),
        ..emergency_request("ae-1")
    };
    let mut not_allowed = pb::EvaluateRequest {
        break_glass: Some(pb::BreakGlass {
            reason: "unconscious".into(),
        }),
        ..emergency_request("ae-1")
    };
    if let Some(actor) = not_allowed.actor.as_mut() {
        actor.capabilities.clear();
    }
    for (request, code, field) in [
        (no_reason, Code::InvalidArgument, "break_glass.reason"),
        (for_research, Code::InvalidArgument, "break_glass"),
        (not_allowed, Code::PermissionDenied, "break-glass"),
    ] {
        let status = f
            .client()
            .evaluate(with_token(request, &f.evaluator()))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{field}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    assert_eq!(relationship_count(&f).await, 0);

    let asked = pb::EvaluateRequest {
        break_glass: Some(pb::BreakGlass {
            reason: "unconscious in A&E, no history available".into(),
        }),
        ..emergency_request("ae-1")
    };
    let granted = f.evaluate(asked.clone()).await;
    assert_eq!(granted.decision, pb::Decision::Permit as i32);
    assert_eq!(
        reason_codes(&granted),
        ["BREAK_GLASS", "NO_CARE_RELATIONSHIP"]
    );
    let obligations: Vec<&str> = granted
        .obligations
        .iter()
        .map(|o| o.code.as_str())
        .collect();
    assert_eq!(
        obligations,
        ["AUDIT", "BREAK_GLASS", "NOTIFY_PRIVACY_OFFICER"]
    );
    assert_eq!(granted.consent_version, version_before + 1);
    let lapses = granted.valid_until.expect("the grant lapses").seconds;
    let in_an_hour = chrono::Utc::now().timestamp() + 3600;
    assert!((in_an_hour - 5..=in_an_hour).contains(&lapses), "{lapses}");

    // The grant is a relationship anyone entitled can see.
    let listed = f
        .client()
        .list_care_relationships(with_token(
            pb::ListCareRelationshipsRequest {
                patient_id: PATIENT.into(),
                ..Default::default()
            },
            &f.writer(),
        ))
        .await
        .expect("listed")
        .into_inner()
        .relationships;
    assert_eq!(listed.len(), 1);
    let grant = &listed[0];
    assert_eq!(grant.relationship_id, granted.reasons[0].evidence_id);
    assert_eq!(grant.kind, pb::CareRelationshipKind::BreakGlass as i32);
    assert_eq!(grant.staff_principal_id, "ae-1");
    assert_eq!(grant.organisation_ods_code, "RR8");
    assert_eq!(grant.reason, "unconscious in A&E, no history available");

    // Audited as the clinician's, flagged, for their organisation.
    let events = f.audited().await;
    let event = events
        .iter()
        .find(|e| e.record_id == grant.relationship_id)
        .expect("the grant is audited");
    assert!(event.break_glass);
    assert_eq!(event.outcome_reason, "BREAK_GLASS");
    let actor = event.actor.as_ref().expect("actor");
    assert_eq!(
        (
            actor.principal_id.as_str(),
            actor.organisation_ods_code.as_str()
        ),
        ("ae-1", "RR8")
    );

    // The grant serves the same clinician without asking again; asking again
    // makes no second grant; a colleague gets nothing from it.
    let served = f.evaluate(emergency_request("ae-1")).await;
    assert_eq!(reason_codes(&served), ["BREAK_GLASS_GRANT"]);
    let again = f.evaluate(asked).await;
    assert_eq!(again.decision, pb::Decision::Permit as i32);
    assert_eq!(relationship_count(&f).await, 1);
    let colleague = f.evaluate(emergency_request("ae-2")).await;
    assert_eq!(reason_codes(&colleague), ["NO_CARE_RELATIONSHIP"]);
}

#[tokio::test]
async fn evaluate_answers_per_category_and_in_batches() {
    let f = Fixture::start().await;
    let placement = pb::RecordCareRelationshipRequest {
        kind: pb::CareRelationshipKind::CareHomePlacement as i32,
        ..relationship_request("A81001")
    };
    f.client()
        .record_care_relationship(with_token(placement, &f.pas("A81001")))
        .await
        .expect("recorded");
    let asked = pb::EvaluateRequest {
        categories: vec![
            RecordCategory::General as i32,
            RecordCategory::MentalHealth as i32,
            RecordCategory::SocialCare as i32,
        ],
        ..evaluate_request("A81001", Purpose::DirectCare)
    };
    let answer = f.evaluate(asked.clone()).await;
    assert_eq!(answer.decision, pb::Decision::Deny as i32);
    assert!(answer.obligations.is_empty());
    let each: Vec<(i32, i32)> = answer
        .results
        .iter()
        .map(|r| (r.category, r.decision))
        .collect();
    assert_eq!(
        each,
        [
            (RecordCategory::General as i32, pb::Decision::Permit as i32),
            (
                RecordCategory::MentalHealth as i32,
                pb::Decision::Deny as i32
            ),
            (
                RecordCategory::SocialCare as i32,
                pb::Decision::Permit as i32
            ),
        ]
    );
    assert_eq!(answer.results[1].reasons[0].code, "RELATIONSHIP_SCOPE");
    assert_eq!(answer.results[0].obligations[0].code, "AUDIT");

    // The consent version moves with each change.
    let before = answer.consent_version;
    f.record_directive(deny_all()).await;
    assert_eq!(f.evaluate(asked.clone()).await.consent_version, before + 1);

    let bad = pb::EvaluateRequest {
        category: RecordCategory::SexualHealth as i32,
        ..asked.clone()
    };
    let status = f
        .client()
        .evaluate(with_token(bad, &f.evaluator()))
        .await
        .expect_err("category outside categories");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("category"));

    // Many patients in one call, answered in order.
    let other = pb::EvaluateRequest {
        patient_id: OTHER_PATIENT.into(),
        ..evaluate_request("A81001", Purpose::DirectCare)
    };
    let batch = f
        .client()
        .batch_evaluate(with_token(
            pb::BatchEvaluateRequest {
                requests: vec![asked.clone(), other.clone()],
            },
            &f.evaluator(),
        ))
        .await
        .expect("answered")
        .into_inner()
        .responses;
    assert_eq!(batch.len(), 2);
    assert_eq!(reason_codes(&batch[0])[0], "PATIENT_DIRECTIVE_DENY");
    assert_eq!(reason_codes(&batch[1]), ["NO_CARE_RELATIONSHIP"]);
    let unspecified = pb::EvaluateRequest {
        purpose: Purpose::Unspecified as i32,
        ..other.clone()
    };
    for (requests, field) in [
        (vec![], "requests"),
        (vec![other.clone(); 101], "requests"),
        (vec![other.clone(), unspecified], "requests[1].purpose"),
    ] {
        let status = f
            .client()
            .batch_evaluate(with_token(
                pb::BatchEvaluateRequest { requests },
                &f.evaluator(),
            ))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{}",
            status.message()
        );
    }
    // Only for services that ask for decisions.
    let status = f
        .client()
        .batch_evaluate(with_token(
            pb::BatchEvaluateRequest {
                requests: vec![other],
            },
            &f.writer(),
        ))
        .await
        .expect_err("a patient does not evaluate");
    assert_eq!(status.code(), Code::PermissionDenied);
}

async fn list_directives(
    f: &Fixture,
    request: pb::ListDirectivesRequest,
) -> Result<pb::ListDirectivesResponse, tonic::Status> {
    f.client()
        .list_directives(with_token(request, &f.writer()))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn lists_are_paged_current_by_default_with_history_on_request() {
    let f = Fixture::start().await;
    let mut recorded = vec![];
    for _ in 0..5 {
        recorded.push(f.record_directive(deny_all()).await.directive_id);
    }
    f.revoke(&recorded[1]).await.expect("revoked");

    let current = list_directives(
        &f,
        pb::ListDirectivesRequest {
            patient_id: PATIENT.into(),
            ..Default::default()
        },
    )
    .await
    .expect("listed");
    assert_eq!(current.directives.len(), 4);
    assert!(current.next_page_token.is_empty());
    assert!(current.directives.iter().all(|d| d.version == 1));

    // Two at a time, with history: every directive once, newest first.
    let mut seen = vec![];
    let mut token = String::new();
    loop {
        let page = list_directives(
            &f,
            pb::ListDirectivesRequest {
                patient_id: PATIENT.into(),
                page_size: 2,
                page_token: token.clone(),
                include_history: true,
            },
        )
        .await
        .expect("page");
        assert!(page.directives.len() <= 2);
        seen.extend(page.directives);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let ids: Vec<&str> = seen.iter().map(|d| d.directive_id.as_str()).collect();
    let newest_first: Vec<&str> = recorded.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first);
    assert_eq!(seen[3].version, 2, "the revoked one, as revoked");

    // A cursor is only for the request it came from.
    let first = list_directives(
        &f,
        pb::ListDirectivesRequest {
            patient_id: PATIENT.into(),
            page_size: 2,
            ..Default::default()
        },
    )
    .await
    .expect("page");
    for (request, field) in [
        (
            pb::ListDirectivesRequest {
                patient_id: PATIENT.into(),
                page_token: first.next_page_token.clone(),
                include_history: true,
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListDirectivesRequest {
                patient_id: PATIENT.into(),
                page_token: "not-a-cursor".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListDirectivesRequest {
                patient_id: PATIENT.into(),
                page_size: 101,
                ..Default::default()
            },
            "page_size",
        ),
    ] {
        let status = list_directives(&f, request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // Relationships: a team and a staff member kept; ended ones on request.
    let named = pb::RecordCareRelationshipRequest {
        kind: pb::CareRelationshipKind::CommunityCare as i32,
        staff_principal_id: "district-nurse-4".into(),
        team: "District nursing (east)".into(),
        ..relationship_request("A81001")
    };
    let named = f
        .client()
        .record_care_relationship(with_token(named, &f.pas("A81001")))
        .await
        .expect("recorded")
        .into_inner()
        .relationship
        .expect("relationship");
    assert_eq!(named.staff_principal_id, "district-nurse-4");
    assert_eq!(named.team, "District nursing (east)");
    let gp = f.record_relationship("A81001").await;
    f.client()
        .end_care_relationship(with_token(
            pb::EndCareRelationshipRequest {
                patient_id: PATIENT.into(),
                relationship_id: gp.relationship_id.clone(),
                end_time: None,
            },
            &f.pas("A81001"),
        ))
        .await
        .expect("ended");
    let list = |include_ended| {
        let f = &f;
        async move {
            f.client()
                .list_care_relationships(with_token(
                    pb::ListCareRelationshipsRequest {
                        patient_id: PATIENT.into(),
                        include_ended,
                        ..Default::default()
                    },
                    &f.writer(),
                ))
                .await
                .expect("listed")
                .into_inner()
                .relationships
        }
    };
    let current = list(false).await;
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].relationship_id, named.relationship_id);
    let all = list(true).await;
    assert_eq!(all.len(), 2);
    let ended = all
        .iter()
        .find(|r| r.relationship_id == gp.relationship_id)
        .expect("listed");
    assert_eq!(ended.version, 2);
}

/// The attacks of the trust-model issue, each refused, with nothing stored.
#[tokio::test]
async fn nobody_grants_themselves_a_relationship_or_overrides_a_patient() {
    let f = Fixture::start().await;
    let patient = PatientId::parse("patient_id", PATIENT).expect("valid");

    // An ordinary clinician cannot assert a relationship, even for their own
    // organisation: that is the organisation's system's (or a clerk's) job.
    let status = f
        .client()
        .record_care_relationship(with_token(
            relationship_request("A81001"),
            &f.token(&["consent.write", "consent.read"]),
        ))
        .await
        .expect_err("no capability");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("assert_relationships"),
        "{}",
        status.message()
    );

    // An organisation's system asserts relationships for itself only.
    let status = f
        .client()
        .record_care_relationship(with_token(relationship_request("RR8"), &f.pas("A81001")))
        .await
        .expect_err("another organisation");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("only for itself"),
        "{}",
        status.message()
    );
    assert!(
        f.store
            .list_relationships(&patient)
            .await
            .expect("list")
            .is_empty()
    );
    // The attempt is on the patient's record.
    let refused = f.audited().await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].outcome, Outcome::Denied as i32);
    assert_eq!(refused[0].outcome_reason, "NOT_OWN_ORGANISATION");

    // The patient objects to sharing with everyone.
    let objection = f.record_directive(deny_all()).await;

    // A clinician at an organisation with no relationship can neither
    // revoke it, nor read the patient's directives, nor record one.
    let stranger = f.clinician("RR8");
    let status = f
        .client()
        .revoke_directive(with_token(
            pb::RevokeDirectiveRequest {
                directive_id: objection.directive_id.clone(),
                patient_id: PATIENT.into(),
            },
            &stranger,
        ))
        .await
        .expect_err("no relationship");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("no current care relationship"));
    let status = f
        .client()
        .list_directives(with_token(
            pb::ListDirectivesRequest {
                patient_id: PATIENT.into(),
                include_history: true,
                ..Default::default()
            },
            &stranger,
        ))
        .await
        .expect_err("no relationship");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = f
        .client()
        .record_directive(with_token(
            pb::RecordDirectiveRequest {
                directive: Some(pb::Directive {
                    effect: pb::Effect::Permit as i32,
                    ..deny_all()
                }),
            },
            &stranger,
        ))
        .await
        .expect_err("no relationship");
    assert_eq!(status.code(), Code::PermissionDenied);
    let directives = f.store.list_directives(&patient).await.expect("list");
    assert_eq!(directives.len(), 1);
    assert_eq!(directives[0].revoked_at, None, "the objection stands");

    // Another patient can neither read nor revoke this patient's directives.
    let status = f
        .client()
        .revoke_directive(with_token(
            pb::RevokeDirectiveRequest {
                directive_id: objection.directive_id.clone(),
                patient_id: PATIENT.into(),
            },
            &f.patient(OTHER_PATIENT),
        ))
        .await
        .expect_err("not their own");
    assert_eq!(status.code(), Code::PermissionDenied);
    // Naming their own patient id does not reach another's directive.
    let status = f
        .client()
        .revoke_directive(with_token(
            pb::RevokeDirectiveRequest {
                directive_id: objection.directive_id.clone(),
                patient_id: OTHER_PATIENT.into(),
            },
            &f.patient(OTHER_PATIENT),
        ))
        .await
        .expect_err("not theirs");
    assert_eq!(status.code(), Code::NotFound);

    // Admin and services have no business here at all.
    let admin = f.authority.token(
        PrincipalKind::Admin,
        "X26",
        "admin",
        &["admin", "consent.write"],
    );
    let status = f
        .client()
        .list_directives(with_token(
            pb::ListDirectivesRequest {
                patient_id: PATIENT.into(),
                include_history: true,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("admin");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn staff_caring_for_the_patient_record_directives_on_their_behalf() {
    let f = Fixture::start().await;
    f.record_relationship("A81001").await;
    let clinician = f.clinician("A81001");
    let recorded = f
        .client()
        .record_directive(with_token(
            pb::RecordDirectiveRequest {
                directive: Some(pb::Directive {
                    categories: vec![RecordCategory::MentalHealth as i32],
                    note: "asked at the surgery".into(),
                    ..deny_all()
                }),
            },
            &clinician,
        ))
        .await
        .expect("recorded on the patient's behalf")
        .into_inner()
        .directive
        .expect("directive");
    assert_eq!(recorded.source, pb::DirectiveSource::Clinician as i32);
    assert_eq!(recorded.recorded_by_ods_code, "A81001");

    // The patient sees it, with its provenance.
    let listed = f.list_directives().await;
    assert_eq!(listed, vec![recorded.clone()]);

    let revoked = f
        .client()
        .revoke_directive(with_token(
            pb::RevokeDirectiveRequest {
                directive_id: recorded.directive_id.clone(),
                patient_id: PATIENT.into(),
            },
            &clinician,
        ))
        .await
        .expect("revoked on the patient's behalf")
        .into_inner()
        .directive
        .expect("directive");
    assert!(revoked.revoke_time.is_some());
    let actions: Vec<_> = f
        .audited()
        .await
        .iter()
        .filter(|e| e.resource_type == "Directive")
        .map(|e| (e.action, e.outcome_reason.clone()))
        .collect();
    assert_eq!(
        actions,
        [
            (Action::Create as i32, "clinician".to_owned()),
            (Action::Read as i32, "LISTED".to_owned()),
            (Action::Delete as i32, "REVOKED".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_referral_brings_in_another_organisation() {
    let f = Fixture::start().await;
    let refer = |to: &str| pb::ReferPatientRequest {
        patient_id: PATIENT.into(),
        organisation_ods_code: to.into(),
        start_time: None,
        end_time: None,
    };

    // Only an organisation caring for the patient may refer.
    let status = f
        .client()
        .refer_patient(with_token(refer("RR8"), &f.clinician("B82002")))
        .await
        .expect_err("not caring");
    assert_eq!(status.code(), Code::PermissionDenied);

    f.record_relationship("A81001").await;
    let status = f
        .client()
        .refer_patient(with_token(refer("ZZ999"), &f.clinician("A81001")))
        .await
        .expect_err("unknown organisation");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("ZZ999"));
    let status = f
        .client()
        .refer_patient(with_token(refer("A81001"), &f.clinician("A81001")))
        .await
        .expect_err("to itself");
    assert_eq!(status.code(), Code::InvalidArgument);

    let referral = f
        .client()
        .refer_patient(with_token(refer("rr8"), &f.clinician("A81001")))
        .await
        .expect("referred")
        .into_inner()
        .relationship
        .expect("relationship");
    assert_eq!(referral.organisation_ods_code, "RR8");
    assert_eq!(referral.kind, pb::CareRelationshipKind::Referral as i32);
    assert_eq!(referral.recorded_by_ods_code, "A81001");
    let permitted = f
        .evaluate(evaluate_request("RR8", Purpose::DirectCare))
        .await;
    assert_eq!(permitted.decision, pb::Decision::Permit as i32);
    assert!(
        f.audited()
            .await
            .iter()
            .any(|e| e.outcome_reason == "REFERRAL" && e.record_id == referral.relationship_id)
    );

    // A referral is never asserted directly.
    let mut direct = relationship_request("A81001");
    direct.kind = pb::CareRelationshipKind::Referral as i32;
    let status = f
        .client()
        .record_care_relationship(with_token(direct, &f.pas("A81001")))
        .await
        .expect_err("use ReferPatient");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_organisation_ends_its_own_relationships_only() {
    let f = Fixture::start().await;
    let ours = f.record_relationship("A81001").await;
    let theirs = f.record_relationship("RR8").await;
    let end = |id: &str| pb::EndCareRelationshipRequest {
        patient_id: PATIENT.into(),
        relationship_id: id.into(),
        end_time: None,
    };
    let status = f
        .client()
        .end_care_relationship(with_token(end(&theirs.relationship_id), &f.pas("A81001")))
        .await
        .expect_err("not ours");
    assert_eq!(status.code(), Code::NotFound);
    let ended = f
        .client()
        .end_care_relationship(with_token(end(&ours.relationship_id), &f.pas("A81001")))
        .await
        .expect("ended")
        .into_inner()
        .relationship
        .expect("relationship");
    assert!(ended.end_time.is_some());
    assert!(ended.ended_by.starts_with("test-"));
    let denied = f
        .evaluate(evaluate_request("A81001", Purpose::DirectCare))
        .await;
    assert_eq!(denied.decision, pb::Decision::Deny as i32);
    // Once ended, A81001 is no longer related, so it cannot end it again.
    let status = f
        .client()
        .end_care_relationship(with_token(end(&ours.relationship_id), &f.pas("A81001")))
        .await
        .expect_err("ended already");
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut future = end(&theirs.relationship_id);
    future.end_time = Some(seconds_from_now(3_600));
    let status = f
        .client()
        .end_care_relationship(with_token(future, &f.pas("RR8")))
        .await
        .expect_err("in the future");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("end_time"));
}

#[tokio::test]
async fn a_patient_sees_their_own_relationships_and_no_one_elses() {
    let f = Fixture::start().await;
    f.record_relationship("A81001").await;
    let list = |patient: &str, token: &str| {
        with_token(
            pb::ListCareRelationshipsRequest {
                patient_id: patient.into(),
                include_ended: true,
                ..Default::default()
            },
            token,
        )
    };
    let own = f
        .client()
        .list_care_relationships(list(PATIENT, &f.patient(PATIENT)))
        .await
        .expect("own")
        .into_inner()
        .relationships;
    assert_eq!(own.len(), 1);
    let status = f
        .client()
        .list_care_relationships(list(PATIENT, &f.patient(OTHER_PATIENT)))
        .await
        .expect_err("another patient's");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("own patient_id"));
}

#[tokio::test]
async fn a_relationship_needs_a_patient_identity_knows() {
    let f = Fixture::start().await;
    let mut request = relationship_request("A81001");
    request.patient_id = UNKNOWN_PATIENT.into();
    let status = f
        .client()
        .record_care_relationship(with_token(request, &f.pas("A81001")))
        .await
        .expect_err("unknown patient");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("patient_id"),
        "{}",
        status.message()
    );
    let unknown = PatientId::parse("patient_id", UNKNOWN_PATIENT).expect("valid");
    assert!(
        f.store
            .list_relationships(&unknown)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn no_audit_no_change() {
    let f = Fixture::start().await;
    let patient = PatientId::parse("patient_id", PATIENT).expect("valid");
    f.audit.set_down(true);
    // Within the bound, the change is made: its audit event waits, durable,
    // in consent's outbox, written in the same transaction.
    f.client()
        .record_care_relationship(with_token(relationship_request("A81001"), &f.pas("A81001")))
        .await
        .expect("audit only just went down");
    // Unreachable longer than the bound: no change and no read at all.
    for _ in 0..500 {
        if f.outbox.admit().is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = f
        .client()
        .record_directive(with_token(
            pb::RecordDirectiveRequest {
                directive: Some(deny_all()),
            },
            &f.writer(),
        ))
        .await
        .expect_err("audit down too long");
    assert_eq!(status.code(), Code::Unavailable);
    let status = f
        .client()
        .list_directives(with_token(
            pb::ListDirectivesRequest {
                patient_id: PATIENT.into(),
                include_history: true,
                ..Default::default()
            },
            &f.writer(),
        ))
        .await
        .expect_err("audit down too long");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        f.store
            .list_relationships(&patient)
            .await
            .expect("list")
            .len(),
        1
    );
    assert!(
        f.store
            .list_directives(&patient)
            .await
            .expect("list")
            .is_empty()
    );
    // audit is back: the waiting event is delivered, and changes resume.
    f.audit.set_down(false);
    let audited = f.audited().await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].resource_type, "CareRelationship");
    for _ in 0..500 {
        if f.outbox.admit().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.client()
        .record_directive(with_token(
            pb::RecordDirectiveRequest {
                directive: Some(deny_all()),
            },
            &f.writer(),
        ))
        .await
        .expect("audit is back");
}

/// A watch stream, as a watcher holds it.
struct Watch {
    stream: tonic::Streaming<pb::WatchChangesResponse>,
    acks: tokio::sync::mpsc::UnboundedSender<pb::WatchChangesRequest>,
    /// Acknowledge each PATIENT change as it is read (a well-behaved watcher).
    acknowledging: bool,
}

impl Watch {
    /// The next message that is not a heartbeat.
    async fn next_change(&mut self) -> pb::WatchChangesResponse {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), self.stream.message())
                .await
                .expect("a message within 5 s")
                .expect("the stream is healthy")
                .expect("the stream is open");
            if message.kind == pb::ChangeKind::Patient as i32 && self.acknowledging {
                let _ = self.acks.send(pb::WatchChangesRequest {
                    acknowledged_sequence: message.sequence,
                    ..Default::default()
                });
            }
            if message.kind != pb::ChangeKind::Heartbeat as i32 {
                return message;
            }
        }
    }
}

/// A watch stream on `channel`, from now, once READY (retrying while
/// consent is unavailable). It sends no first message, as watchers that
/// predate resuming do: READY comes after a heartbeat interval.
async fn watch(channel: Channel, token: &str, acknowledging: bool) -> Watch {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (acks, to_send) = tokio::sync::mpsc::unbounded_channel();
        let request = with_token(
            tokio_stream::wrappers::UnboundedReceiverStream::new(to_send),
            token,
        );
        match ConsentServiceClient::new(channel.clone())
            .watch_changes(request)
            .await
        {
            Ok(response) => {
                let mut watch = Watch {
                    stream: response.into_inner(),
                    acks,
                    acknowledging,
                };
                let ready = watch.next_change().await;
                assert_eq!(ready.kind, pb::ChangeKind::Ready as i32);
                assert_eq!(u64::from(ready.heartbeat_interval_ms), HEARTBEAT_MS);
                assert!(ready.patient_id.is_empty());
                return watch;
            }
            Err(status) if status.code() == Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("watch refused: {status:?}"),
        }
    }
}

#[tokio::test]
async fn watch_changes_reports_each_patient_whose_consent_changed() {
    let f = Fixture::start().await;
    let mut stream = watch(f.server.channel.clone(), &f.evaluator(), true).await;

    // Silence is filled with heartbeats, so a dead stream can be told apart.
    let beat = tokio::time::timeout(Duration::from_secs(2), stream.stream.message())
        .await
        .expect("a heartbeat")
        .expect("healthy")
        .expect("open");
    assert_eq!(beat.kind, pb::ChangeKind::Heartbeat as i32);
    assert!(beat.patient_id.is_empty());

    // A well-behaved watcher reads (and acknowledges) as the changes come.
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(stream.next_change().await);
        }
        seen
    });
    let relationship = f.record_relationship("A81001").await;
    let directive = f.record_directive(deny_all()).await;
    f.revoke(&directive.directive_id).await.expect("revoked");
    f.client()
        .end_care_relationship(with_token(
            pb::EndCareRelationshipRequest {
                patient_id: PATIENT.into(),
                relationship_id: relationship.relationship_id,
                end_time: None,
            },
            &f.pas("A81001"),
        ))
        .await
        .expect("ended");
    let seen = reader.await.expect("reader");
    for change in &seen {
        assert_eq!(change.kind, pb::ChangeKind::Patient as i32);
        assert_eq!(change.patient_id, PATIENT);
    }
    let sequences: Vec<u64> = seen.iter().map(|c| c.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
}

#[tokio::test]
async fn a_decision_says_until_when_it_stands() {
    let f = Fixture::start().await;
    let open_ended = f.record_relationship("A81001").await;
    let permitted = f
        .evaluate(evaluate_request("A81001", Purpose::DirectCare))
        .await;
    assert_eq!(permitted.decision, pb::Decision::Permit as i32);
    assert_eq!(permitted.valid_until, None, "nothing ahead: {open_ended:?}");

    let ends = chrono::Utc::now() + chrono::Duration::hours(1);
    f.client()
        .record_care_relationship(with_token(
            pb::RecordCareRelationshipRequest {
                organisation_ods_code: "RR8".into(),
                kind: pb::CareRelationshipKind::HospitalEpisode as i32,
                end_time: Some(sharedcare_kit::proto_time::to_proto(ends)),
                ..relationship_request("RR8")
            },
            &f.pas("RR8"),
        ))
        .await
        .expect("recorded");
    // Every decision about the patient may turn then, for any actor.
    let denied = f
        .evaluate(evaluate_request("B82002", Purpose::DirectCare))
        .await;
    assert_eq!(denied.decision, pb::Decision::Deny as i32);
    let until = sharedcare_kit::proto_time::from_proto("valid_until", denied.valid_until.as_ref())
        .expect("valid")
        .expect("set");
    assert_eq!(until.timestamp_micros(), ends.timestamp_micros());
}

#[tokio::test]
async fn watch_changes_on_postgresql_reports_changes_made_by_any_replica() {
    let Some(db) = TestDatabase::postgres("consent watch across replicas").await else {
        return;
    };
    let f = Fixture::start_on(db).await;
    let other = f.replica().await;
    let here = watch(f.server.channel.clone(), &f.evaluator(), true).await;
    let there = watch(other.channel.clone(), &f.evaluator(), true).await;

    // Written through the first replica, heard on both (each watcher reads
    // and acknowledges as changes come).
    let readers = [here, there].map(|mut stream| {
        tokio::spawn(async move {
            let first = stream.next_change().await;
            let second = stream.next_change().await;
            ([first, second], stream)
        })
    });
    f.record_relationship("A81001").await;
    f.record_directive(deny_all()).await;
    let mut streams = Vec::new();
    for reader in readers {
        let (changes, stream) = reader.await.expect("reader");
        for change in changes {
            assert_eq!(change.kind, pb::ChangeKind::Patient as i32);
            assert_eq!(change.patient_id, PATIENT);
        }
        streams.push(stream);
    }
    // The writing replica answers only once its own streams acknowledged:
    // a silent one there is ended and waited out first.
    let mut silent = watch(f.server.channel.clone(), &f.evaluator(), false).await;
    let started = std::time::Instant::now();
    f.record_directive(deny_all()).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(HEARTBEAT_MS * 5),
        "answered after {took:?}"
    );
    assert_eq!(silent.next_change().await.patient_id, PATIENT);

    drop(streams);
    other.shutdown().await;
    f.server.shutdown().await;
    f.db.cleanup().await;
}

/// Counts what reaches consent through it.
struct Counting {
    inner: GrpcConsent,
    asked: std::sync::atomic::AtomicUsize,
}

impl ConsentGate for Counting {
    fn evaluate(
        &self,
        patient_id: &str,
        actor: Actor,
        purpose: Purpose,
        category: RecordCategory,
    ) -> BoxFuture<'_, Decision> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.evaluate(patient_id, actor, purpose, category)
    }
}

/// records' gate, counting what reaches consent, once its stream is live.
async fn cached_gate(f: &Fixture) -> (Arc<Counting>, Arc<CachedConsent>) {
    let tokens: Arc<dyn ServiceTokens> = Arc::new(FixedToken(f.evaluator()));
    let counting = Arc::new(Counting {
        inner: GrpcConsent::new(
            f.server.channel.clone(),
            tokens.clone(),
            Duration::from_secs(5),
        ),
        asked: Default::default(),
    });
    let gate = CachedConsent::start(
        "records",
        counting.clone(),
        f.server.channel.clone(),
        tokens,
        DecisionCacheSettings {
            max_age: Duration::from_secs(60),
            max_entries: 100,
        },
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !gate.is_live() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never went live"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (counting, gate)
}

#[tokio::test]
async fn decisions_are_kept_while_the_change_stream_says_they_hold() {
    use std::sync::atomic::Ordering::SeqCst;
    let f = Fixture::start().await;
    let (counting, gate) = cached_gate(&f).await;
    let actor = |org: &str| Actor {
        principal_id: format!("staff-{org}"),
        kind: PrincipalKind::Staff as i32,
        organisation_ods_code: org.into(),
        ..Default::default()
    };
    let ask = |org: &'static str, category: RecordCategory| {
        let gate = gate.clone();
        async move {
            gate.evaluate(PATIENT, actor(org), Purpose::DirectCare, category)
                .await
                .expect("answered")
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !gate.is_live() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream never went live"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.record_relationship("A81001").await;

    // Asked once, then kept.
    assert!(ask("A81001", RecordCategory::General).await.permitted);
    assert!(ask("A81001", RecordCategory::General).await.permitted);
    assert_eq!(counting.asked.load(SeqCst), 1);
    // Another question is asked afresh.
    assert!(!ask("RR8", RecordCategory::General).await.permitted);
    assert!(ask("A81001", RecordCategory::SexualHealth).await.permitted);
    assert_eq!(counting.asked.load(SeqCst), 3);

    // The patient objects: the very next decision is consent's new one
    // (the change was answered only once this watcher had acknowledged it).
    f.record_directive(deny_all()).await;
    let decision = ask("A81001", RecordCategory::General).await;
    assert!(!decision.permitted);
    assert_eq!(decision.reason_code(), "PATIENT_DIRECTIVE_DENY");
    let asked = counting.asked.load(SeqCst);
    assert_eq!(asked, 4);
    assert!(!ask("A81001", RecordCategory::General).await.permitted);
    assert_eq!(counting.asked.load(SeqCst), asked, "the denial is kept too");

    // consent goes away: nothing is answered from memory.
    f.server.shutdown().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gate.is_live() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still live without consent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = gate
        .evaluate(
            PATIENT,
            actor("A81001"),
            Purpose::DirectCare,
            RecordCategory::General,
        )
        .await
        .expect_err("consent is down");
    assert_eq!(refused.code, sharedcare_kit::error::Code::Unavailable);
}

#[tokio::test]
async fn a_kept_decision_lapses_when_its_period_ends() {
    use std::sync::atomic::Ordering::SeqCst;
    let f = Fixture::start().await;
    let (counting, gate) = cached_gate(&f).await;
    let ends = chrono::Utc::now() + chrono::Duration::milliseconds(700);
    f.client()
        .record_care_relationship(with_token(
            pb::RecordCareRelationshipRequest {
                end_time: Some(sharedcare_kit::proto_time::to_proto(ends)),
                ..relationship_request("A81001")
            },
            &f.pas("A81001"),
        ))
        .await
        .expect("recorded");
    let actor = Actor {
        principal_id: "staff-1".into(),
        kind: PrincipalKind::Staff as i32,
        organisation_ods_code: "A81001".into(),
        ..Default::default()
    };
    let ask = || {
        gate.evaluate(
            PATIENT,
            actor.clone(),
            Purpose::DirectCare,
            RecordCategory::General,
        )
    };
    // Give the change time to arrive before the decision is kept.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(ask().await.expect("answered").permitted);
    assert!(ask().await.expect("answered").permitted);
    assert_eq!(counting.asked.load(SeqCst), 1);
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + (ends - chrono::Utc::now()).to_std().unwrap_or_default()
            + Duration::from_millis(20),
    )
    .await;
    let after = ask().await.expect("answered");
    assert!(!after.permitted, "the relationship has ended");
    assert_eq!(counting.asked.load(SeqCst), 2);
}

#[tokio::test]
async fn a_stream_that_does_not_acknowledge_is_ended_and_waited_out() {
    let f = Fixture::start().await;
    let mut silent = watch(f.server.channel.clone(), &f.evaluator(), false).await;
    let mut good = watch(f.server.channel.clone(), &f.evaluator(), true).await;
    let good_reader = tokio::spawn(async move {
        let change = good.next_change().await;
        (change, good)
    });

    let started = std::time::Instant::now();
    f.record_relationship("A81001").await;
    let took = started.elapsed();
    // One interval for the acknowledgement, then long enough for the silent
    // watcher to give up on its own (three intervals of silence, and one).
    assert!(
        took >= Duration::from_millis(HEARTBEAT_MS * 5),
        "answered after {took:?}"
    );
    let (change, _good) = good_reader.await.expect("reader");
    assert_eq!(change.patient_id, PATIENT);

    let change = silent.next_change().await;
    assert_eq!(change.kind, pb::ChangeKind::Patient as i32);
    let ended = loop {
        match silent.stream.message().await {
            Ok(Some(m)) if m.kind == pb::ChangeKind::Heartbeat as i32 => continue,
            other => break other,
        }
    };
    let status = ended.expect_err("the silent stream is ended");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("acknowledge"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_acknowledgement_of_a_change_never_reported_ends_the_stream() {
    let f = Fixture::start().await;
    let mut watch = watch(f.server.channel.clone(), &f.evaluator(), false).await;
    watch
        .acks
        .send(pb::WatchChangesRequest {
            acknowledged_sequence: 999,
            ..Default::default()
        })
        .expect("sent");
    let ended = loop {
        match watch.stream.message().await {
            Ok(Some(m)) if m.kind == pb::ChangeKind::Heartbeat as i32 => continue,
            other => break other,
        }
    };
    let status = ended.expect_err("ended");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("acknowledged_sequence: 999"),
        "{}",
        status.message()
    );
    // A change now waits for nobody.
    let started = std::time::Instant::now();
    f.record_relationship("A81001").await;
    assert!(started.elapsed() < Duration::from_millis(HEARTBEAT_MS * 5));
}

/// A TCP proxy in front of a server, that can be cut (every connection
/// through it dropped, new ones refused) and restored: a network failure
/// between a watcher and consent.
struct Proxy {
    addr: std::net::SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
    upstream: Arc<std::sync::Mutex<std::net::SocketAddr>>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let upstream = Arc::new(std::sync::Mutex::new(upstream));
        let to = upstream.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cuts, _) = tokio::sync::watch::channel(0);
        let accepting = open.clone();
        let cut = cuts.subscribe();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let mut cut = cut.clone();
                cut.borrow_and_update();
                let upstream = *to.lock().expect("lock");
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            open,
            cuts,
            upstream,
        }
    }

    /// New connections go to `upstream` from now on.
    fn redirect(&self, upstream: std::net::SocketAddr) {
        *self.upstream.lock().expect("lock") = upstream;
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect_lazy()
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `patient`'s care relationship with A81001, as its PAS records it.
async fn record_relationship_for(f: &Fixture, patient: &str) {
    f.client()
        .record_care_relationship(with_token(
            pb::RecordCareRelationshipRequest {
                patient_id: patient.into(),
                ..relationship_request("A81001")
            },
            &f.pas("A81001"),
        ))
        .await
        .expect("recorded");
}

/// What a resuming watcher heard.
#[derive(Default)]
struct Heard {
    /// Each PATIENT change: (sequence, patient).
    changes: Vec<(u64, String)>,
    /// Each READY's sequence.
    ready: Vec<u64>,
    /// The cursor sent on each stream after the first.
    resumed_after: Vec<u64>,
}

/// A watcher that, whenever its stream ends, watches again resuming after
/// the last change it heard (acknowledging each), until `stop`.
async fn resuming_watcher(
    channel: Channel,
    token: String,
    heard: Arc<std::sync::Mutex<Heard>>,
    stop: stopping::Stop,
) {
    let mut cursor = 0;
    let mut first = true;
    while !stop.stopped() {
        let (acks, to_send) = tokio::sync::mpsc::unbounded_channel();
        let _ = acks.send(pb::WatchChangesRequest {
            resume_after_sequence: cursor,
            ..Default::default()
        });
        if !first {
            heard.lock().expect("lock").resumed_after.push(cursor);
        }
        let request = with_token(
            tokio_stream::wrappers::UnboundedReceiverStream::new(to_send),
            &token,
        );
        let Ok(response) = ConsentServiceClient::new(channel.clone())
            .watch_changes(request)
            .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        first = false;
        let mut stream = response.into_inner();
        while let Ok(Ok(Some(message))) =
            tokio::time::timeout(Duration::from_millis(HEARTBEAT_MS * 3), stream.message()).await
        {
            if stop.stopped() {
                return;
            }
            let mut heard = heard.lock().expect("lock");
            if message.kind == pb::ChangeKind::Patient as i32 {
                heard.changes.push((message.sequence, message.patient_id));
                cursor = message.sequence;
                let _ = acks.send(pb::WatchChangesRequest {
                    acknowledged_sequence: message.sequence,
                    ..Default::default()
                });
            } else if message.kind == pb::ChangeKind::Ready as i32 {
                heard.ready.push(message.sequence);
                cursor = message.sequence;
            }
        }
    }
}

/// A flag to stop a background task.
mod stopping {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    #[derive(Clone, Default)]
    pub struct Stop(Arc<AtomicBool>);

    impl Stop {
        pub fn stop(&self) {
            self.0.store(true, Ordering::SeqCst);
        }

        pub fn stopped(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }
}

#[tokio::test]
async fn a_watcher_cut_off_mid_stream_resumes_and_misses_no_change() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let f = Fixture::start().await;
    let proxy = Proxy::start(f.server.addr).await;
    let heard = Arc::new(std::sync::Mutex::new(Heard::default()));
    let stop = stopping::Stop::default();
    let watcher = tokio::spawn(resuming_watcher(
        proxy.channel(),
        f.evaluator(),
        heard.clone(),
        stop.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while heard.lock().expect("lock").ready.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never READY");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started_at = heard.lock().expect("lock").ready[0];

    // A writer keeps changing patients' consent, before, during and after
    // the cut.
    const WRITES: usize = 30;
    let written = Arc::new(AtomicUsize::new(0));
    let patients: Vec<String> = (0..WRITES)
        .map(|i| format!("0197a1c2-patient-{:02}", i % 10))
        .collect();
    let writer = {
        let written = written.clone();
        let patients = patients.clone();
        let f = &f;
        async move {
            for patient in &patients {
                record_relationship_for(f, patient).await;
                written.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
    };
    let network = async {
        while written.load(SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.cut();
        while written.load(SeqCst) < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.restore();
    };
    futures::future::join(writer, network).await;

    // Caught up with the log's head, the watcher heard every change once.
    let head = f.store.latest_change().await.expect("head");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while heard.lock().expect("lock").changes.last().map(|c| c.0) != Some(head) {
        assert!(tokio::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.stop();
    let heard = std::mem::take(&mut *heard.lock().expect("lock"));
    let _ = watcher.await;
    let sequences: Vec<u64> = heard.changes.iter().map(|c| c.0).collect();
    let expected: Vec<u64> = (started_at + 1..=head).collect();
    assert_eq!(sequences, expected, "no gap, no repeat");
    assert_eq!(sequences.len(), WRITES);
    let heard_patients: Vec<&str> = heard.changes.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(heard_patients, patients, "every change, in order");
    // It did lose the stream, and resumed rather than starting again.
    assert!(
        heard.resumed_after.iter().any(|c| *c > started_at),
        "{:?}",
        heard.resumed_after
    );
    assert!(heard.ready.len() >= 2, "{:?}", heard.ready);
}

#[tokio::test]
async fn a_cursor_beyond_the_log_is_refused_naming_the_field() {
    let f = Fixture::start().await;
    f.record_relationship("A81001").await;
    let (acks, to_send) = tokio::sync::mpsc::unbounded_channel();
    acks.send(pb::WatchChangesRequest {
        resume_after_sequence: 1_000,
        ..Default::default()
    })
    .expect("sent");
    let mut stream = f
        .client()
        .watch_changes(with_token(
            tokio_stream::wrappers::UnboundedReceiverStream::new(to_send),
            &f.evaluator(),
        ))
        .await
        .expect("opened")
        .into_inner();
    let status = stream.message().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("resume_after_sequence"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_resumed_stream_replays_what_was_missed_then_says_ready() {
    let f = Fixture::start().await;
    f.record_relationship("A81001").await;
    let cursor = f.store.latest_change().await.expect("head");
    f.record_directive(deny_all()).await;
    record_relationship_for(&f, OTHER_PATIENT).await;
    let (acks, to_send) = tokio::sync::mpsc::unbounded_channel();
    acks.send(pb::WatchChangesRequest {
        resume_after_sequence: cursor,
        ..Default::default()
    })
    .expect("sent");
    let mut watch = Watch {
        stream: f
            .client()
            .watch_changes(with_token(
                tokio_stream::wrappers::UnboundedReceiverStream::new(to_send),
                &f.evaluator(),
            ))
            .await
            .expect("opened")
            .into_inner(),
        acks,
        acknowledging: true,
    };
    let replayed = [watch.next_change().await, watch.next_change().await];
    assert_eq!(
        replayed
            .iter()
            .map(|c| (c.kind, c.sequence, c.patient_id.as_str()))
            .collect::<Vec<_>>(),
        [
            (pb::ChangeKind::Patient as i32, cursor + 1, PATIENT),
            (pb::ChangeKind::Patient as i32, cursor + 2, OTHER_PATIENT),
        ]
    );
    let ready = watch.next_change().await;
    assert_eq!(ready.kind, pb::ChangeKind::Ready as i32);
    assert_eq!(ready.sequence, cursor + 2);
    // Then live changes, continuing the numbering.
    let reader = tokio::spawn(async move { watch.next_change().await });
    f.record_directive(deny_all()).await;
    let live = reader.await.expect("reader");
    assert_eq!(
        (live.kind, live.sequence, live.patient_id.as_str()),
        (pb::ChangeKind::Patient as i32, cursor + 3, PATIENT)
    );
}

/// records' decision cache, watching through a network that fails: what it
/// kept for a patient whose consent changed meanwhile is dropped (heard in
/// the replay), what it kept for the others is still used after resuming,
/// and nothing is used while it is cut off.
#[tokio::test]
async fn a_decision_cache_resuming_drops_only_the_patients_that_changed_meanwhile() {
    use std::sync::atomic::Ordering::SeqCst;
    let f = Fixture::start().await;
    let proxy = Proxy::start(f.server.addr).await;
    let tokens: Arc<dyn ServiceTokens> = Arc::new(FixedToken(f.evaluator()));
    let counting = Arc::new(Counting {
        inner: GrpcConsent::new(
            f.server.channel.clone(),
            tokens.clone(),
            Duration::from_secs(5),
        ),
        asked: Default::default(),
    });
    let gate = CachedConsent::start(
        "records",
        counting.clone(),
        proxy.channel(),
        tokens,
        DecisionCacheSettings {
            max_age: Duration::from_secs(60),
            max_entries: 100,
        },
    );
    let live = async |wanted: bool| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while gate.is_live() != wanted {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never became live = {wanted}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    live(true).await;
    record_relationship_for(&f, PATIENT).await;
    record_relationship_for(&f, OTHER_PATIENT).await;
    let ask = async |patient: &str| {
        gate.evaluate(
            patient,
            Actor {
                principal_id: "staff-A81001".into(),
                kind: PrincipalKind::Staff as i32,
                organisation_ods_code: "A81001".into(),
                ..Default::default()
            },
            Purpose::DirectCare,
            RecordCategory::General,
        )
        .await
        .expect("answered")
    };
    assert!(ask(PATIENT).await.permitted);
    assert!(ask(OTHER_PATIENT).await.permitted);
    assert!(ask(PATIENT).await.permitted);
    assert!(ask(OTHER_PATIENT).await.permitted);
    assert_eq!(counting.asked.load(SeqCst), 2, "both kept");

    // Cut off: nothing is answered from memory, and the patient objects.
    proxy.cut();
    live(false).await;
    assert!(ask(OTHER_PATIENT).await.permitted);
    assert_eq!(counting.asked.load(SeqCst), 3, "not used while cut off");
    f.record_directive(deny_all()).await;

    // Resumed: the objection was heard in the replay; the other patient's
    // kept decision is used again.
    proxy.restore();
    live(true).await;
    assert!(ask(OTHER_PATIENT).await.permitted);
    assert_eq!(counting.asked.load(SeqCst), 3, "kept across the resume");
    let decision = ask(PATIENT).await;
    assert!(!decision.permitted, "the change made while cut off applies");
    assert_eq!(decision.reason_code(), "PATIENT_DIRECTIVE_DENY");
    assert_eq!(counting.asked.load(SeqCst), 4);
}

/// A cursor consent refuses (the watcher now reaches a consent on another
/// database, whose log is shorter): the decision cache drops everything and
/// watches from now.
#[tokio::test]
async fn a_decision_cache_whose_cursor_is_refused_drops_everything() {
    use std::sync::atomic::Ordering::SeqCst;
    let f = Fixture::start().await;
    let other_db = TestDatabase::sqlite();
    let (elsewhere, ..) = serve(other_db.url(), &f.authority).await;
    let proxy = Proxy::start(f.server.addr).await;
    let tokens: Arc<dyn ServiceTokens> = Arc::new(FixedToken(f.evaluator()));
    let counting = Arc::new(Counting {
        inner: GrpcConsent::new(
            f.server.channel.clone(),
            tokens.clone(),
            Duration::from_secs(5),
        ),
        asked: Default::default(),
    });
    let gate = CachedConsent::start(
        "records",
        counting.clone(),
        proxy.channel(),
        tokens,
        DecisionCacheSettings {
            max_age: Duration::from_secs(60),
            max_entries: 100,
        },
    );
    let live = async |wanted: bool| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while gate.is_live() != wanted {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never became live = {wanted}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    live(true).await;
    record_relationship_for(&f, OTHER_PATIENT).await;
    record_relationship_for(&f, OTHER_PATIENT).await;
    let ask = async || {
        gate.evaluate(
            OTHER_PATIENT,
            Actor {
                principal_id: "staff-A81001".into(),
                kind: PrincipalKind::Staff as i32,
                organisation_ods_code: "A81001".into(),
                ..Default::default()
            },
            Purpose::DirectCare,
            RecordCategory::General,
        )
        .await
        .expect("answered")
    };
    assert!(ask().await.permitted);
    assert!(ask().await.permitted);
    assert_eq!(counting.asked.load(SeqCst), 1, "kept");

    proxy.cut();
    live(false).await;
    proxy.redirect(elsewhere.addr);
    proxy.restore();
    live(true).await;
    assert!(ask().await.permitted);
    assert_eq!(
        counting.asked.load(SeqCst),
        2,
        "nothing kept was vouched for"
    );
}

/// The SQL store, counting what Evaluate reads from it.
struct CountingStore {
    inner: Arc<SqlStore>,
    reads: std::sync::atomic::AtomicUsize,
}

impl CountingStore {
    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn read(&self) {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl ConsentStore for CountingStore {
    fn insert_relationship(
        &self,
        relationship: sharedcare_consent::domain::CareRelationship,
        audit: AuditEvent,
    ) -> BoxFuture<'_, sharedcare_consent::domain::CareRelationship> {
        self.inner.insert_relationship(relationship, audit)
    }

    fn get_relationship(
        &self,
        id: &str,
    ) -> BoxFuture<'_, Option<sharedcare_consent::domain::CareRelationship>> {
        self.inner.get_relationship(id)
    }

    fn end_relationship(
        &self,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, sharedcare_consent::domain::CareRelationship> {
        self.inner.end_relationship(id, at, by, audit)
    }

    fn list_relationships(
        &self,
        patient: &PatientId,
    ) -> BoxFuture<'_, Vec<sharedcare_consent::domain::CareRelationship>> {
        self.read();
        self.inner.list_relationships(patient)
    }

    fn insert_directive(
        &self,
        directive: sharedcare_consent::domain::Directive,
        audit: AuditEvent,
    ) -> BoxFuture<'_, sharedcare_consent::domain::Directive> {
        self.inner.insert_directive(directive, audit)
    }

    fn get_directive(
        &self,
        id: &str,
    ) -> BoxFuture<'_, Option<sharedcare_consent::domain::Directive>> {
        self.inner.get_directive(id)
    }

    fn revoke_directive(
        &self,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, sharedcare_consent::domain::Directive> {
        self.inner.revoke_directive(id, at, by, audit)
    }

    fn list_directives(
        &self,
        patient: &PatientId,
    ) -> BoxFuture<'_, Vec<sharedcare_consent::domain::Directive>> {
        self.read();
        self.inner.list_directives(patient)
    }

    fn changes_after(
        &self,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Vec<sharedcare_consent::store::LoggedChange>> {
        self.inner.changes_after(after, limit)
    }

    fn latest_change(&self) -> BoxFuture<'_, u64> {
        self.inner.latest_change()
    }
}

/// Another consent replica on the fixture's PostgreSQL database (at `url`,
/// e.g. through a proxy), layered as `open` layers it over a store that
/// counts Evaluate's reads.
struct CountedReplica {
    server: TestServer,
    store: Arc<CountingStore>,
    changes: Arc<sharedcare_consent::changes::ChangeFeed>,
}

impl CountedReplica {
    async fn start(f: &Fixture, url: &str) -> Self {
        let sql = Arc::new(SqlStore::connect(url, 4).await.expect("store"));
        let store = Arc::new(CountingStore {
            inner: sql.clone(),
            reads: std::sync::atomic::AtomicUsize::new(0),
        });
        let outbox = Outbox::start(
            sql.connection(),
            WriteGate::for_db(&sql.connection()),
            OUTBOX_TABLE,
            Arc::new(MemoryAudit::default()),
            OutboxSettings::default(),
        );
        let (layered, changes) = sharedcare_consent::replicated(
            store.clone(),
            sql.connection(),
            sharedcare_consent::Layering::new(Duration::from_millis(HEARTBEAT_MS)),
        );
        let server = spawn(spec(
            layered,
            changes.clone(),
            outbox,
            Arc::new(Known(&["A81001", "RR8", "B82002"])),
            f.authority.verifier(),
            MessageLimits { max_bytes: 4 << 20 },
        ))
        .await;
        CountedReplica {
            server,
            store,
            changes,
        }
    }

    async fn evaluate(&self, f: &Fixture) -> Result<pb::EvaluateResponse, tonic::Status> {
        let mut request = with_token(
            evaluate_request("A81001", Purpose::DirectCare),
            &f.evaluator(),
        );
        request.set_timeout(Duration::from_secs(2));
        ConsentServiceClient::new(self.server.channel.clone())
            .evaluate(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A decision, from memory once its lease holds.
    async fn warm(&self, f: &Fixture) -> pb::EvaluateResponse {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let first = self.evaluate(f).await.expect("decision");
            let reads = self.store.reads();
            let second = self.evaluate(f).await.expect("decision");
            if self.store.reads() == reads {
                assert_eq!(first.decision, second.decision);
                return second;
            }
            assert!(std::time::Instant::now() < deadline, "never leased");
            tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS / 2)).await;
        }
    }
}

/// How many replicas hold a lease now, by the database's clock.
async fn leaseholders(f: &Fixture) -> i64 {
    use sea_orm::ConnectionTrait;
    let row = f
        .store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT COUNT(*) AS n FROM consent_replicas WHERE lease_until > now()",
        ))
        .await
        .expect("query")
        .expect("row");
    row.try_get::<i64>("", "n").expect("count")
}

#[tokio::test]
async fn a_change_through_one_replica_applies_to_the_very_next_decision_on_another() {
    let Some(db) = TestDatabase::postgres("consent replica memory").await else {
        return;
    };
    let f = Fixture::start_on(db).await;
    let other = CountedReplica::start(&f, f.db.url()).await;
    f.record_relationship("A81001").await;

    // Warm: the second decision reads nothing from the database.
    assert_eq!(other.warm(&f).await.decision, pb::Decision::Permit as i32);
    assert_eq!(leaseholders(&f).await, 2);

    for round in 0..30 {
        let deny = f.record_directive(deny_all()).await;
        // No pause: the write was answered once the other replica applied it.
        let denied = other.evaluate(&f).await.expect("decision");
        assert_eq!(denied.decision, pb::Decision::Deny as i32, "round {round}");
        f.revoke(&deny.directive_id).await.expect("revoked");
        let permitted = other.evaluate(&f).await.expect("decision");
        assert_eq!(
            permitted.decision,
            pb::Decision::Permit as i32,
            "round {round}"
        );
    }
    // Still answered from memory between changes.
    let reads = other.store.reads();
    other.evaluate(&f).await.expect("decision");
    assert_eq!(other.store.reads(), reads);

    other.server.shutdown().await;
    f.server.shutdown().await;
    f.db.cleanup().await;
}

#[tokio::test]
async fn a_replica_that_stops_renewing_is_waited_out_and_reads_the_database_meanwhile() {
    let Some(db) = TestDatabase::postgres("consent replica lease lapses").await else {
        return;
    };
    let f = Fixture::start_on(db).await;
    let url = f.db.url().to_owned();
    let (host, rest) = url
        .split_once("@")
        .and_then(|(_, rest)| rest.split_once('/'))
        .expect("a postgres:// URL with user@host:port/db");
    let upstream = tokio::net::lookup_host(host)
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    let proxy = Proxy::start(upstream).await;
    let through_proxy = format!("postgres://postgres@{}/{rest}", proxy.addr);
    let other = CountedReplica::start(&f, &through_proxy).await;
    f.record_relationship("A81001").await;
    assert_eq!(other.warm(&f).await.decision, pb::Decision::Permit as i32);

    // The other replica loses the database: it cannot renew, so a writer
    // waits for it no longer than its lease (three heartbeats).
    proxy.cut();
    let started = std::time::Instant::now();
    f.record_directive(deny_all()).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(HEARTBEAT_MS * 3 + 700),
        "answered after {took:?}"
    );
    // Its memory still says PERMIT, but it is not used without the lease:
    // the decision comes from the database (unreachable: no answer).
    if let Ok(decision) = other.evaluate(&f).await {
        assert_eq!(decision.decision, pb::Decision::Deny as i32);
    }

    // Back on the database, the first decision it gives is the new one.
    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match other.evaluate(&f).await {
            Ok(decision) => {
                assert_eq!(decision.decision, pb::Decision::Deny as i32);
                break;
            }
            Err(_) => assert!(std::time::Instant::now() < deadline, "never answered"),
        }
    }

    other.server.shutdown().await;
    f.server.shutdown().await;
    f.db.cleanup().await;
}

#[tokio::test]
async fn a_replica_gives_its_lease_up_at_close_and_reads_the_database_after() {
    let Some(db) = TestDatabase::postgres("consent replica closes").await else {
        return;
    };
    let f = Fixture::start_on(db).await;
    let other = CountedReplica::start(&f, f.db.url()).await;
    f.record_relationship("A81001").await;
    other.warm(&f).await;
    assert_eq!(leaseholders(&f).await, 2);

    other.changes.close();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while leaseholders(&f).await != 1 {
        assert!(std::time::Instant::now() < deadline, "lease kept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reads = other.store.reads();
    other.evaluate(&f).await.expect("decision");
    other.evaluate(&f).await.expect("decision");
    assert_eq!(
        other.store.reads(),
        reads + 4,
        "each decision reads both lists"
    );

    // A replica that stopped renewing without giving its lease up (one that
    // died) holds writers up until its lease runs out, and no longer.
    {
        use sea_orm::ConnectionTrait;
        f.store
            .connection()
            .execute_unprepared(
                "INSERT INTO consent_replicas (replica_id, applied_sequence, lease_until) \
                 VALUES ('gone', 0, now() + interval '400 milliseconds')",
            )
            .await
            .expect("insert");
    }
    let started = std::time::Instant::now();
    f.record_directive(deny_all()).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1400),
        "answered after {took:?}"
    );

    other.server.shutdown().await;
    f.server.shutdown().await;
    f.db.cleanup().await;
}

/// After a merge a service's gate forgets the patient, and keeps none of
/// their answers for a while: consent hears of the merge on its own stream,
/// and an answer it gives before it has must not outlive that moment.
#[tokio::test]
async fn a_forgotten_patients_answers_are_asked_afresh_until_the_merge_settles() {
    use std::sync::atomic::Ordering::SeqCst;
    let f = Fixture::start().await;
    let (counting, gate) = cached_gate(&f).await;
    f.record_relationship("A81001").await;
    let ask = async |patient: &str| {
        gate.evaluate(
            patient,
            Actor {
                principal_id: "staff-A81001".into(),
                kind: PrincipalKind::Staff as i32,
                organisation_ods_code: "A81001".into(),
                ..Default::default()
            },
            Purpose::DirectCare,
            RecordCategory::General,
        )
        .await
        .expect("answered")
    };
    assert!(ask(PATIENT).await.permitted);
    assert!(ask(PATIENT).await.permitted);
    assert_eq!(counting.asked.load(SeqCst), 1, "kept");

    gate.forget(PATIENT);
    for n in 2..=4 {
        assert!(ask(PATIENT).await.permitted);
        assert_eq!(counting.asked.load(SeqCst), n, "asked afresh each time");
    }
    // Another patient's answers are kept as before.
    ask(OTHER_PATIENT).await;
    ask(OTHER_PATIENT).await;
    assert_eq!(counting.asked.load(SeqCst), 5);
}
