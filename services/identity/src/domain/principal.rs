use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sharedcare_kit::Error;
use sharedcare_proto::common::v1::{PrincipalKind, Purpose};
use subtle::ConstantTimeEq;

use super::OdsCode;

/// An organisation known by its ODS code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organisation {
    pub ods_code: OdsCode,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A staff member in a role, an application, a service or a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub kind: PrincipalKind,
    pub display_name: String,
    /// The organisation it acts for; `None` only for patients.
    pub organisation: Option<OdsCode>,
    pub role: String,
    pub scopes: Vec<String>,
    /// The purposes its tokens may name, fixed at creation; the first is the
    /// default.
    pub purposes: Vec<Purpose>,
    /// For a patient principal: the patient it is bound to.
    pub patient_id: Option<String>,
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
    // The national opt-out service: SetNationalOptOut for any patient.
    "consent.national_opt_out",
    // A platform service asking whether a token is still active.
    "tokens.introspect",
    "audit.read",
    "audit.append",
];

/// Scopes a principal of this kind gets when none are asked for: what the
/// kind needs and no more. Admin administers organisations and principals
/// only; staff's sensitive rows are gated by their role's capabilities; an
/// organisation's PAS application is created with explicit scopes
/// (`patients.write`, `consent.write`).
pub fn default_scopes(kind: PrincipalKind) -> Vec<String> {
    let scopes: &[&str] = match kind {
        PrincipalKind::Admin => &["admin"],
        PrincipalKind::Staff => &[
            "patients.read",
            "patients.write",
            "records.read",
            "records.write",
            "consent.read",
            "consent.write",
            "audit.read",
        ],
        PrincipalKind::Application => &["patients.read", "records.read", "records.write"],
        PrincipalKind::Service => &["patients.read", "consent.evaluate", "audit.append"],
        PrincipalKind::Patient => PATIENT_SCOPES,
        PrincipalKind::Unspecified => &[],
    };
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

/// Everything a patient principal may hold: their own demographics, record,
/// directives and access report.
const PATIENT_SCOPES: &[&str] = &[
    "patients.read",
    "records.read",
    "consent.read",
    "consent.write",
    "audit.read",
];

/// Checks scopes asked for a principal of `kind`: known, `admin` only from
/// bootstrap (`bootstrap` true), a patient's only among [`PATIENT_SCOPES`].
pub fn scopes_for_kind(
    field: &str,
    kind: PrincipalKind,
    scopes: &[String],
    bootstrap: bool,
) -> Result<Vec<String>, Error> {
    if scopes.is_empty() {
        return Ok(default_scopes(kind));
    }
    let scopes = validate_scopes(field, scopes)?;
    if !bootstrap && scopes.iter().any(|s| s == "admin") {
        return Err(Error::invalid(
            field,
            "`admin` is granted only by bootstrap",
        ));
    }
    if kind == PrincipalKind::Patient
        && let Some(extra) = scopes
            .iter()
            .find(|s| !PATIENT_SCOPES.contains(&s.as_str()))
    {
        return Err(Error::invalid(
            field,
            format!("scope `{extra}` is not for patient principals"),
        ));
    }
    Ok(scopes)
}

/// Purposes a principal of this kind may name when none are given: direct
/// care for staff and applications, patient access for patients, none for
/// services and admin (a service acts for its end user's purpose, which it
/// states in each call; admin touches no patient data).
pub fn default_purposes(kind: PrincipalKind) -> Vec<Purpose> {
    match kind {
        PrincipalKind::Staff | PrincipalKind::Application => vec![Purpose::DirectCare],
        PrincipalKind::Patient => vec![Purpose::PatientAccess],
        PrincipalKind::Service | PrincipalKind::Admin | PrincipalKind::Unspecified => vec![],
    }
}

/// Checks the purposes asked for a principal of `kind` (empty: the kind's
/// default). Patient access is for patients only, and is all a patient may
/// have; services and admin have none. Order is kept (the first is the
/// tokens' default), duplicates dropped.
pub fn purposes_for_kind(
    field: &str,
    kind: PrincipalKind,
    purposes: &[Purpose],
) -> Result<Vec<Purpose>, Error> {
    if purposes.is_empty() {
        return Ok(default_purposes(kind));
    }
    let mut out = Vec::with_capacity(purposes.len());
    for &purpose in purposes {
        let name = sharedcare_kit::auth::purpose_to_str(purpose);
        let allowed = match kind {
            _ if purpose == Purpose::Unspecified => {
                return Err(Error::invalid(field, "a purpose must be specified"));
            }
            PrincipalKind::Patient => purpose == Purpose::PatientAccess,
            PrincipalKind::Staff | PrincipalKind::Application => purpose != Purpose::PatientAccess,
            PrincipalKind::Service | PrincipalKind::Admin | PrincipalKind::Unspecified => false,
        };
        if !allowed {
            return Err(Error::invalid(
                field,
                format!(
                    "purpose `{name}` is not allowed for a {} principal",
                    sharedcare_kit::auth::kind_to_str(kind)
                ),
            ));
        }
        if !out.contains(&purpose) {
            out.push(purpose);
        }
    }
    Ok(out)
}

/// Purposes from the wire: INVALID_ARGUMENT naming `field` for a value
/// that is no purpose.
pub fn purposes_from_pb(field: &str, values: &[i32]) -> Result<Vec<Purpose>, Error> {
    values
        .iter()
        .map(|&v| {
            Purpose::try_from(v).map_err(|_| Error::invalid(field, format!("unknown purpose {v}")))
        })
        .collect()
}

/// Purposes by name (bootstrap file, stored rows): INVALID_ARGUMENT naming
/// `field` for an unknown name.
pub fn purposes_from_names(field: &str, names: &[String]) -> Result<Vec<Purpose>, Error> {
    names
        .iter()
        .map(|n| {
            sharedcare_kit::auth::purpose_from_str(n.trim())
                .ok_or_else(|| Error::invalid(field, format!("unknown purpose `{n}`")))
        })
        .collect()
}

const MAX_ROLE_CHARS: usize = 64;

/// A role code: free text (national RBAC codes such as `R8000`, or platform
/// roles such as `privacy-officer`) but bounded: 1–64 letters, digits, `.`,
/// `_` or `-`. Its capabilities come from identity's role map.
pub fn parse_role(field: &str, input: &str) -> Result<String, Error> {
    let role = input.trim();
    if role.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if role.chars().count() > MAX_ROLE_CHARS {
        return Err(Error::invalid(
            field,
            format!("is at most {MAX_ROLE_CHARS} characters"),
        ));
    }
    if !role
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(Error::invalid(
            field,
            "is not a role code (letters, digits, `.`, `_` and `-` only)",
        ));
    }
    Ok(role.to_owned())
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
    fn purposes_follow_the_kind() {
        use PrincipalKind::*;
        assert_eq!(
            purposes_for_kind("purposes", Staff, &[]).expect("default"),
            vec![Purpose::DirectCare]
        );
        assert_eq!(
            purposes_for_kind("purposes", Patient, &[]).expect("default"),
            vec![Purpose::PatientAccess]
        );
        assert!(
            purposes_for_kind("purposes", Service, &[])
                .expect("none")
                .is_empty()
        );
        assert_eq!(
            purposes_for_kind(
                "purposes",
                Application,
                &[Purpose::Research, Purpose::Research]
            )
            .expect("research body"),
            vec![Purpose::Research]
        );
        for (kind, purpose) in [
            (Staff, Purpose::PatientAccess),
            (Patient, Purpose::DirectCare),
            (Service, Purpose::DirectCare),
            (Staff, Purpose::Unspecified),
        ] {
            let err = purposes_for_kind("purposes", kind, &[purpose]).expect_err("refused");
            assert_eq!(err.field.as_deref(), Some("purposes"));
        }
        assert!(purposes_from_pb("purposes", &[99]).is_err());
        assert!(purposes_from_names("purposes", &["marketing".into()]).is_err());
    }

    #[test]
    fn patients_hold_only_patient_scopes_and_admin_comes_from_bootstrap() {
        use PrincipalKind::*;
        let err = scopes_for_kind("scopes", Patient, &["records.write".into()], false)
            .expect_err("not a patient scope");
        assert!(err.message.contains("records.write"));
        assert!(scopes_for_kind("scopes", Service, &["admin".into()], false).is_err());
        assert!(scopes_for_kind("scopes", Admin, &["admin".into()], true).is_ok());
        assert_eq!(default_scopes(Admin), vec!["admin".to_owned()]);
    }

    #[test]
    fn roles_are_bounded_codes() {
        assert_eq!(parse_role("role", " R8000 ").expect("code"), "R8000");
        assert!(parse_role("role", "privacy-officer").is_ok());
        assert!(parse_role("role", "").is_err());
        assert!(parse_role("role", "R8000; drop").is_err());
        assert!(parse_role("role", &"R".repeat(65)).is_err());
    }

    #[test]
    fn unknown_scopes_are_named() {
        let err = validate_scopes("scopes", &["records.read".into(), "root".into()])
            .expect_err("unknown");
        assert!(err.message.contains("root"));
    }
}
