//! Reaching the services from the command line: their URLs (from the base
//! port unless given), lazy channels (plaintext, or mutual TLS for https://
//! URLs when a certificate was given), and requests carrying the bearer token.

use std::time::Duration;

use anyhow::{Context, anyhow};
use sharedcare_proto::{
    audit::v1::audit_service_client::AuditServiceClient,
    consent::v1::consent_service_client::ConsentServiceClient,
    identity::v1::identity_service_client::IdentityServiceClient,
    records::v1::records_service_client::RecordsServiceClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::{cli::GlobalArgs, ports::Ports};

/// Longest a command waits for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The four services as the command line was told to find them.
#[derive(Debug, Clone)]
pub struct Services {
    pub identity_url: String,
    pub consent_url: String,
    pub records_url: String,
    pub audit_url: String,
    token: Option<String>,
    /// Presented to https:// services; plaintext http:// needs none.
    tls: Option<sharedcare_kit::tls::Tls>,
}

impl Services {
    pub fn from_args(args: &GlobalArgs) -> Self {
        let ports = Ports::from_base(args.base_port);
        let or_port = |url: &Option<String>, port| url.clone().unwrap_or_else(|| Ports::url(port));
        Services {
            identity_url: or_port(&args.identity_url, ports.identity),
            consent_url: or_port(&args.consent_url, ports.consent),
            records_url: or_port(&args.records_url, ports.records),
            audit_url: or_port(&args.audit_url, ports.audit),
            token: args.token.clone().filter(|t| !t.trim().is_empty()),
            tls: None,
        }
    }

    /// The same services, reaching https:// URLs over mutual TLS with `tls`.
    pub fn with_tls(&self, tls: Option<sharedcare_kit::tls::Tls>) -> Self {
        Services {
            tls,
            ..self.clone()
        }
    }

    /// A lazy channel to `url`: mutual TLS for https:// (a certificate must
    /// have been given), plaintext for http://.
    pub fn channel(&self, url: &str) -> anyhow::Result<Channel> {
        match (&self.tls, url.starts_with("https://")) {
            (Some(tls), true) => tls
                .channel(url)
                .map_err(|e| anyhow!("`{url}`: {}", e.message)),
            (None, true) => Err(anyhow!(
                "`{url}` is https://: give the client certificate (--tls-ca, --tls-cert, --tls-key)"
            )),
            (_, false) => channel(url),
        }
    }

    pub fn identity(&self) -> anyhow::Result<IdentityServiceClient<Channel>> {
        self.channel(&self.identity_url)
            .map(IdentityServiceClient::new)
    }

    pub fn consent(&self) -> anyhow::Result<ConsentServiceClient<Channel>> {
        self.channel(&self.consent_url)
            .map(ConsentServiceClient::new)
    }

    pub fn records(&self) -> anyhow::Result<RecordsServiceClient<Channel>> {
        self.channel(&self.records_url)
            .map(RecordsServiceClient::new)
    }

    pub fn audit(&self) -> anyhow::Result<AuditServiceClient<Channel>> {
        self.channel(&self.audit_url).map(AuditServiceClient::new)
    }

    /// The same services, calling with `token`.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Services {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// The token given by `--token` or `SHAREDCARE_TOKEN`.
    pub fn token(&self) -> anyhow::Result<&str> {
        self.token.as_deref().ok_or_else(|| {
            anyhow!(
                "no access token: pass --token or set SHAREDCARE_TOKEN, e.g. \
                 export SHAREDCARE_TOKEN=$(sharedcare token --client-id <id> --client-secret <secret>)"
            )
        })
    }
}

/// A channel that connects on first use.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("`{url}` is not a valid URL"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A request without credentials (token issuing), with a deadline.
pub fn plain<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// A request carrying `authorization: Bearer <token>`, with a deadline.
pub fn bearer<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = plain(message);
    let value = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| anyhow!("the access token holds characters a header cannot carry"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(base_port: u16) -> GlobalArgs {
        GlobalArgs {
            base_port,
            identity_url: None,
            consent_url: Some("http://consent.example:9000".into()),
            records_url: None,
            audit_url: None,
            token: Some("  ".into()),
        }
    }

    #[test]
    fn urls_follow_the_base_port_unless_given() {
        let services = Services::from_args(&args(41000));
        assert_eq!(services.identity_url, "http://127.0.0.1:41000");
        assert_eq!(services.consent_url, "http://consent.example:9000");
        assert_eq!(services.records_url, "http://127.0.0.1:41002");
        assert_eq!(services.audit_url, "http://127.0.0.1:41003");
        assert!(services.token().is_err(), "a blank token is no token");
    }

    #[test]
    fn requests_carry_the_bearer_token() {
        let request = bearer((), "abc.def.ghi\n").expect("ascii");
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer abc.def.ghi")
        );
        assert!(bearer((), "bad\u{7}token").is_err());
    }
}
