//! UK postcodes: parsed into outward and inward codes so that two addresses
//! can agree on the full code, the sector ("LS1 4") or the district ("LS1").

use std::fmt;

use sharedcare_kit::Error;

/// A well-formed UK postcode, upper case, e.g. outward "LS1", inward "4AP".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Postcode {
    outward: String,
    inward: String,
}

/// How far two postcodes agree, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostcodeAgreement {
    Full,
    Sector,
    District,
    Disagree,
}

impl Postcode {
    /// Parses "ls14ap", "LS1 4AP" or " ls1  4ap " alike; `field` names the
    /// request field in the error.
    pub fn parse(field: &str, input: &str) -> Result<Self, Error> {
        let compact: String = input
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if compact.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if !compact.is_ascii() || !(5..=7).contains(&compact.len()) {
            return Err(Error::invalid(field, "is not a UK postcode"));
        }
        let (outward, inward) = compact.split_at(compact.len() - 3);
        if !valid_outward(outward) || !valid_inward(inward) {
            return Err(Error::invalid(field, "is not a UK postcode"));
        }
        Ok(Postcode {
            outward: outward.to_owned(),
            inward: inward.to_owned(),
        })
    }

    pub fn outward(&self) -> &str {
        &self.outward
    }

    pub fn inward(&self) -> &str {
        &self.inward
    }

    /// The district: the outward code ("LS1").
    pub fn district(&self) -> &str {
        &self.outward
    }

    /// The sector: the outward code and the inward code's digit ("LS1 4").
    pub fn sector(&self) -> String {
        format!("{} {}", self.outward, &self.inward[..1])
    }

    pub fn compare(&self, other: &Postcode) -> PostcodeAgreement {
        if self == other {
            PostcodeAgreement::Full
        } else if self.outward != other.outward {
            PostcodeAgreement::Disagree
        } else if self.inward[..1] == other.inward[..1] {
            PostcodeAgreement::Sector
        } else {
            PostcodeAgreement::District
        }
    }
}

impl fmt::Display for Postcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.outward, self.inward)
    }
}

/// The outward code's shapes: A9, A99, AA9, AA99, A9A, AA9A (A a letter,
/// 9 a digit).
fn valid_outward(outward: &str) -> bool {
    let b = outward.as_bytes();
    let letter = |i: usize| b.get(i).is_some_and(u8::is_ascii_alphabetic);
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    match b.len() {
        2 => letter(0) && digit(1),
        3 => letter(0) && ((digit(1) && (digit(2) || letter(2))) || (letter(1) && digit(2))),
        4 => letter(0) && letter(1) && digit(2) && (digit(3) || letter(3)),
        _ => false,
    }
}

/// The inward code: a digit and two letters ("4AP").
fn valid_inward(inward: &str) -> bool {
    let b = inward.as_bytes();
    b.len() == 3
        && b[0].is_ascii_digit()
        && b[1].is_ascii_alphabetic()
        && b[2].is_ascii_alphabetic()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(s: &str) -> Postcode {
        Postcode::parse("postcode", s).expect(s)
    }

    #[test]
    fn postcodes_are_normalised_whatever_the_case_or_spacing() {
        assert_eq!(pc("ls14ap").to_string(), "LS1 4AP");
        assert_eq!(pc(" ls1  4ap ").to_string(), "LS1 4AP");
        assert_eq!(pc("SW1A1AA").to_string(), "SW1A 1AA");
        assert_eq!(pc("m11ae").to_string(), "M1 1AE");
        assert_eq!(pc("B152TT").to_string(), "B15 2TT");
        assert_eq!(pc("EC1A 1BB").outward(), "EC1A");
        assert_eq!(pc("EC1A 1BB").inward(), "1BB");
    }

    #[test]
    fn malformed_postcodes_are_rejected_naming_the_field() {
        for bad in [
            "",
            "NOT A CODE",
            "LS1",
            "12345",
            "LS1 AAP",
            "LS1 4A1",
            "1S1 4AP",
            "LSS1 4AP",
            "LS123 4AP",
            "LS1 4APX",
            "ŁS1 4AP",
            "L 4AP",
        ] {
            let err = Postcode::parse("patient.postcode", bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("patient.postcode"), "{bad}");
        }
    }

    #[test]
    fn postcodes_agree_in_full_by_sector_or_by_district() {
        let home = pc("LS1 4AP");
        assert_eq!(home.compare(&pc("ls14ap")), PostcodeAgreement::Full);
        assert_eq!(home.compare(&pc("LS1 4BB")), PostcodeAgreement::Sector);
        assert_eq!(home.compare(&pc("LS1 5AP")), PostcodeAgreement::District);
        assert_eq!(home.compare(&pc("LS11 4AP")), PostcodeAgreement::Disagree);
        assert_eq!(home.sector(), "LS1 4");
        assert_eq!(home.district(), "LS1");
    }
}
