//! Calling another sharedcare service: lazy channels, this service's own
//! token (client credentials, cached until shortly before it expires), and
//! outgoing requests that carry it, the trace context and a deadline.

use std::time::Duration;

use sharedcare_proto::{
    common::v1::Purpose,
    identity::v1::{IssueTokenRequest, identity_service_client::IdentityServiceClient},
};
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{Error, config::Secret};

/// A channel that connects on first use, so services start in any order.
pub fn lazy_channel(url: &str) -> Result<Channel, Error> {
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|_| Error::invalid("url", "not a valid URL"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Where a service gets the token it calls other services with.
pub trait ServiceTokens: Send + Sync + 'static {
    fn token(&self) -> crate::peers::BoxFuture<'_, String>;
}

impl ServiceTokens for TokenSource {
    fn token(&self) -> crate::peers::BoxFuture<'_, String> {
        Box::pin(TokenSource::token(self))
    }
}

/// This service's access token, from identity with client credentials.
pub struct TokenSource {
    client: IdentityServiceClient<Channel>,
    client_id: String,
    client_secret: Secret,
    cached: Mutex<Option<(String, chrono::DateTime<chrono::Utc>)>>,
}

impl TokenSource {
    /// This service's credentials from its `auth` configuration.
    pub fn from_config(identity: Channel, cfg: &crate::config::AuthConfig) -> Result<Self, Error> {
        let secret = cfg
            .client_secret
            .resolve("auth.client_secret")
            .map_err(|e| Error::invalid("auth.client_secret", e.to_string()))?
            .unwrap_or_else(|| Secret::new(""));
        Ok(TokenSource::new(
            identity,
            cfg.client_id.clone().unwrap_or_default(),
            secret,
        ))
    }

    pub fn new(identity: Channel, client_id: String, client_secret: Secret) -> Self {
        TokenSource {
            client: IdentityServiceClient::new(identity),
            client_id,
            client_secret,
            cached: Mutex::new(None),
        }
    }

    /// A token valid for at least another minute.
    pub async fn token(&self) -> Result<String, Error> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && *expires - chrono::Duration::seconds(60) > chrono::Utc::now()
        {
            return Ok(token.clone());
        }
        let mut request = tonic::Request::new(IssueTokenRequest {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose().to_owned(),
            scopes: vec![],
            // A service acts for no purpose of its own: its calls carry the
            // end user's.
            purpose: Purpose::Unspecified as i32,
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(5));
        let response = self
            .client
            .clone()
            .issue_token(request)
            .await
            .map_err(|s| Error::from(s).context("getting this service's token from identity"))?
            .into_inner();
        let expires = crate::proto_time::from_proto("expire_time", response.expire_time.as_ref())
            .ok()
            .flatten()
            .unwrap_or_else(chrono::Utc::now);
        *cached = Some((response.access_token.clone(), expires));
        Ok(response.access_token)
    }
}

/// The client span of one call to `path` (`<rpc.service>/<rpc.method>`),
/// after OpenTelemetry's `rpc.*` conventions: build the request inside it
/// (so its `traceparent` names this span, the callee's parent) and make the
/// call inside it; [`answered`] records the status code.
pub fn call_span(path: &'static str) -> tracing::Span {
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    tracing::info_span!(
        "grpc.call",
        otel.name = path,
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    )
}

/// Records a call's status code on the current (client) span.
pub fn answered<T>(result: Result<T, tonic::Status>) -> Result<T, tonic::Status> {
    let code = match &result {
        Ok(_) => 0,
        Err(status) => status.code() as i32,
    };
    tracing::Span::current().record("rpc.grpc.status_code", code);
    result
}

/// An outgoing request carrying this service's token, the current trace
/// context and a deadline.
pub async fn request<T>(
    message: T,
    tokens: &dyn ServiceTokens,
    timeout: Duration,
) -> Result<tonic::Request<T>, Error> {
    let mut request = stream_request(message, tokens).await?;
    request.set_timeout(timeout);
    Ok(request)
}

/// Like [`request`] but with no deadline: for a stream meant to stay open.
pub async fn stream_request<T>(
    message: T,
    tokens: &dyn ServiceTokens,
) -> Result<tonic::Request<T>, Error> {
    let token = tokens.token().await?;
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::internal("building the authorization header", "token is not ASCII"))?;
    request.metadata_mut().insert("authorization", value);
    crate::telemetry::inject_trace_context(request.metadata_mut());
    Ok(request)
}

/// Polls `grpc.health.v1` until the server reports SERVING (up to ~10 s),
/// backing off between tries: readiness without blind sleeps.
pub async fn wait_until_serving(channel: Channel) -> Result<(), Error> {
    let mut client = HealthClient::new(channel);
    let mut delay = Duration::from_millis(5);
    for _ in 0..40 {
        if let Ok(response) = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            && response.into_inner().status == ServingStatus::Serving as i32
        {
            return Ok(());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
    Err(Error::unavailable("service never reported SERVING"))
}
