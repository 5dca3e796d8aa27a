//! identity over real gRPC sockets.

use std::sync::Arc;

use sharedcare_identity::{
    TokenIssuer,
    bootstrap::{self, BootstrapFile, BootstrapOrganisation, BootstrapPrincipal},
    domain::NhsNumber,
    spec,
    store::{IdentityStore, SqlStore},
};
use sharedcare_kit::{
    crypto::{BlindIndex, Kek, Keyring},
    keys::SigningKey,
    server::MessageLimits,
    testing::{TestAuthority, TestDatabase, TestServer, spawn, with_token},
};
use sharedcare_proto::{
    common::v1::PrincipalKind,
    identity::v1::{self as pb, identity_service_client::IdentityServiceClient},
};
use tonic::{Code, transport::Channel};

const ADMIN_SECRET: &str = "admin-secret-for-tests-0123456789abcdef";

struct Fixture {
    server: TestServer,
    store: Arc<SqlStore>,
    db: TestDatabase,
}

impl Fixture {
    async fn start() -> Self {
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
                }],
            },
        )
        .await
        .expect("bootstrap");
        let tokens = Arc::new(TokenIssuer::new(
            SigningKey::generate(),
            "sharedcare-identity",
            "sharedcare",
            900,
        ));
        let server = spawn(spec(
            store.clone(),
            tokens,
            MessageLimits {
                max_bytes: 64 * 1024,
            },
        ))
        .await;
        Fixture { server, store, db }
    }

    fn client(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.server.channel.clone())
    }

    async fn token(&self, client_id: &str, secret: &str) -> String {
        self.client()
            .issue_token(pb::IssueTokenRequest {
                client_id: client_id.into(),
                client_secret: secret.into(),
                scopes: vec![],
                purpose: 0,
            })
            .await
            .expect("token issued")
            .into_inner()
            .access_token
    }

    async fn admin(&self) -> String {
        self.token("admin", ADMIN_SECRET).await
    }
}

fn jane(nhs: &str) -> pb::RegisterPatientRequest {
    pb::RegisterPatientRequest {
        nhs_number: nhs.into(),
        demographics: Some(pb::Demographics {
            given_names: vec!["Jane".into()],
            family_name: "Smith".into(),
            birth_date: "1980-02-29".into(),
            gender: pb::Gender::Female as i32,
            postcode: "ls1 4ap".into(),
        }),
    }
}

#[tokio::test]
async fn a_patient_is_registered_once_and_read_back() {
    let f = Fixture::start().await;
    let token = f.admin().await;
    let mut client = f.client();
    let first = client
        .register_patient(with_token(jane("943 476 5919"), &token))
        .await
        .expect("registered")
        .into_inner();
    assert!(first.created);
    let patient = first.patient.expect("patient");
    assert_eq!(patient.nhs_number, "9434765919");
    assert_eq!(
        patient
            .demographics
            .as_ref()
            .expect("demographics")
            .postcode,
        "LS1 4AP"
    );

    let again = client
        .register_patient(with_token(jane("9434765919"), &token))
        .await
        .expect("registered")
        .into_inner();
    assert!(!again.created, "details are given once");
    assert_eq!(
        again.patient.expect("patient").patient_id,
        patient.patient_id
    );

    let read = client
        .get_patient(with_token(
            pb::GetPatientRequest {
                patient_id: patient.patient_id.clone(),
            },
            &token,
        ))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(
        read.patient.expect("patient").patient_id,
        patient.patient_id
    );
}

#[tokio::test]
async fn invalid_nhs_numbers_are_refused_and_nothing_is_stored() {
    let f = Fixture::start().await;
    let token = f.admin().await;
    for bad in ["9434765918", "1111111111", "94347659", "abcdefghij", ""] {
        let status = f
            .client()
            .register_patient(with_token(jane(bad), &token))
            .await
            .expect_err(bad);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        assert!(
            status.message().starts_with("nhs_number"),
            "{}",
            status.message()
        );
    }
    let mut missing = jane("9434765919");
    missing.demographics.as_mut().expect("d").birth_date = "29/02/1980".into();
    let status = f
        .client()
        .register_patient(with_token(missing, &token))
        .await
        .expect_err("bad date");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("demographics.birth_date"));
    let nhs = NhsNumber::parse("n", "9434765919").expect("valid");
    assert_plaintext_absent(&f, &[]).await;
    assert!(
        f.store
            .find_patient_by_nhs_number(&nhs)
            .await
            .expect("query")
            .is_none()
    );
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let f = Fixture::start().await;
    let status = f
        .client()
        .get_patient(pb::GetPatientRequest {
            patient_id: "x".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    // Signed by a key identity never published.
    let forger = TestAuthority::new();
    let forged = forger.token(
        PrincipalKind::Admin,
        "X26",
        "admin",
        &["admin", "patients.read"],
    );
    let status = f
        .client()
        .get_patient(with_token(
            pb::GetPatientRequest {
                patient_id: "x".into(),
            },
            &forged,
        ))
        .await
        .expect_err("forged");
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = f
        .client()
        .get_patient(with_token(
            pb::GetPatientRequest {
                patient_id: "x".into(),
            },
            "not-a-jwt",
        ))
        .await
        .expect_err("garbage");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn tokens_need_matching_credentials_and_granted_scopes() {
    let f = Fixture::start().await;
    let status = f
        .client()
        .issue_token(pb::IssueTokenRequest {
            client_id: "admin".into(),
            client_secret: "wrong".into(),
            scopes: vec![],
            purpose: 0,
        })
        .await
        .expect_err("wrong secret");
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = f
        .client()
        .issue_token(pb::IssueTokenRequest {
            client_id: "admin".into(),
            client_secret: ADMIN_SECRET.into(),
            scopes: vec!["records.write".into()],
            purpose: 0,
        })
        .await
        .expect_err("scope not granted");
    assert_eq!(status.code(), Code::InvalidArgument);

    let jwks = f
        .client()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("public")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].crv, "Ed25519");
}

#[tokio::test]
async fn staff_principals_act_for_an_existing_organisation() {
    let f = Fixture::start().await;
    let admin = f.admin().await;
    let mut client = f.client();
    let status = client
        .create_principal(with_token(
            pb::CreatePrincipalRequest {
                kind: PrincipalKind::Staff as i32,
                display_name: "Dr Who".into(),
                organisation_ods_code: "A81001".into(),
                role: "R8000".into(),
                scopes: vec![],
            },
            &admin,
        ))
        .await
        .expect_err("no such organisation");
    assert_eq!(status.code(), Code::FailedPrecondition);

    client
        .create_organisation(with_token(
            pb::CreateOrganisationRequest {
                ods_code: "a81001".into(),
                name: "Test Surgery".into(),
            },
            &admin,
        ))
        .await
        .expect("organisation");
    let status = client
        .create_organisation(with_token(
            pb::CreateOrganisationRequest {
                ods_code: "A81001".into(),
                name: "Again".into(),
            },
            &admin,
        ))
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists);

    let created = client
        .create_principal(with_token(
            pb::CreatePrincipalRequest {
                kind: PrincipalKind::Staff as i32,
                display_name: "Dr Who".into(),
                organisation_ods_code: "A81001".into(),
                role: "R8000".into(),
                scopes: vec![],
            },
            &admin,
        ))
        .await
        .expect("principal")
        .into_inner();
    let principal = created.principal.expect("principal");
    let staff = f.token(&principal.client_id, &created.client_secret).await;

    // Staff may register patients but not administer the platform.
    client
        .register_patient(with_token(jane("9434765919"), &staff))
        .await
        .expect("staff registers");
    let status = client
        .create_organisation(with_token(
            pb::CreateOrganisationRequest {
                ods_code: "RR8".into(),
                name: "Trust".into(),
            },
            &staff,
        ))
        .await
        .expect_err("not admin");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("admin"));
}

#[tokio::test]
async fn oversize_and_unimplemented_calls_fail_cleanly_and_the_server_keeps_serving() {
    let f = Fixture::start().await;
    let admin = f.admin().await;
    let mut huge = jane("9434765919");
    huge.demographics.as_mut().expect("d").family_name = "x".repeat(100 * 1024);
    let status = f
        .client()
        .register_patient(with_token(huge, &admin))
        .await
        .expect_err("oversize");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );

    let status = f
        .client()
        .trace_patient(with_token(pb::TracePatientRequest::default(), &admin))
        .await
        .expect_err("later issue");
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("TracePatient"));

    f.client()
        .register_patient(with_token(jane("9434765919"), &admin))
        .await
        .expect("still serving");
}

/// Reads the patients table raw: none of `needles` (nor the test patient's
/// NHS number) may appear in it.
async fn assert_plaintext_absent(f: &Fixture, needles: &[&str]) {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(f.db.url())
        .await
        .expect("connect");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT * FROM identity_patients",
        ))
        .await
        .expect("rows");
    for row in rows {
        let index: String = row.try_get("", "nhs_index").expect("index");
        let sealed: Vec<u8> = row.try_get("", "sealed").expect("sealed");
        for needle in needles.iter().chain(&["9434765919"]) {
            assert!(!index.contains(needle), "{needle} in the index");
            assert!(
                !sealed.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} at rest"
            );
        }
    }
    db.close().await.ok();
}

#[tokio::test]
async fn patients_are_encrypted_at_rest() {
    let f = Fixture::start().await;
    let token = f.admin().await;
    f.client()
        .register_patient(with_token(jane("943 476 5919"), &token))
        .await
        .expect("registered");
    assert_plaintext_absent(&f, &["Smith", "Jane", "1980-02-29", "LS1 4AP"]).await;
}

#[tokio::test]
async fn nonsense_is_refused_naming_the_field_and_nothing_is_stored() {
    let f = Fixture::start().await;
    let admin = f.admin().await;
    let mut client = f.client();
    let expect_invalid = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    };

    for (ods_code, name) in [("A8-001", "Surgery"), ("", "Surgery"), ("A81001", " ")] {
        let status = client
            .create_organisation(with_token(
                pb::CreateOrganisationRequest {
                    ods_code: ods_code.into(),
                    name: name.into(),
                },
                &admin,
            ))
            .await
            .expect_err("bad organisation");
        expect_invalid(
            status,
            if ods_code == "A81001" {
                "name"
            } else {
                "ods_code"
            },
        );
    }
    let status = client
        .get_organisation(with_token(
            pb::GetOrganisationRequest {
                ods_code: "A81001".into(),
            },
            &admin,
        ))
        .await
        .expect_err("nothing was stored");
    assert_eq!(status.code(), Code::NotFound);

    let principal = |kind: PrincipalKind, role: &str, scopes: &[&str]| pb::CreatePrincipalRequest {
        kind: kind as i32,
        display_name: "Someone".into(),
        organisation_ods_code: "X26".into(),
        role: role.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    for (request, field) in [
        (principal(PrincipalKind::Admin, "admin", &[]), "kind"),
        (principal(PrincipalKind::Unspecified, "", &[]), "kind"),
        (principal(PrincipalKind::Staff, "", &[]), "role"),
        (
            principal(PrincipalKind::Staff, "R8000", &["root"]),
            "scopes",
        ),
        (principal(PrincipalKind::Service, "", &["admin"]), "scopes"),
    ] {
        let status = client
            .create_principal(with_token(request, &admin))
            .await
            .expect_err(field);
        expect_invalid(status, field);
    }

    let status = client
        .issue_token(pb::IssueTokenRequest {
            client_id: String::new(),
            client_secret: "x".into(),
            scopes: vec![],
            purpose: 0,
        })
        .await
        .expect_err("no client id");
    expect_invalid(status, "client_id");
    let status = client
        .get_patient(with_token(
            pb::GetPatientRequest {
                patient_id: String::new(),
            },
            &admin,
        ))
        .await
        .expect_err("no id");
    expect_invalid(status, "patient_id");
}
