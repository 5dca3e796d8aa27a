//! Tokens across the four real services over real sockets: a revoked
//! principal's still-unexpired token is refused by identity at once and by
//! records and consent within their revocation refresh interval, while
//! another principal's keeps working; a token for one service's audience is
//! refused by another, naming the audience; after a signing key rotation
//! the new key's tokens and the old key's both verify everywhere; an
//! application acting for a named member of staff reads as that member of
//! staff, and audit records both.

use std::time::{Duration, Instant};

use sharedcare_kit::testing::with_token;
use sharedcare_proto::{
    audit::v1::{self as audit, audit_service_client::AuditServiceClient},
    common::v1::PrincipalKind,
    consent::v1::{self as consent, consent_service_client::ConsentServiceClient},
    identity::v1::{self as identity, identity_service_client::IdentityServiceClient},
    records::v1::{self as records, records_service_client::RecordsServiceClient},
};
use sharedcare_tests::{Backend, Platform, REVOCATION_REFRESH_MS};
use tonic::Code;

const CARING: &str = "A81001";

/// A patient cared for by A81001, with one record its PAS wrote: (patient
/// id, record id).
async fn cared_for_patient(p: &Platform, pas: &str) -> (String, String) {
    let patient_id = IdentityServiceClient::new(p.identity.channel.clone())
        .register_patient(with_token(
            identity::RegisterPatientRequest {
                confirm_new_patient: false,
                nhs_number: "9990000018".into(),
                demographics: Some(identity::Demographics {
                    given_names: vec!["Ann".into()],
                    family_name: "Tokenby".into(),
                    birth_date: "1970-01-02".into(),
                    gender: identity::Gender::Female as i32,
                    postcode: String::new(),
                    ..Default::default()
                }),
            },
            pas,
        ))
        .await
        .expect("registered")
        .into_inner()
        .patient
        .expect("patient")
        .patient_id;
    ConsentServiceClient::new(p.consent.channel.clone())
        .record_care_relationship(with_token(
            consent::RecordCareRelationshipRequest {
                patient_id: patient_id.clone(),
                organisation_ods_code: CARING.into(),
                kind: consent::CareRelationshipKind::RegisteredGp as i32,
                ..Default::default()
            },
            pas,
        ))
        .await
        .expect("relationship");
    let record_id = RecordsServiceClient::new(p.records.channel.clone())
        .create_record(with_token(
            records::CreateRecordRequest {
                patient_id: patient_id.clone(),
                resource_json: serde_json::json!({
                    "resourceType": "Observation",
                    "status": "final",
                    "subject": {"reference": format!("Patient/{patient_id}")},
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
                })
                .to_string(),
                ..Default::default()
            },
            pas,
        ))
        .await
        .expect("record")
        .into_inner()
        .record
        .expect("record")
        .record_id;
    (patient_id, record_id)
}

fn staff_request(ods: &str, role: &str) -> identity::CreatePrincipalRequest {
    identity::CreatePrincipalRequest {
        kind: PrincipalKind::Staff as i32,
        display_name: format!("{role} at {ods}"),
        organisation_ods_code: ods.into(),
        role: role.into(),
        ..Default::default()
    }
}

async fn issue(
    p: &Platform,
    client_id: &str,
    secret: &str,
    audience: &str,
    on_behalf_of_token: &str,
) -> Result<String, tonic::Status> {
    Ok(IdentityServiceClient::new(p.identity.channel.clone())
        .issue_token(identity::IssueTokenRequest {
            client_id: client_id.into(),
            client_secret: secret.into(),
            audience: audience.into(),
            on_behalf_of_token: on_behalf_of_token.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .access_token)
}

/// GetRecord of `target` (patient id, record id).
async fn get_record(
    p: &Platform,
    token: &str,
    target: &(String, String),
) -> Result<(), tonic::Status> {
    RecordsServiceClient::new(p.records.channel.clone())
        .get_record(with_token(
            records::GetRecordRequest {
                patient_id: target.0.clone(),
                record_id: target.1.clone(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(drop)
}

async fn list_relationships(
    p: &Platform,
    token: &str,
    patient_id: &str,
) -> Result<(), tonic::Status> {
    ConsentServiceClient::new(p.consent.channel.clone())
        .list_care_relationships(with_token(
            consent::ListCareRelationshipsRequest {
                patient_id: patient_id.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(drop)
}

/// The token's key id, from its header.
fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("a key id")
}

#[tokio::test]
async fn a_revoked_staff_members_token_is_refused_everywhere_within_the_refresh_interval() {
    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    p.organisation(&admin, CARING).await;
    let pas = p.pas(&admin, CARING).await;
    let target = cared_for_patient(&p, &pas).await;
    let patient_id = target.0.clone();

    let (revoked_id, revoked_client, revoked_secret) =
        p.credentials(&admin, staff_request(CARING, "R8008")).await;
    let revoked = issue(&p, &revoked_client, &revoked_secret, "", "")
        .await
        .expect("token");
    let colleague = p.staff(&admin, CARING, "R8008").await;
    for token in [&revoked, &colleague] {
        get_record(&p, token, &target).await.expect("read");
        list_relationships(&p, token, &patient_id)
            .await
            .expect("listed");
    }

    let mut identity_client = IdentityServiceClient::new(p.identity.channel.clone());
    let revoked_at = Instant::now();
    let answer = identity_client
        .revoke_principal(with_token(
            identity::RevokePrincipalRequest {
                principal_id: revoked_id.clone(),
            },
            &admin,
        ))
        .await
        .expect("revoked")
        .into_inner();
    assert!(!answer.already_revoked);

    // identity: at once. No new token; the old one refused.
    let err = issue(&p, &revoked_client, &revoked_secret, "", "")
        .await
        .expect_err("no token for a revoked principal");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{err:?}");
    let err = identity_client
        .get_organisation(with_token(
            identity::GetOrganisationRequest {
                ods_code: CARING.into(),
            },
            &revoked,
        ))
        .await
        .expect_err("identity refuses it at once");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let listed = identity_client
        .list_revocations(identity::ListRevocationsRequest {})
        .await
        .expect("listed without a token")
        .into_inner();
    assert_eq!(listed.principal_ids, vec![revoked_id.clone()]);

    // records and consent: within the refresh interval and a call timeout.
    let bound = Duration::from_millis(REVOCATION_REFRESH_MS)
        + sharedcare_kit::auth::REVOCATION_CALL_TIMEOUT;
    loop {
        let records = get_record(&p, &revoked, &target).await;
        let consent = list_relationships(&p, &revoked, &patient_id).await;
        if let (Err(r), Err(c)) = (&records, &consent) {
            for err in [r, c] {
                assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
                assert!(err.message().contains("revoked"), "{err:?}");
            }
            break;
        }
        assert!(
            revoked_at.elapsed() < bound,
            "still accepted after {:?}: records {records:?}, consent {consent:?}",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The colleague's token keeps working.
    get_record(&p, &colleague, &target)
        .await
        .expect("a colleague still reads");
    list_relationships(&p, &colleague, &patient_id)
        .await
        .expect("a colleague still lists");

    // Revoking again changes nothing.
    let again = identity_client
        .revoke_principal(with_token(
            identity::RevokePrincipalRequest {
                principal_id: revoked_id,
            },
            &admin,
        ))
        .await
        .expect("revoked again")
        .into_inner();
    assert!(again.already_revoked);
    assert_eq!(again.revoke_time, answer.revoke_time);
    p.stop().await;
}

#[tokio::test]
async fn a_token_for_records_is_refused_by_audit_naming_the_audience() {
    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    p.organisation(&admin, CARING).await;
    let pas = p.pas(&admin, CARING).await;
    let target = cared_for_patient(&p, &pas).await;
    let patient_id = target.0.clone();
    let (_, client, secret) = p
        .credentials(&admin, staff_request("X26", "platform-auditor"))
        .await;
    let (_, gp_client, gp_secret) = p.credentials(&admin, staff_request(CARING, "R8000")).await;

    let for_records = issue(&p, &gp_client, &gp_secret, "records", "")
        .await
        .expect("token for records");
    get_record(&p, &for_records, &target)
        .await
        .expect("records accepts its own audience");
    let err = list_relationships(&p, &for_records, &patient_id)
        .await
        .expect_err("consent refuses records' audience");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("sharedcare/records"), "{err:?}");

    let query = |token: String| {
        let mut client = AuditServiceClient::new(p.audit.channel.clone());
        let patient_id = patient_id.clone();
        async move {
            client
                .query(with_token(
                    audit::QueryRequest {
                        patient_id,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .map(drop)
        }
    };
    let auditor_for_records = issue(&p, &client, &secret, "records", "")
        .await
        .expect("token");
    let err = query(auditor_for_records)
        .await
        .expect_err("audit refuses a token for records");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("audience `sharedcare/records`"),
        "{err:?}"
    );
    for audience in ["audit", ""] {
        let token = issue(&p, &client, &secret, audience, "")
            .await
            .expect("token");
        query(token)
            .await
            .expect("audit accepts its own and the platform's audience");
    }

    let err = issue(&p, &client, &secret, "billing", "")
        .await
        .expect_err("no such service");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("audience"), "{err:?}");
    p.stop().await;
}

#[tokio::test]
async fn after_a_key_rotation_new_and_old_tokens_verify_everywhere() {
    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    p.organisation(&admin, CARING).await;
    let pas = p.pas(&admin, CARING).await;
    let target = cared_for_patient(&p, &pas).await;
    let (_, client, secret) = p.credentials(&admin, staff_request(CARING, "R8000")).await;
    let old = issue(&p, &client, &secret, "", "").await.expect("token");
    get_record(&p, &old, &target).await.expect("read");

    let mut identity_client = IdentityServiceClient::new(p.identity.channel.clone());
    let rotated = identity_client
        .rotate_signing_key(with_token(identity::RotateSigningKeyRequest {}, &admin))
        .await
        .expect("rotated")
        .into_inner();
    assert_ne!(rotated.kid, kid(&old));
    assert_eq!(rotated.published_kids.len(), 2, "{rotated:?}");
    let jwks = identity_client
        .get_jwks(identity::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    let published: Vec<_> = jwks.keys.into_iter().map(|k| k.kid).collect();
    assert!(published.contains(&rotated.kid) && published.contains(&kid(&old)));

    let new = issue(&p, &client, &secret, "", "").await.expect("token");
    assert_eq!(kid(&new), rotated.kid);
    // records first met this key id just now: it refetches the JWKS.
    get_record(&p, &new, &target)
        .await
        .expect("the new key's token is accepted");
    get_record(&p, &old, &target)
        .await
        .expect("the old key's token still is");
    let mut consent_client = ConsentServiceClient::new(p.consent.channel.clone());
    for token in [&old, &new] {
        consent_client
            .list_care_relationships(with_token(
                consent::ListCareRelationshipsRequest {
                    patient_id: String::new(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map_or_else(
                |s| assert_ne!(s.code(), Code::Unauthenticated, "{s:?}"),
                drop,
            );
    }
    p.stop().await;
}

#[tokio::test]
async fn an_application_acting_for_a_staff_member_reads_as_them_and_audit_names_both() {
    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    p.organisation(&admin, CARING).await;
    p.organisation(&admin, "B82002").await;
    let pas = p.pas(&admin, CARING).await;
    let target = cared_for_patient(&p, &pas).await;
    let patient_id = target.0.clone();

    let (app_id, app_client, app_secret) = p
        .credentials(
            &admin,
            identity::CreatePrincipalRequest {
                kind: PrincipalKind::Application as i32,
                display_name: "Ward EPR".into(),
                organisation_ods_code: CARING.into(),
                ..Default::default()
            },
        )
        .await;
    let (nurse_id, nurse_client, nurse_secret) =
        p.credentials(&admin, staff_request(CARING, "R8001")).await;
    let nurse = issue(&p, &nurse_client, &nurse_secret, "", "")
        .await
        .expect("the nurse signs in");
    let acting = issue(&p, &app_client, &app_secret, "", &nurse)
        .await
        .expect("the EPR acts for the nurse");
    let principal = sharedcare_kit::auth::Principal::from_claims(
        &serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                acting.split('.').nth(1).expect("payload"),
            )
            .expect("base64"),
        )
        .expect("claims"),
    )
    .expect("valid");
    assert_eq!(principal.id, nurse_id);
    assert_eq!(principal.role, "R8001");
    assert_eq!(
        principal.acting_application.as_ref().map(|a| a.id.as_str()),
        Some(app_id.as_str())
    );
    // An application's scopes are not widened by the nurse's.
    assert!(!principal.scopes.contains("audit.read"));

    get_record(&p, &acting, &target)
        .await
        .expect("reads as the nurse, for direct care");

    // audit records the nurse and the application.
    let (_, auditor_client, auditor_secret) = p
        .credentials(&admin, staff_request("X26", "platform-auditor"))
        .await;
    let auditor = issue(&p, &auditor_client, &auditor_secret, "", "")
        .await
        .expect("token");
    let mut audit_client = AuditServiceClient::new(p.audit.channel.clone());
    let started = Instant::now();
    let actor = loop {
        let entries = audit_client
            .query(with_token(
                audit::QueryRequest {
                    patient_id: patient_id.clone(),
                    ..Default::default()
                },
                &auditor,
            ))
            .await
            .expect("query")
            .into_inner()
            .entries;
        if let Some(actor) = entries
            .into_iter()
            .filter_map(|e| e.event.and_then(|e| e.actor))
            .find(|a| a.principal_id == nurse_id)
        {
            break actor;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the access reached audit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(actor.role, "R8001");
    let app = actor.acting_application.expect("the application is named");
    assert_eq!(app.principal_id, app_id);
    assert_eq!(app.display_name, "Ward EPR");

    // Only an application, for staff at its own organisation, with proof.
    let err = issue(&p, &nurse_client, &nurse_secret, "", &nurse)
        .await
        .expect_err("staff do not act for staff");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("on_behalf_of_token"), "{err:?}");
    let (_, other_client, other_secret) = p
        .credentials(&admin, staff_request("B82002", "R8000"))
        .await;
    let elsewhere = issue(&p, &other_client, &other_secret, "", "")
        .await
        .expect("token");
    let err = issue(&p, &app_client, &app_secret, "", &elsewhere)
        .await
        .expect_err("another organisation's staff");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("on_behalf_of_token"), "{err:?}");
    let err = issue(&p, &app_client, &app_secret, "", "not.a.token")
        .await
        .expect_err("no proof");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("on_behalf_of_token"), "{err:?}");

    // Revoking the application ends the tokens it holds for the nurse.
    IdentityServiceClient::new(p.identity.channel.clone())
        .revoke_principal(with_token(
            identity::RevokePrincipalRequest {
                principal_id: app_id,
            },
            &admin,
        ))
        .await
        .expect("revoked");
    let started = Instant::now();
    while get_record(&p, &acting, &target).await.is_ok() {
        assert!(
            started.elapsed()
                < Duration::from_millis(REVOCATION_REFRESH_MS)
                    + sharedcare_kit::auth::REVOCATION_CALL_TIMEOUT,
            "still accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get_record(&p, &nurse, &target)
        .await
        .expect("the nurse's own token still works");
    p.stop().await;
}
