//! Identifiers every service shares, built only valid.

use std::fmt;

use crate::Error;

const MAX_ID_CHARS: usize = 64;

/// A patient's id as issued by identity: a FHIR id,
/// `[A-Za-z0-9\-\.]{1,64}`, so it can stand in `Patient/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatientId(String);

impl PatientId {
    pub fn parse(field: &str, input: &str) -> Result<Self, Error> {
        if input.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if input.len() > MAX_ID_CHARS
            || !input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(Error::invalid(
                field,
                format!("must be up to {MAX_ID_CHARS} letters, digits, '-' or '.'"),
            ));
        }
        Ok(PatientId(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Organisation Data Service code: 3–6 letters and digits, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OdsCode(String);

impl OdsCode {
    /// Accepts any case; keeps upper case.
    pub fn parse(field: &str, input: &str) -> Result<Self, Error> {
        Self::parse_optional(field, input)?.ok_or_else(|| Error::invalid(field, "is required"))
    }

    /// As [`OdsCode::parse`], but empty means "none".
    pub fn parse_optional(field: &str, input: &str) -> Result<Option<Self>, Error> {
        let code = input.trim().to_ascii_uppercase();
        if code.is_empty() {
            return Ok(None);
        }
        if !(3..=6).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::invalid(
                field,
                "an ODS code is 3 to 6 letters and digits",
            ));
        }
        Ok(Some(OdsCode(code)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OdsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_ids_are_fhir_ids() {
        assert!(PatientId::parse("patient_id", "0192f1c2-aaaa-7bbb-8ccc-0123456789ab").is_ok());
        let err = PatientId::parse("patient_id", "a/b").expect_err("slash");
        assert_eq!(err.field.as_deref(), Some("patient_id"));
        assert!(PatientId::parse("patient_id", "").is_err());
        assert!(PatientId::parse("patient_id", &"a".repeat(65)).is_err());
        assert!(PatientId::parse("patient_id", "p\n1").is_err());
    }

    #[test]
    fn ods_codes_are_upper_cased_and_bounded() {
        assert_eq!(
            OdsCode::parse("o", "a81001").expect("valid").as_str(),
            "A81001"
        );
        assert_eq!(OdsCode::parse("o", "RR8").expect("valid").as_str(), "RR8");
        assert!(OdsCode::parse("o", "R8").is_err());
        assert!(OdsCode::parse("o", "A810011").is_err());
        assert!(OdsCode::parse("o", "A8-001").is_err());
        assert!(OdsCode::parse("o", "").is_err());
        assert_eq!(OdsCode::parse_optional("o", " ").expect("none"), None);
    }
}
