//! "The network is not a credential": the four services over mutual TLS.
//! The chain works end to end (records calls identity, consent and audit
//! over mTLS, and every service fetches identity's JWKS over it); a
//! plaintext client, a client without a certificate and a client whose
//! certificate another CA signed are all refused; and a renewed server
//! certificate is served to new connections without a restart.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sharedcare_kit::{
    testing::with_token,
    tls::{Tls, TlsConfig, test_pki::TestPki},
};
use sharedcare_proto::{
    audit::v1::{self as audit, audit_service_client::AuditServiceClient},
    common::v1::PrincipalKind,
    consent::v1::{
        self as consent, CareRelationshipKind, consent_service_client::ConsentServiceClient,
    },
    identity::v1::{self as identity, identity_service_client::IdentityServiceClient},
    records::v1::{self as records, records_service_client::RecordsServiceClient},
};
use sharedcare_tests::{Backend, Platform};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn pki(p: &Platform) -> &TestPki {
    p.pki().expect("started with TLS")
}

/// A health check over `channel`, bounded so a refusal cannot hang.
async fn health(channel: Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// A raw TLS handshake then the HTTP/2 preface: the certificate the server
/// presented if it answered (with its SETTINGS), or why it did not.
async fn probe(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<CertificateDer<'static>, String> {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let served = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no server certificate")?;
        // TLS 1.3: the server's verdict on our certificate comes after our
        // side of the handshake is done, so ask for an answer.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 64];
        match tls.read(&mut buf).await {
            Ok(0) => Err("closed by the server".to_owned()),
            Ok(_) => Ok(served),
            Err(e) => Err(format!("refused: {e}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| "timed out".to_owned())?
}

fn roots(ca_file: &std::path::Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("usable CA");
    }
    Arc::new(roots)
}

fn ring() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// A client trusting the platform's CA and presenting a certificate from it.
fn good_client(p: &Platform) -> Tls {
    Tls::from_config(&pki(p).config("tester"))
        .expect("client TLS")
        .expect("enabled")
}

#[tokio::test]
async fn the_chain_over_mutual_tls() {
    let p = Platform::start_tls(Backend::Sqlite).await;
    assert!(p.records.url().starts_with("https://"));
    let admin = p.admin_token().await;
    let client = good_client(&p);
    let channel = |url: String| client.channel(&url).expect("channel");
    let mut identity = IdentityServiceClient::new(channel(p.identity.url()));

    identity
        .create_organisation(with_token(
            identity::CreateOrganisationRequest {
                ods_code: "A81001".into(),
                name: "Test Surgery".into(),
            },
            &admin,
        ))
        .await
        .expect("organisation created");
    let created = identity
        .create_principal(with_token(
            identity::CreatePrincipalRequest {
                kind: PrincipalKind::Staff as i32,
                display_name: "Dr A Jones".into(),
                organisation_ods_code: "A81001".into(),
                role: "R8000".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("clinician created")
        .into_inner();
    let gp = p
        .token(
            &created.principal.expect("principal").client_id,
            &created.client_secret,
        )
        .await;
    let patient_id = identity
        .register_patient(with_token(
            identity::RegisterPatientRequest {
                confirm_new_patient: false,
                nhs_number: "999 000 0018".into(),
                demographics: Some(identity::Demographics {
                    given_names: vec!["Jane".into()],
                    family_name: "Smith".into(),
                    birth_date: "1980-02-29".into(),
                    gender: identity::Gender::Female as i32,
                    postcode: "LS1 4AP".into(),
                    ..Default::default()
                }),
            },
            &gp,
        ))
        .await
        .expect("patient registered")
        .into_inner()
        .patient
        .expect("patient")
        .patient_id;
    ConsentServiceClient::new(channel(p.consent.url()))
        .record_care_relationship(with_token(
            consent::RecordCareRelationshipRequest {
                patient_id: patient_id.clone(),
                organisation_ods_code: "A81001".into(),
                kind: CareRelationshipKind::RegisteredGp as i32,
                start_time: None,
                end_time: None,
                ..Default::default()
            },
            &p.pas(&admin, "A81001").await,
        ))
        .await
        .expect("care relationship recorded");

    // records asks consent and writes to audit, both over mTLS, as itself
    // (its token from identity over mTLS).
    let resource = serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Heart rate"},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "valueQuantity": {"value": 72, "unit": "/min"}
    });
    let mut records_client = RecordsServiceClient::new(channel(p.records.url()));
    let record = records_client
        .create_record(with_token(
            records::CreateRecordRequest {
                patient_id: patient_id.clone(),
                resource_json: resource.to_string(),
                ..Default::default()
            },
            &gp,
        ))
        .await
        .expect("record created over mTLS")
        .into_inner()
        .record
        .expect("record");
    records_client
        .get_record(with_token(
            records::GetRecordRequest {
                patient_id: patient_id.clone(),
                record_id: record.record_id,
                purpose: 0,
                break_glass_reason: String::new(),
            },
            &gp,
        ))
        .await
        .expect("read over mTLS");
    // records' events reach audit through its outbox, over mTLS: wait for
    // the write's and the read's.
    let the_patient = p.patient(&admin, &patient_id).await;
    let mut report = audit::AccessReportResponse::default();
    for _ in 0..500 {
        report = AuditServiceClient::new(channel(p.audit.url()))
            .access_report(with_token(
                audit::AccessReportRequest {
                    patient_id: patient_id.clone(),
                    page_size: 0,
                    page_token: String::new(),
                    with_proofs: false,
                },
                &the_patient,
            ))
            .await
            .expect("access report")
            .into_inner();
        let from_records = report
            .lines
            .iter()
            .filter(|l| l.resource_type == "Observation")
            .count();
        if from_records >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        report
            .lines
            .iter()
            .filter(|l| l.resource_type == "Observation")
            .count()
            >= 2,
        "the write and the read are audited"
    );

    // mTLS adds the channel; tokens stay: no token, no data.
    let status = records_client
        .get_record(records::GetRecordRequest {
            patient_id: "p".into(),
            record_id: "r".into(),
            purpose: 0,
            break_glass_reason: String::new(),
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    p.stop().await;
}

#[tokio::test]
async fn plaintext_unknown_and_missing_certificates_are_refused() {
    let p = Platform::start_tls(Backend::Sqlite).await;
    let client = good_client(&p);
    for server in [&p.identity, &p.consent, &p.records, &p.audit] {
        // The control: a client with a certificate from the CA is served.
        health(client.channel(&server.url()).expect("channel"))
            .await
            .expect("a known client is served");

        // Plaintext gRPC to a TLS port.
        let plaintext = Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("url")
            .connect_lazy();
        assert!(health(plaintext).await.is_err(), "plaintext was served");
    }

    // A certificate another CA signed, from a client that trusts our CA.
    let other = TestPki::new();
    other.issue("stranger");
    let stranger = Tls::from_config(&TlsConfig {
        cert_file: Some(other.cert_file("stranger")),
        key_file: Some(other.key_file("stranger")),
        ..pki(&p).config("unused")
    })
    .expect("stranger's TLS")
    .expect("enabled");
    let refused = health(stranger.channel(&p.records.url()).expect("channel")).await;
    assert!(refused.is_err(), "an unknown CA's certificate was served");
    let refused = probe(p.identity.addr, stranger.client_config()).await;
    assert!(refused.is_err(), "{refused:?}");

    // No client certificate at all (client_auth = "required").
    let anonymous = ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(&pki(&p).ca_file()))
        .with_no_client_auth();
    let refused = probe(p.consent.addr, Arc::new(anonymous)).await;
    assert!(refused.is_err(), "{refused:?}");

    // The other way round: a client trusting only the other CA refuses our
    // servers' certificates.
    let elsewhere = Tls::from_config(&other.config("elsewhere"))
        .expect("TLS")
        .expect("enabled");
    let refused = probe(p.audit.addr, elsewhere.client_config()).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.starts_with("handshake")),
        "{refused:?}"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_renewed_server_certificate_is_served_without_a_restart() {
    let p = Platform::start_tls(Backend::Sqlite).await;
    let client = good_client(&p).client_config();
    let before = probe(p.identity.addr, client.clone())
        .await
        .expect("served");

    // cert-manager renews: new files from the same CA, in place.
    let renewed = pki(&p).issue("identity");
    assert_ne!(before.as_ref(), renewed.as_slice());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let served = probe(p.identity.addr, client.clone())
            .await
            .expect("served during the renewal");
        if served.as_ref() == renewed.as_slice() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // The services still talk to each other (records' outgoing connections
    // verify identity's new certificate when they reconnect).
    let token = p.admin_token().await;
    assert!(!token.is_empty());
    p.stop().await;
}
