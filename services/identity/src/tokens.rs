//! Issuing access tokens: EdDSA JWTs with key id, subject, organisation,
//! role, scopes, purpose of use, audience and expiry.

use sharedcare_kit::{
    Error,
    auth::{Claims, kind_to_str, purpose_to_str},
    keys::SigningKey,
};
use sharedcare_proto::{common::v1::Purpose, identity::v1::Jwk};

use crate::domain::Principal;

pub struct TokenIssuer {
    key: SigningKey,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

/// A signed token and when it stops being valid.
pub struct IssuedToken {
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl TokenIssuer {
    pub fn new(key: SigningKey, issuer: &str, audience: &str, ttl_secs: i64) -> Self {
        TokenIssuer {
            key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
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

    pub fn issue(
        &self,
        principal: &Principal,
        scopes: &[String],
        purpose: Purpose,
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
            org: principal.organisation.as_str().to_owned(),
            role: principal.role.clone(),
            scope: scopes.join(" "),
            pou: purpose_to_str(purpose).to_owned(),
        };
        Ok(IssuedToken {
            token: self.key.sign(&claims)?,
            expires_at,
        })
    }
}
