//! Identifiers and short texts taken from requests.

use std::fmt;

use sharedcare_kit::Error;

/// Longest identifier or code we accept (patient ids, directive ids, roles).
pub const MAX_ID_CHARS: usize = 64;

/// A required identifier: trimmed, non-empty, at most [`MAX_ID_CHARS`].
pub fn required_id(field: &str, value: &str) -> Result<String, Error> {
    optional_text(field, value, MAX_ID_CHARS)?.ok_or_else(|| Error::invalid(field, "is required"))
}

/// An optional text: trimmed, `None` when empty, at most `max_chars`.
pub fn optional_text(field: &str, value: &str, max_chars: usize) -> Result<Option<String>, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > max_chars {
        return Err(Error::invalid(
            field,
            format!("is at most {max_chars} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(Some(value.to_owned()))
}

/// The patient's id in the patient index (identity's `patient_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatientId(String);

impl PatientId {
    pub fn parse(field: &str, input: &str) -> Result<Self, Error> {
        required_id(field, input).map(PatientId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
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
    fn ods_codes_are_upper_cased_and_bounded() {
        assert_eq!(
            OdsCode::parse("o", " a81001 ").expect("valid").as_str(),
            "A81001"
        );
        assert_eq!(OdsCode::parse("o", "RR8").expect("valid").as_str(), "RR8");
        for bad in ["", "R8", "A810011", "A8-001", "A81 01"] {
            let err = OdsCode::parse("organisation_ods_code", bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("organisation_ods_code"));
        }
        assert_eq!(OdsCode::parse_optional("o", "  ").expect("empty"), None);
    }

    #[test]
    fn patient_ids_are_required_and_bounded() {
        assert_eq!(
            PatientId::parse("patient_id", " p-1 ")
                .expect("valid")
                .as_str(),
            "p-1"
        );
        assert!(PatientId::parse("patient_id", "").is_err());
        assert!(PatientId::parse("patient_id", &"x".repeat(64)).is_ok());
        let err = PatientId::parse("patient_id", &"x".repeat(65)).expect_err("too long");
        assert!(err.message.starts_with("patient_id"), "{}", err.message);
        assert!(PatientId::parse("patient_id", "a\u{0}b").is_err());
    }
}
