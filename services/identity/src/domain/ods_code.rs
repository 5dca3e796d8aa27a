use std::fmt;

use sharedcare_kit::Error;

/// An Organisation Data Service code: 3–6 letters and digits, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OdsCode(String);

impl OdsCode {
    /// Accepts any case; stores upper case.
    pub fn parse(field: &str, input: &str) -> Result<Self, Error> {
        let code = input.trim().to_ascii_uppercase();
        if code.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if !(3..=6).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::invalid(
                field,
                "an ODS code is 3 to 6 letters and digits",
            ));
        }
        Ok(OdsCode(code))
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
    fn codes_are_upper_cased_and_bounded() {
        assert_eq!(
            OdsCode::parse("o", "a81001").expect("valid").as_str(),
            "A81001"
        );
        assert_eq!(OdsCode::parse("o", "RR8").expect("valid").as_str(), "RR8");
        assert!(OdsCode::parse("o", "R8").is_err());
        assert!(OdsCode::parse("o", "A810011").is_err());
        assert!(OdsCode::parse("o", "A8-001").is_err());
    }
}
