//! What identity's gRPC tests share: identity served over a real socket
//! with in-process fakes of consent and audit, and request builders.

#![allow(dead_code, unused_imports)] // each test binary uses its own part

pub use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use sharedcare_identity::{
    Peers, RoleMap, SelfTokens, TokenIssuer,
    bootstrap::{self, BootstrapFile, BootstrapOrganisation, BootstrapPrincipal},
    domain::NhsNumber,
    registrations::{GpRegistration, RegistrationSink},
    spec,
    store::{IdentityStore, OUTBOX_TABLE, SqlStore},
};
pub use sharedcare_kit::{
    Error,
    access::Capability,
    auth::{Principal as Verified, Verifier},
    crypto::{BlindIndex, Kek, Keyring},
    db::WriteGate,
    keys::{SigningKey, StaticKeySource},
    outbox::{Outbox, OutboxSettings},
    peers::{BoxFuture, ConsentGate, Decision},
    server::MessageLimits,
    testing::{
        MemoryAudit, TestAuthority, TestDatabase, TestServer, outbox_drained, spawn, with_token,
    },
};
pub use sharedcare_proto::{
    audit::v1::{Action, AuditEvent, Outcome},
    common::v1::{Actor, PrincipalKind, Purpose, RecordCategory},
    identity::v1::{self as pb, identity_service_client::IdentityServiceClient},
};
pub use tonic::{Code, transport::Channel};

pub const ADMIN_SECRET: &str = "admin-secret-for-tests-0123456789abcdef";

/// What the fake consent answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Permit,
    Deny,
    Down,
}

/// consent, as identity sees it: a decision per call, every call kept.
pub struct FakeConsent {
    pub answer: Mutex<Answer>,
    pub asked: Mutex<Vec<(String, Actor, Purpose, RecordCategory)>>,
}

impl ConsentGate for FakeConsent {
    fn evaluate(
        &self,
        patient_id: &str,
        actor: Actor,
        purpose: Purpose,
        category: RecordCategory,
    ) -> BoxFuture<'_, Decision> {
        let patient_id = patient_id.to_owned();
        Box::pin(async move {
            self.asked
                .lock()
                .expect("lock")
                .push((patient_id, actor, purpose, category));
            match *self.answer.lock().expect("lock") {
                Answer::Permit => Ok(Decision {
                    permitted: true,
                    decision_id: "decision-permit".into(),
                    reasons: vec![("CARE_RELATIONSHIP".into(), "registered GP".into())],
                    valid_until: None,
                    obligations: vec!["AUDIT".into()],
                }),
                Answer::Deny => Ok(Decision {
                    permitted: false,
                    decision_id: "decision-deny".into(),
                    reasons: vec![(
                        "NO_CARE_RELATIONSHIP".into(),
                        "no current care relationship".into(),
                    )],
                    valid_until: None,
                    obligations: vec!["AUDIT".into()],
                }),
                Answer::Down => Err(Error::unavailable(
                    "consent could not be asked, so access is refused (test)",
                )),
            }
        })
    }
}

/// consent as the registration relay sees it: every registration kept, or
/// unreachable.
#[derive(Default)]
pub struct RecordedRegistrations {
    pub received: Mutex<Vec<GpRegistration>>,
    pub down: std::sync::atomic::AtomicBool,
}

impl RegistrationSink for RecordedRegistrations {
    fn record(&self, registration: GpRegistration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::unavailable("consent is down (test)"));
            }
            self.received.lock().expect("lock").push(registration);
            Ok(())
        })
    }
}

impl RecordedRegistrations {
    /// What consent has been told, as (patient id, practice) pairs.
    pub fn told(&self) -> Vec<(String, Option<String>)> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .map(|r| {
                (
                    r.patient_id.clone(),
                    r.practice.as_ref().map(|p| p.as_str().to_owned()),
                )
            })
            .collect()
    }
}

/// IssueToken calls per client per minute in these tests.
pub const ISSUE_LIMIT: u32 = 20;

pub struct Fixture {
    pub server: TestServer,
    pub store: Arc<SqlStore>,
    pub db: TestDatabase,
    pub tokens: Arc<TokenIssuer>,
    pub consent: Arc<FakeConsent>,
    pub audit: Arc<MemoryAudit>,
    pub outbox: Arc<Outbox>,
    pub registrations: Arc<RecordedRegistrations>,
}

/// The role map of these tests: a clinician, a clerk, a tracer and a
/// merger.
pub fn roles() -> RoleMap {
    let map: BTreeMap<String, Vec<String>> = [
        ("R8000", vec!["record_directives", "refer"]),
        ("R8008", vec!["assert_relationships"]),
        ("R8004", vec![]),
        ("tracer", vec!["trace_patients"]),
        ("merger", vec!["trace_patients", "merge_patients"]),
        ("guardian", vec!["view_restricted"]),
    ]
    .into_iter()
    .map(|(role, caps)| {
        (
            role.to_owned(),
            caps.into_iter().map(str::to_owned).collect(),
        )
    })
    .collect();
    RoleMap::parse("identity.roles", &map).expect("valid role map")
}

impl Fixture {
    pub async fn start() -> Self {
        let db = TestDatabase::sqlite();
        let store = Arc::new(
            SqlStore::connect(
                db.url(),
                4,
                Keyring::new(Kek::generate(), []),
                BlindIndex::generate(),
            )
            .await
            .expect("store"),
        );
        bootstrap::apply(
            store.as_ref(),
            BootstrapFile {
                organisations: vec![BootstrapOrganisation {
                    ods_code: "X26".into(),
                    name: "Platform".into(),
                }],
                principals: vec![BootstrapPrincipal {
                    client_id: "admin".into(),
                    client_secret: ADMIN_SECRET.into(),
                    kind: "admin".into(),
                    display_name: "Administrator".into(),
                    organisation: "X26".into(),
                    role: "admin".into(),
                    scopes: vec![],
                    purposes: vec![],
                }],
            },
        )
        .await
        .expect("bootstrap");
        let tokens = Arc::new(
            TokenIssuer::new(
                SigningKey::generate(),
                "sharedcare-identity",
                "sharedcare",
                900,
            )
            .with_issue_limit(ISSUE_LIMIT),
        );
        let consent = Arc::new(FakeConsent {
            answer: Mutex::new(Answer::Permit),
            asked: Mutex::new(vec![]),
        });
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
        let registrations = Arc::new(RecordedRegistrations::default());
        let server = spawn(spec(
            store.clone(),
            tokens.clone(),
            roles(),
            Peers {
                consent: consent.clone(),
                outbox: outbox.clone(),
                registrations: registrations.clone(),
            },
            MessageLimits {
                max_bytes: 64 * 1024,
            },
        ))
        .await;
        Fixture {
            server,
            store,
            db,
            tokens,
            consent,
            audit,
            outbox,
            registrations,
        }
    }

    pub fn client(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.server.channel.clone())
    }

    pub async fn issue(
        &self,
        client_id: &str,
        secret: &str,
        purpose: Purpose,
    ) -> Result<String, tonic::Status> {
        Ok(self
            .client()
            .issue_token(pb::IssueTokenRequest {
                client_id: client_id.into(),
                client_secret: secret.into(),
                scopes: vec![],
                purpose: purpose as i32,
                ..Default::default()
            })
            .await?
            .into_inner()
            .access_token)
    }

    pub async fn token(&self, client_id: &str, secret: &str) -> String {
        self.issue(client_id, secret, Purpose::Unspecified)
            .await
            .expect("token issued")
    }

    pub async fn admin(&self) -> String {
        self.token("admin", ADMIN_SECRET).await
    }

    /// What a token says, as every service's auth layer reads it.
    pub async fn verify(&self, token: &str) -> Verified {
        Verifier::new(
            Arc::new(StaticKeySource(self.tokens.jwks())),
            self.tokens.issuer(),
            self.tokens.audience(),
            Duration::ZERO,
        )
        .verify(token)
        .await
        .expect("a valid token")
    }

    pub async fn organisation(&self, ods_code: &str) {
        self.client()
            .create_organisation(with_token(
                pb::CreateOrganisationRequest {
                    ods_code: ods_code.into(),
                    name: format!("Organisation {ods_code}"),
                },
                &self.admin().await,
            ))
            .await
            .expect("organisation");
    }

    /// Creates a principal as admin: (principal, client secret).
    pub async fn create(
        &self,
        request: pb::CreatePrincipalRequest,
    ) -> Result<(pb::Principal, String), tonic::Status> {
        let created = self
            .client()
            .create_principal(with_token(request, &self.admin().await))
            .await?
            .into_inner();
        Ok((created.principal.expect("principal"), created.client_secret))
    }

    /// A staff member at `ods_code` (created on first use) in `role`, and
    /// their token.
    pub async fn staff(&self, ods_code: &str, role: &str) -> String {
        if self
            .store
            .get_organisation(&sharedcare_kit::ids::OdsCode::parse("o", ods_code).expect("ods"))
            .await
            .expect("read")
            .is_none()
        {
            self.organisation(ods_code).await;
        }
        let (principal, secret) = self
            .create(staff_request(ods_code, role))
            .await
            .expect("staff");
        self.token(&principal.client_id, &secret).await
    }

    pub async fn register(&self, request: pb::RegisterPatientRequest, token: &str) -> pb::Patient {
        self.client()
            .register_patient(with_token(request, token))
            .await
            .expect("registered")
            .into_inner()
            .patient
            .expect("patient")
    }

    /// What reached audit, once identity's outbox has delivered everything.
    pub async fn events(&self) -> Vec<AuditEvent> {
        outbox_drained(&self.store.connection(), OUTBOX_TABLE).await;
        self.audit.delivered()
    }

    pub fn answer(&self, answer: Answer) {
        *self.consent.answer.lock().expect("lock") = answer;
    }

    pub async fn principal_rows(&self) -> i64 {
        use sea_orm::{ConnectionTrait, Statement};
        let db = sea_orm::Database::connect(self.db.url())
            .await
            .expect("connect");
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM identity_principals",
            ))
            .await
            .expect("count")
            .expect("a row");
        let n: i64 = row.try_get("", "n").expect("n");
        db.close().await.ok();
        n
    }
}

pub fn staff_request(ods_code: &str, role: &str) -> pb::CreatePrincipalRequest {
    pb::CreatePrincipalRequest {
        kind: PrincipalKind::Staff as i32,
        display_name: "Dr Who".into(),
        organisation_ods_code: ods_code.into(),
        role: role.into(),
        ..Default::default()
    }
}

pub fn patient_request(patient_id: &str) -> pb::CreatePrincipalRequest {
    pb::CreatePrincipalRequest {
        kind: PrincipalKind::Patient as i32,
        display_name: "Jane Smith".into(),
        patient_id: patient_id.into(),
        ..Default::default()
    }
}

pub fn get(patient_id: &str) -> pb::GetPatientRequest {
    pb::GetPatientRequest {
        patient_id: patient_id.into(),
    }
}

pub fn person(
    nhs: &str,
    given: &str,
    family: &str,
    birth_date: &str,
) -> pb::RegisterPatientRequest {
    pb::RegisterPatientRequest {
        confirm_new_patient: false,
        nhs_number: nhs.into(),
        demographics: Some(pb::Demographics {
            given_names: vec![given.into()],
            family_name: family.into(),
            birth_date: birth_date.into(),
            gender: pb::Gender::Unspecified as i32,
            postcode: String::new(),
            ..Default::default()
        }),
    }
}

pub fn jane(nhs: &str) -> pb::RegisterPatientRequest {
    pb::RegisterPatientRequest {
        confirm_new_patient: false,
        nhs_number: nhs.into(),
        demographics: Some(pb::Demographics {
            given_names: vec!["Jane".into()],
            family_name: "Smith".into(),
            birth_date: "1980-02-29".into(),
            gender: pb::Gender::Female as i32,
            postcode: "ls1 4ap".into(),
            ..Default::default()
        }),
    }
}
