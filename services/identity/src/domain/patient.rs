use chrono::{DateTime, NaiveDate, Utc};
use sharedcare_kit::Error;

use super::{
    NhsNumber,
    matching::{Person, PreparedPerson, blocking_keys},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gender {
    Unspecified,
    Male,
    Female,
    Other,
    Unknown,
}

impl Gender {
    pub fn as_str(self) -> &'static str {
        match self {
            Gender::Unspecified => "unspecified",
            Gender::Male => "male",
            Gender::Female => "female",
            Gender::Other => "other",
            Gender::Unknown => "unknown",
        }
    }

    pub fn from_stored(s: &str) -> Gender {
        match s {
            "male" => Gender::Male,
            "female" => Gender::Female,
            "other" => Gender::Other,
            "unknown" => Gender::Unknown,
            _ => Gender::Unspecified,
        }
    }
}

/// What a patient tells us about themselves, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demographics {
    pub given_names: Vec<String>,
    pub family_name: String,
    pub birth_date: NaiveDate,
    pub gender: Gender,
    pub postcode: Option<String>,
}

const MAX_NAME_CHARS: usize = 100;
const MAX_GIVEN_NAMES: usize = 10;

impl Demographics {
    /// Validates raw fields; `prefix` is the request path ("demographics").
    pub fn parse(
        prefix: &str,
        given_names: &[String],
        family_name: &str,
        birth_date: &str,
        gender: Gender,
        postcode: &str,
        today: NaiveDate,
    ) -> Result<Self, Error> {
        let given_names = parse_given_names(prefix, given_names)?;
        if given_names.is_empty() {
            return Err(Error::invalid(
                format!("{prefix}.given_names"),
                "at least one given name is required",
            ));
        }
        let family_name = parse_family_name(prefix, family_name)?;
        let birth_date =
            NaiveDate::parse_from_str(birth_date.trim(), "%Y-%m-%d").map_err(|_| {
                Error::invalid(
                    format!("{prefix}.birth_date"),
                    "must be a date as YYYY-MM-DD",
                )
            })?;
        if birth_date > today {
            return Err(Error::invalid(
                format!("{prefix}.birth_date"),
                "must not be in the future",
            ));
        }
        let postcode = parse_postcode(&format!("{prefix}.postcode"), postcode)?;
        Ok(Demographics {
            given_names,
            family_name,
            birth_date,
            gender,
            postcode,
        })
    }
}

/// Given names trimmed, empty ones dropped, each checked by [`parse_name`].
pub(super) fn parse_given_names(
    prefix: &str,
    given_names: &[String],
) -> Result<Vec<String>, Error> {
    let field = format!("{prefix}.given_names");
    if given_names.len() > MAX_GIVEN_NAMES {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_GIVEN_NAMES} given names"),
        ));
    }
    given_names
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| parse_name(&field, n))
        .collect()
}

/// The family name, required, checked by [`parse_name`].
pub(super) fn parse_family_name(prefix: &str, family_name: &str) -> Result<String, Error> {
    let field = format!("{prefix}.family_name");
    if family_name.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    parse_name(&field, family_name)
}

/// A name trimmed and kept exactly as written, in any script ("Siân",
/// "Nguyễn", "王"): no control characters, at most `MAX_NAME_CHARS`.
fn parse_name(field: &str, name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(
            field,
            format!("a name is at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

impl Demographics {
    /// Whether details given again for a registered NHS number are this
    /// patient's: the same date of birth and family name, the name compared
    /// without regard to case, spacing or accents ("Siân" is "SIAN"). What
    /// registering again may return, and nothing else.
    pub fn matches(&self, given: &Demographics) -> bool {
        self.birth_date == given.birth_date
            && fold_name(&self.family_name) == fold_name(&given.family_name)
    }
}

/// A name reduced for comparison as matching folds it: case, spacing,
/// accents, hyphens and apostrophes aside ("O'Brien" is "OBRIEN").
pub fn fold_name(name: &str) -> String {
    super::matching::NameKey::new(name).key().to_owned()
}

/// The postcode as `matching::Postcode` normalises it ("LS1 4AP"); `None`
/// when none is given.
pub(super) fn parse_postcode(field: &str, input: &str) -> Result<Option<String>, Error> {
    if input.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(
        super::matching::Postcode::parse(field, input)?.to_string(),
    ))
}

/// A patient in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    pub id: String,
    pub nhs_number: NhsNumber,
    pub demographics: Demographics,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub superseded_by: Option<String>,
}

/// A person's decision that two patients are not the same person: every
/// later match honours it. `patients` are in order, so a pair is one link
/// whichever way round it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSamePerson {
    pub patients: (String, String),
    /// Why, in the words of whoever decided (sealed at rest).
    pub reason: String,
    /// The principal who decided.
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

impl NotSamePerson {
    pub fn new(
        a: &str,
        b: &str,
        reason: &str,
        recorded_by: &str,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        NotSamePerson {
            patients: (a.to_owned(), b.to_owned()),
            reason: reason.to_owned(),
            recorded_by: recorded_by.to_owned(),
            recorded_at,
        }
    }

    /// The other patient of the pair, if `id` is one of them.
    pub fn other(&self, id: &str) -> Option<&str> {
        if self.patients.0 == id {
            Some(&self.patients.1)
        } else if self.patients.1 == id {
            Some(&self.patients.0)
        } else {
            None
        }
    }
}

impl Patient {
    /// The patient as matching compares them.
    pub fn person(&self) -> Person {
        Person::from_demographics(&self.demographics, Some(self.nhs_number.clone()))
    }

    /// The keys a store finds this patient's candidates under (as blind
    /// indexes where demographics are sealed).
    pub fn blocking_keys(&self) -> Vec<String> {
        blocking_keys(&PreparedPerson::new(self.person()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 24).expect("date")
    }

    fn parse(
        given: &[&str],
        family: &str,
        dob: &str,
        postcode: &str,
    ) -> Result<Demographics, Error> {
        let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
        Demographics::parse(
            "demographics",
            &given,
            family,
            dob,
            Gender::Female,
            postcode,
            today(),
        )
    }

    #[test]
    fn valid_demographics_are_normalised() {
        let d = parse(&[" Jane ", ""], "Smith", "1980-02-29", "ls14ap").expect("valid");
        assert_eq!(d.given_names, vec!["Jane"]);
        assert_eq!(d.postcode.as_deref(), Some("LS1 4AP"));
    }

    #[test]
    fn registered_details_match_whatever_the_case_spacing_or_accents() {
        let stored = parse(&["Jane"], "Siân", "1980-02-29", "").expect("valid");
        for family in ["SIAN", "sian", " Si an ", "SIÂN"] {
            let given = parse(&["J"], family, "1980-02-29", "").expect("valid");
            assert!(stored.matches(&given), "{family}");
        }
        let obrien = parse(&["Pat"], "O'Brien", "1970-01-01", "").expect("valid");
        for family in ["o'brien", "O\u{2019}BRIEN"] {
            let given = parse(&["Pat"], family, "1970-01-01", "").expect("valid");
            assert!(obrien.matches(&given), "{family}");
        }
        let smith = parse(&["Jane"], " Smith ", "1980-02-29", "").expect("valid");
        let given = parse(&["Jane"], "smith", "1980-02-29", "LS1 4AP").expect("valid");
        assert!(smith.matches(&given));
    }

    #[test]
    fn other_details_do_not_match() {
        let stored = parse(&["Jane"], "Smith", "1980-02-29", "").expect("valid");
        let other_dob = parse(&["Jane"], "Smith", "1980-03-01", "").expect("valid");
        assert!(!stored.matches(&other_dob));
        let other_name = parse(&["Jane"], "Smyth", "1980-02-29", "").expect("valid");
        assert!(!stored.matches(&other_name));
        assert_eq!(fold_name("Ｓｍｉｔｈ"), "smith");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                parse(&[], "Smith", "1980-01-01", ""),
                "demographics.given_names",
            ),
            (
                parse(&["Jane"], " ", "1980-01-01", ""),
                "demographics.family_name",
            ),
            (
                parse(&["Jane"], "Smith", "01/01/1980", ""),
                "demographics.birth_date",
            ),
            (
                parse(&["Jane"], "Smith", "2030-01-01", ""),
                "demographics.birth_date",
            ),
            (
                parse(&["Jane"], "Smith", "1981-02-29", ""),
                "demographics.birth_date",
            ),
            (
                parse(&["Jane"], "Smith", "1980-01-01", "NOT A CODE"),
                "demographics.postcode",
            ),
        ];
        for (result, field) in cases {
            let err = result.expect_err(field);
            assert_eq!(err.field.as_deref(), Some(field));
        }
    }
}
