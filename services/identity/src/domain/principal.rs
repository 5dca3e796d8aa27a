use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sharedcare_kit::Error;
use sharedcare_proto::common::v1::PrincipalKind;
use subtle::ConstantTimeEq;

use super::OdsCode;

/// An organisation known by its ODS code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organisation {
    pub ods_code: OdsCode,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A staff member in a role, an application or a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalKind,
    pub display_name: String,
    pub organisation: OdsCode,
    pub role: String,
    pub scopes: Vec<String>,
    pub client_id: String,
    /// SHA-256 of the client secret. Secrets are 256 random bits, so a fast
    /// hash is enough: there is nothing to guess by brute force.
    pub secret_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

/// Every scope the platform knows. A token carries a subset.
pub const KNOWN_SCOPES: &[&str] = &[
    "admin",
    "patients.read",
    "patients.write",
    "records.read",
    "records.write",
    "consent.read",
    "consent.write",
    "consent.evaluate",
    "audit.read",
    "audit.append",
];

/// Scopes a principal of this kind gets when none are asked for.
pub fn default_scopes(kind: PrincipalKind) -> Vec<String> {
    let scopes: &[&str] = match kind {
        PrincipalKind::Admin => &[
            "admin",
            "patients.read",
            "patients.write",
            "consent.read",
            "consent.write",
            "audit.read",
        ],
        PrincipalKind::Staff => &[
            "patients.read",
            "patients.write",
            "records.read",
            "records.write",
            "consent.read",
            "consent.write",
        ],
        PrincipalKind::Application => &["patients.read", "records.read", "records.write"],
        PrincipalKind::Service => &["patients.read", "consent.evaluate", "audit.append"],
        PrincipalKind::Unspecified => &[],
    };
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

/// Checks every scope is known; `field` names the request field.
pub fn validate_scopes(field: &str, scopes: &[String]) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if !KNOWN_SCOPES.contains(&scope.as_str()) {
            return Err(Error::invalid(field, format!("unknown scope `{scope}`")));
        }
        if !out.contains(scope) {
            out.push(scope.clone());
        }
    }
    Ok(out)
}

/// A client secret: shown once, stored as a hash.
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        ClientSecret(hex::encode(bytes))
    }

    pub fn from_string(s: String) -> Self {
        ClientSecret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// Compares in constant time.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        self.hash().ct_eq(stored_hash).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_their_hash() {
        let secret = ClientSecret::generate();
        let hash = secret.hash();
        assert!(secret.matches(&hash));
        assert!(!ClientSecret::from_string("guess".into()).matches(&hash));
    }

    #[test]
    fn unknown_scopes_are_named() {
        let err = validate_scopes("scopes", &["records.read".into(), "root".into()])
            .expect_err("unknown");
        assert!(err.message.contains("root"));
    }
}
