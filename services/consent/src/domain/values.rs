//! Identifiers and short texts taken from requests.

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

pub use sharedcare_kit::ids::{OdsCode, PatientId};
