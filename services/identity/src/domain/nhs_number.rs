//! The NHS number: ten digits, the tenth a Modulus 11 check digit.

use std::fmt;

use sharedcare_kit::Error;

/// A valid NHS number, stored as ten digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NhsNumber(String);

impl NhsNumber {
    /// Parses an NHS number, accepting spaces ("943 476 5919"). `field` names
    /// the request field in errors.
    pub fn parse(field: &str, input: &str) -> Result<Self, Error> {
        let digits: String = input.chars().filter(|c| *c != ' ').collect();
        if digits.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid(field, "must be 10 digits"));
        }
        let d: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
        if d.iter().all(|x| *x == d[0]) {
            return Err(Error::invalid(
                field,
                "a number of one repeated digit is never issued",
            ));
        }
        let sum: u32 = d[..9]
            .iter()
            .zip((2..=10).rev())
            .map(|(digit, weight)| digit * weight)
            .sum();
        let check = match 11 - (sum % 11) {
            11 => 0,
            10 => {
                return Err(Error::invalid(
                    field,
                    "is not a valid NHS number (no check digit exists for it)",
                ));
            }
            c => c,
        };
        if check != d[9] {
            return Err(Error::invalid(field, "check digit is wrong"));
        }
        Ok(NhsNumber(digits))
    }

    /// Ten digits, no spaces.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is in the range used for test patients (999…).
    pub fn is_test_range(&self) -> bool {
        self.0.starts_with("999")
    }
}

/// Shown as `943 476 5919`.
impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", &self.0[..3], &self.0[3..6], &self.0[6..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_numbers_parse_with_or_without_spaces() {
        assert_eq!(
            NhsNumber::parse("n", "9434765919").expect("valid").as_str(),
            "9434765919"
        );
        let spaced = NhsNumber::parse("n", "943 476 5919").expect("valid");
        assert_eq!(spaced.as_str(), "9434765919");
        assert_eq!(spaced.to_string(), "943 476 5919");
    }

    #[test]
    fn wrong_check_digit_is_rejected() {
        let err = NhsNumber::parse("nhs_number", "9434765918").expect_err("invalid");
        assert_eq!(err.field.as_deref(), Some("nhs_number"));
        assert!(err.message.contains("check digit"));
    }

    fn weighted_sum(body: &str) -> u32 {
        body.bytes()
            .zip((2..=10).rev())
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum()
    }

    fn body_with_remainder(remainder: u32) -> String {
        (0..1000u32)
            .map(|i| format!("999000{i:03}"))
            .find(|b| weighted_sum(b) % 11 == remainder)
            .expect("some body has this remainder")
    }

    #[test]
    fn a_check_digit_of_ten_means_no_such_number() {
        // Remainder 1 → 11 - 1 = 10: invalid whatever the tenth digit.
        let body = body_with_remainder(1);
        for last in 0..=9 {
            assert!(NhsNumber::parse("n", &format!("{body}{last}")).is_err());
        }
    }

    #[test]
    fn a_check_digit_of_eleven_means_zero() {
        let body = body_with_remainder(0);
        let n = NhsNumber::parse("n", &format!("{body}0")).expect("valid");
        assert!(n.is_test_range());
        assert!(NhsNumber::parse("n", &format!("{body}1")).is_err());
    }

    #[test]
    fn repeated_digits_and_bad_shapes_are_rejected() {
        assert!(NhsNumber::parse("n", "0000000000").is_err());
        assert!(NhsNumber::parse("n", "1111111111").is_err());
        assert!(NhsNumber::parse("n", "943476591").is_err());
        assert!(NhsNumber::parse("n", "94347659199").is_err());
        assert!(NhsNumber::parse("n", "943-476-5919").is_err());
        assert!(NhsNumber::parse("n", "").is_err());
    }
}
