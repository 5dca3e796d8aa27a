//! Issuing access tokens: EdDSA JWTs with key id, subject, organisation,
//! role, scopes, purposes of use, capabilities, the bound patient, audience
//! and expiry. Also identity's own service token, for calling consent and
//! audit.

use std::{collections::BTreeSet, sync::Arc};

use sharedcare_kit::{
    Error,
    access::Capability,
    auth::{Claims, kind_to_str, purpose_to_str},
    client::ServiceTokens,
    keys::SigningKey,
};
use sharedcare_proto::{
    common::v1::{PrincipalKind, Purpose},
    identity::v1::Jwk,
};
use tokio::sync::Mutex;

use crate::domain::Principal;

pub struct TokenIssuer {
    key: SigningKey,
    issuer: String,
    audience: String,
    ttl_secs: i64,
    limit: Option<IssueLimit>,
}

/// IssueToken calls per client: a burst of a minute's worth, then evenly.
/// Keyed by the client id as asked (before the secret is checked), so
/// guessing a client's secret is slowed as much as over-asking.
struct IssueLimit {
    limiter: governor::DefaultKeyedRateLimiter<String>,
    per_minute: u32,
    calls: std::sync::atomic::AtomicU64,
}

/// Calls between forgetting clients whose limit has refilled, so ids made
/// up by a caller do not pile up.
const FORGET_EVERY: u64 = 4096;

/// A signed token and when it stops being valid.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl TokenIssuer {
    /// Limits IssueToken to `per_minute` calls per client (none below 1).
    pub fn with_issue_limit(mut self, per_minute: u32) -> Self {
        self.limit = std::num::NonZeroU32::new(per_minute).map(|n| IssueLimit {
            limiter: governor::RateLimiter::keyed(governor::Quota::per_minute(n)),
            per_minute,
            calls: std::sync::atomic::AtomicU64::new(0),
        });
        self
    }

    /// Whether `client_id` may ask for a token now: RESOURCE_EXHAUSTED past
    /// its limit.
    pub fn admit(&self, client_id: &str) -> Result<(), Error> {
        let Some(limit) = &self.limit else {
            return Ok(());
        };
        let calls = limit
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if calls % FORGET_EVERY == FORGET_EVERY - 1 {
            limit.limiter.retain_recent();
        }
        limit.limiter.check_key(&client_id.to_owned()).map_err(|_| {
            Error::resource_exhausted(format!(
                "IssueToken: this client asked for more than {} tokens a minute; a token \
                     lasts until it expires, so reuse it",
                limit.per_minute
            ))
            .with_reason("RATE_LIMITED")
        })
    }

    pub fn new(key: SigningKey, issuer: &str, audience: &str, ttl_secs: i64) -> Self {
        TokenIssuer {
            key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
            limit: None,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The public keys that verify our tokens.
    pub fn jwks(&self) -> Vec<Jwk> {
        vec![self.key.jwk()]
    }

    /// A token for `principal` with these scopes, default purpose (`None`:
    /// the principal has none) and capabilities. It carries all the
    /// principal's permitted purposes, and its patient for a patient; its
    /// display name and its organisation's name for access reports (not a
    /// patient's name: tokens travel through proxies and logs).
    pub fn issue(
        &self,
        principal: &Principal,
        organisation_name: &str,
        scopes: &[String],
        purpose: Option<Purpose>,
        capabilities: &BTreeSet<Capability>,
    ) -> Result<IssuedToken, Error> {
        let now = chrono::Utc::now();
        let expires_at = now + chrono::Duration::seconds(self.ttl_secs);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: principal.id.clone(),
            aud: self.audience.clone(),
            exp: expires_at.timestamp(),
            iat: now.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            kind: kind_to_str(principal.kind).to_owned(),
            org: principal
                .organisation
                .as_ref()
                .map(|o| o.as_str().to_owned())
                .unwrap_or_default(),
            role: principal.role.clone(),
            scope: scopes.join(" "),
            pou: purpose.map(purpose_to_str).unwrap_or_default().to_owned(),
            pous: principal
                .purposes
                .iter()
                .map(|p| purpose_to_str(*p).to_owned())
                .collect(),
            caps: capabilities.iter().map(|c| c.as_str().to_owned()).collect(),
            pat: principal.patient_id.clone().unwrap_or_default(),
            name: if principal.kind == PrincipalKind::Patient {
                String::new()
            } else {
                principal.display_name.clone()
            },
            org_name: organisation_name.to_owned(),
        };
        Ok(IssuedToken {
            token: self.key.sign(&claims)?,
            expires_at,
        })
    }
}

/// The scopes identity's own token carries: asking consent, writing audit.
const SELF_SCOPES: &[&str] = &["consent.evaluate", "audit.append"];

/// identity's own service token, signed by itself (identity has no client
/// credentials to exchange): subject "identity", no organisation, no
/// purposes (it states its end user's purpose in each call). Cached until a
/// minute before it expires.
pub struct SelfTokens {
    issuer: Arc<TokenIssuer>,
    principal: Principal,
    cached: Mutex<Option<IssuedToken>>,
}

impl SelfTokens {
    pub fn new(issuer: Arc<TokenIssuer>) -> Self {
        let principal = Principal {
            id: crate::SERVICE_NAME.to_owned(),
            kind: PrincipalKind::Service,
            display_name: "identity".to_owned(),
            organisation: None,
            role: String::new(),
            scopes: SELF_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            purposes: vec![],
            patient_id: None,
            client_id: String::new(),
            secret_hash: vec![],
            created_at: chrono::Utc::now(),
        };
        SelfTokens {
            issuer,
            principal,
            cached: Mutex::new(None),
        }
    }

    /// A token valid for at least another minute.
    pub async fn token(&self) -> Result<String, Error> {
        let mut cached = self.cached.lock().await;
        if let Some(issued) = cached.as_ref()
            && issued.expires_at - chrono::Duration::seconds(60) > chrono::Utc::now()
        {
            return Ok(issued.token.clone());
        }
        let issued = self.issuer.issue(
            &self.principal,
            "",
            &self.principal.scopes,
            None,
            &BTreeSet::new(),
        )?;
        let token = issued.token.clone();
        *cached = Some(issued);
        Ok(token)
    }
}

impl ServiceTokens for SelfTokens {
    fn token(&self) -> sharedcare_kit::peers::BoxFuture<'_, String> {
        Box::pin(SelfTokens::token(self))
    }
}
