//! identity's token administration over real gRPC, as `open` builds it from
//! configuration on SQLite in a data dir: rotated signing keys survive a
//! restart (old tokens still verify, new ones are signed by the rotated
//! key); a revoked principal gets no token and its tokens are inactive;
//! bad input is INVALID_ARGUMENT naming the field, and changes nothing.

use std::collections::HashMap;

use sharedcare_kit::{
    config::ServerConfig,
    testing::{TestServer, reserve_port, spawn_on, with_token},
};
use sharedcare_proto::{
    common::v1::PrincipalKind,
    identity::v1::{self as pb, identity_service_client::IdentityServiceClient},
};
use tonic::{Code, transport::Channel};

const ADMIN_SECRET: &str = "admin-secret-for-token-tests-0123456789abcdef";

/// identity as `open` builds it, over the data dir `dir`.
async fn start(dir: &std::path::Path) -> TestServer {
    let bootstrap = dir.join("bootstrap.toml");
    std::fs::write(
        &bootstrap,
        format!(
            "[[organisations]]\nods_code = \"X26\"\nname = \"Platform\"\n\n\
             [[principals]]\nclient_id = \"admin\"\nclient_secret = \"{ADMIN_SECRET}\"\n\
             kind = \"admin\"\ndisplay_name = \"Administrator\"\norganisation = \"X26\"\n\
             role = \"admin\"\n"
        ),
    )
    .expect("write bootstrap");
    let env = HashMap::from([
        (
            "SHAREDCARE_DATABASE__DATA_DIR".to_owned(),
            dir.display().to_string(),
        ),
        (
            "SHAREDCARE_IDENTITY__BOOTSTRAP_FILE".to_owned(),
            bootstrap.display().to_string(),
        ),
        (
            "SHAREDCARE_SERVER__SHUTDOWN_DRAIN_MS".to_owned(),
            "0".to_owned(),
        ),
    ]);
    let cfg = sharedcare_identity::config::IdentityConfig::load(&env).expect("config");
    spawn_on(
        sharedcare_identity::open(&cfg).await.expect("opens"),
        ServerConfig::loopback(),
        reserve_port().await,
    )
    .await
}

fn client(server: &TestServer) -> IdentityServiceClient<Channel> {
    IdentityServiceClient::new(server.channel.clone())
}

async fn issue(
    server: &TestServer,
    client_id: &str,
    secret: &str,
    audience: &str,
) -> Result<String, tonic::Status> {
    Ok(client(server)
        .issue_token(pb::IssueTokenRequest {
            client_id: client_id.into(),
            client_secret: secret.into(),
            audience: audience.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .access_token)
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("kid")
}

async fn jwks(server: &TestServer) -> Vec<String> {
    let mut kids: Vec<String> = client(server)
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    kids.sort();
    kids
}

/// A principal the admin creates: (principal id, client id, secret).
async fn create(
    server: &TestServer,
    admin: &str,
    request: pb::CreatePrincipalRequest,
) -> (String, String, String) {
    let created = client(server)
        .create_principal(with_token(request, admin))
        .await
        .expect("created")
        .into_inner();
    let principal = created.principal.expect("principal");
    (
        principal.principal_id,
        principal.client_id,
        created.client_secret,
    )
}

#[tokio::test]
async fn rotated_keys_survive_a_restart_and_old_tokens_still_verify() {
    let dir = tempfile::tempdir().expect("dir");
    let server = start(dir.path()).await;
    let before = issue(&server, "admin", ADMIN_SECRET, "")
        .await
        .expect("token");
    let base = kid(&before);
    assert_eq!(jwks(&server).await, vec![base.clone()]);

    let rotated = client(&server)
        .rotate_signing_key(with_token(pb::RotateSigningKeyRequest {}, &before))
        .await
        .expect("rotated")
        .into_inner();
    let mut both = vec![base.clone(), rotated.kid.clone()];
    both.sort();
    assert_eq!(jwks(&server).await, both);
    let retire = rotated.previous_keys_retire_time.expect("retire time");
    let in_secs = retire.seconds - chrono::Utc::now().timestamp();
    assert!((900..=960 + 5).contains(&in_secs), "{in_secs}");
    server.stop().await;

    // The same data dir: the kept key and the rotated one are both back.
    let server = start(dir.path()).await;
    assert_eq!(jwks(&server).await, both);
    let after = issue(&server, "admin", ADMIN_SECRET, "")
        .await
        .expect("token");
    assert_eq!(kid(&after), rotated.kid, "signed with the rotated key");
    for token in [&before, &after] {
        client(&server)
            .get_organisation(with_token(
                pb::GetOrganisationRequest {
                    ods_code: "X26".into(),
                },
                token,
            ))
            .await
            .expect("both keys' tokens verify");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_principal_gets_no_token_and_its_tokens_are_inactive() {
    let dir = tempfile::tempdir().expect("dir");
    let server = start(dir.path()).await;
    let admin = issue(&server, "admin", ADMIN_SECRET, "")
        .await
        .expect("token");
    let (_, introspector, introspector_secret) = create(
        &server,
        &admin,
        pb::CreatePrincipalRequest {
            kind: PrincipalKind::Service as i32,
            display_name: "Resource server".into(),
            organisation_ods_code: "X26".into(),
            scopes: vec!["tokens.introspect".into()],
            ..Default::default()
        },
    )
    .await;
    let introspector = issue(&server, &introspector, &introspector_secret, "")
        .await
        .expect("token");
    let (app_id, app_client, app_secret) = create(
        &server,
        &admin,
        pb::CreatePrincipalRequest {
            kind: PrincipalKind::Application as i32,
            display_name: "Practice system".into(),
            organisation_ods_code: "X26".into(),
            ..Default::default()
        },
    )
    .await;
    let token = issue(&server, &app_client, &app_secret, "records")
        .await
        .expect("token");
    let introspect = |token: String| {
        let mut c = client(&server);
        let introspector = introspector.clone();
        async move {
            c.introspect_token(with_token(
                pb::IntrospectTokenRequest { token },
                &introspector,
            ))
            .await
            .expect("introspected")
            .into_inner()
        }
    };
    // A token for another service's audience is still identity's to judge.
    assert!(introspect(token.clone()).await.active);

    // Bad input: named, nothing stored.
    for (id, code, field) in [
        ("", Code::InvalidArgument, "principal_id"),
        ("no-such-principal", Code::NotFound, "principal_id"),
    ] {
        let err = client(&server)
            .revoke_principal(with_token(
                pb::RevokePrincipalRequest {
                    principal_id: id.into(),
                },
                &admin,
            ))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(field), "{err:?}");
    }
    let admin_id = introspect(admin.clone())
        .await
        .actor
        .expect("actor")
        .principal_id;
    let err = client(&server)
        .revoke_principal(with_token(
            pb::RevokePrincipalRequest {
                principal_id: admin_id,
            },
            &admin,
        ))
        .await
        .expect_err("not oneself");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("principal_id"), "{err:?}");
    let err = issue(&server, &app_client, &app_secret, "nowhere")
        .await
        .expect_err("unknown audience");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("audience"), "{err:?}");
    let listed = client(&server)
        .list_revocations(pb::ListRevocationsRequest {})
        .await
        .expect("listed")
        .into_inner();
    assert!(listed.principal_ids.is_empty(), "nothing stored");

    client(&server)
        .revoke_principal(with_token(
            pb::RevokePrincipalRequest {
                principal_id: app_id.clone(),
            },
            &admin,
        ))
        .await
        .expect("revoked");
    let err = issue(&server, &app_client, &app_secret, "")
        .await
        .expect_err("no more tokens");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!introspect(token).await.active);
    let listed = client(&server)
        .list_revocations(pb::ListRevocationsRequest {})
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(listed.principal_ids, [app_id]);
    server.stop().await;
}
