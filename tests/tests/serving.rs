//! Every service serves health and reflection (v1 and v1alpha), and keeps
//! serving after garbage.

use sharedcare_kit::testing::{TestServer, with_token};
use sharedcare_proto::{
    audit::v1::{QueryRequest, audit_service_client::AuditServiceClient},
    identity::v1::{GetOrganisationRequest, identity_service_client::IdentityServiceClient},
};
use sharedcare_tests::{Backend, Platform};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

async fn listed_services_v1(server: &TestServer) -> Vec<String> {
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    match responses
        .next()
        .await
        .expect("a response")
        .expect("ok")
        .message_response
    {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

async fn listed_services_v1alpha(server: &TestServer) -> Vec<String> {
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    match responses
        .next()
        .await
        .expect("a response")
        .expect("ok")
        .message_response
    {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

#[tokio::test]
async fn every_service_reports_serving_and_lists_itself_by_reflection() {
    let p = Platform::start(Backend::Sqlite).await;
    for (server, name) in [
        (&p.identity, "sharedcare.identity.v1.IdentityService"),
        (&p.consent, "sharedcare.consent.v1.ConsentService"),
        (&p.records, "sharedcare.records.v1.RecordsService"),
        (&p.audit, "sharedcare.audit.v1.AuditService"),
    ] {
        let status = HealthClient::new(server.channel.clone())
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{name}");
        let listed = listed_services_v1(server).await;
        assert!(listed.iter().any(|s| s == name), "{name} in {listed:?}");
        assert!(listed.iter().any(|s| s == "grpc.health.v1.Health"));
        let listed = listed_services_v1alpha(server).await;
        assert!(listed.iter().any(|s| s == name), "{name} in {listed:?}");
    }
    p.stop().await;
}

#[tokio::test]
async fn garbage_gets_the_right_status_and_the_service_keeps_serving() {
    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    let auditor = p.staff(&admin, "X26", "platform-auditor").await;
    let mut identity = IdentityServiceClient::new(p.identity.channel.clone());

    // Unknown id.
    let status = identity
        .get_organisation(with_token(
            GetOrganisationRequest {
                ods_code: "Z9Z9".into(),
            },
            &admin,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);

    // Oversize message: refused by the server's limit (256 KiB here).
    let status = identity
        .get_organisation(with_token(
            GetOrganisationRequest {
                ods_code: "x".repeat(300 * 1024),
            },
            &admin,
        ))
        .await
        .expect_err("oversize");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );

    // A bad page token.
    let status = AuditServiceClient::new(p.audit.channel.clone())
        .query(with_token(
            QueryRequest {
                patient_id: "p".into(),
                page_size: 10,
                page_token: "%%%not-a-token%%%".into(),
            },
            &auditor,
        ))
        .await
        .expect_err("bad page token");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("page_token"),
        "{}",
        status.message()
    );

    // Still serving.
    let status = identity
        .get_organisation(with_token(
            GetOrganisationRequest {
                ods_code: "Z8Z8".into(),
            },
            &admin,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    p.stop().await;
}
