use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sharedcare_kit::{Error, ids::OdsCode};

use super::{
    NhsNumber,
    matching::{Person, PreparedPerson, blocking_keys},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gender {
    #[default]
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Demographics {
    pub given_names: Vec<String>,
    pub family_name: String,
    pub birth_date: NaiveDate,
    pub gender: Gender,
    pub postcode: Option<String>,
    /// Family names held before, newest first (matched too).
    pub previous_family_names: Vec<String>,
    pub death_date: Option<NaiveDate>,
    /// Home address without the postcode.
    pub address_lines: Vec<String>,
    pub telecom: Vec<ContactPoint>,
    /// The registered GP practice.
    pub gp_practice: Option<OdsCode>,
    /// Local identifiers (hospital numbers); the NHS number is apart.
    pub identifiers: Vec<LocalIdentifier>,
    /// Address, telecom and GP practice withheld from callers whose role
    /// lacks `view_restricted`.
    pub restricted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactSystem {
    Phone,
    Email,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPoint {
    pub system: ContactSystem,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalIdentifier {
    pub system: String,
    pub value: String,
    pub issuing_organisation: String,
}

/// The rest of a patient's details as asked, before validation (the
/// names, birth date, gender and postcode go to `Demographics::parse`).
#[derive(Debug, Clone, Default)]
pub struct RawDetails {
    pub previous_family_names: Vec<String>,
    pub death_date: String,
    pub address_lines: Vec<String>,
    /// System (None when unknown) and value.
    pub telecom: Vec<(Option<ContactSystem>, String)>,
    pub gp_practice: String,
    /// System, value, issuing ODS code.
    pub identifiers: Vec<(String, String, String)>,
    pub restricted: bool,
}

const MAX_LIST: usize = 10;
const MAX_ADDRESS_LINES: usize = 5;
const MAX_LINE_CHARS: usize = 100;
const MAX_SYSTEM_CHARS: usize = 200;
const MAX_VALUE_CHARS: usize = 64;
const MAX_EMAIL_CHARS: usize = 254;

fn at_most<T>(field: &str, items: &[T], max: usize) -> Result<(), Error> {
    if items.len() > max {
        return Err(Error::invalid(field, format!("at most {max} entries")));
    }
    Ok(())
}

/// Trimmed text with no control characters, at most `max` characters;
/// `None` when empty.
pub fn plain_text(field: &str, value: &str, max: usize) -> Result<Option<String>, Error> {
    let value = value.trim();
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    if value.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("is at most {max} characters"),
        ));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

fn parse_contact(
    field: &str,
    system: Option<ContactSystem>,
    value: &str,
) -> Result<ContactPoint, Error> {
    let Some(system) = system else {
        return Err(Error::invalid(
            format!("{field}.system"),
            "must be PHONE or EMAIL",
        ));
    };
    let value_field = format!("{field}.value");
    let value = value.trim();
    match system {
        ContactSystem::Phone => {
            let digits = value.chars().filter(char::is_ascii_digit).count();
            let allowed = value
                .chars()
                .all(|c| c.is_ascii_digit() || " +()-".contains(c));
            if !allowed || !(6..=15).contains(&digits) {
                return Err(Error::invalid(
                    value_field,
                    "must be a phone number: 6 to 15 digits, with spaces, +, brackets or hyphens",
                ));
            }
        }
        ContactSystem::Email => {
            let parts: Vec<&str> = value.split('@').collect();
            let ok = parts.len() == 2
                && !parts[0].is_empty()
                && parts[1].contains('.')
                && value.chars().count() <= MAX_EMAIL_CHARS
                && !value.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(Error::invalid(value_field, "must be an email address"));
            }
        }
    }
    Ok(ContactPoint {
        system,
        value: value.to_owned(),
    })
}

impl Demographics {
    /// Adds the rest of the details to names, birth date, gender and
    /// postcode already parsed; `prefix` is the request path.
    pub fn with_details(
        mut self,
        prefix: &str,
        raw: RawDetails,
        today: NaiveDate,
    ) -> Result<Self, Error> {
        let field = format!("{prefix}.previous_family_names");
        at_most(&field, &raw.previous_family_names, MAX_LIST)?;
        self.previous_family_names = raw
            .previous_family_names
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| parse_name(&field, n))
            .collect::<Result<_, _>>()?;
        let field = format!("{prefix}.death_date");
        self.death_date = match raw.death_date.trim() {
            "" => None,
            text => {
                let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map_err(|_| Error::invalid(&field, "must be a date as YYYY-MM-DD"))?;
                if date > today {
                    return Err(Error::invalid(&field, "must not be in the future"));
                }
                if date < self.birth_date {
                    return Err(Error::invalid(&field, "must not be before the birth date"));
                }
                Some(date)
            }
        };
        let field = format!("{prefix}.address_lines");
        at_most(&field, &raw.address_lines, MAX_ADDRESS_LINES)?;
        self.address_lines = raw
            .address_lines
            .iter()
            .map(|l| plain_text(&field, l, MAX_LINE_CHARS))
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()?;
        let field = format!("{prefix}.telecom");
        at_most(&field, &raw.telecom, MAX_LIST)?;
        self.telecom = raw
            .telecom
            .iter()
            .enumerate()
            .map(|(i, (system, value))| parse_contact(&format!("{field}[{i}]"), *system, value))
            .collect::<Result<_, _>>()?;
        self.gp_practice =
            OdsCode::parse_optional(&format!("{prefix}.gp_practice_ods_code"), &raw.gp_practice)?;
        let field = format!("{prefix}.identifiers");
        at_most(&field, &raw.identifiers, MAX_LIST)?;
        self.identifiers = raw
            .identifiers
            .iter()
            .enumerate()
            .map(|(i, (system, value, issuer))| {
                let at = format!("{field}[{i}]");
                let system = plain_text(&format!("{at}.system"), system, MAX_SYSTEM_CHARS)?
                    .filter(|s| s.contains(':'))
                    .ok_or_else(|| Error::invalid(format!("{at}.system"), "must be a URI"))?;
                let value = plain_text(&format!("{at}.value"), value, MAX_VALUE_CHARS)?
                    .ok_or_else(|| Error::invalid(format!("{at}.value"), "is required"))?;
                let issuer = OdsCode::parse(&format!("{at}.issuing_ods_code"), issuer)?;
                Ok(LocalIdentifier {
                    system,
                    value,
                    issuing_organisation: issuer.as_str().to_owned(),
                })
            })
            .collect::<Result<_, Error>>()?;
        self.restricted = raw.restricted;
        Ok(self)
    }
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
            ..Demographics::default()
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
    /// 1 when registered, one more with every change of demographics.
    pub version: i64,
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
        NotSamePerson {
            patients: Self::pair(a, b),
            reason: reason.to_owned(),
            recorded_by: recorded_by.to_owned(),
            recorded_at,
        }
    }

    /// Two patients as a link names them, in order.
    pub fn pair(a: &str, b: &str) -> (String, String) {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        (a.to_owned(), b.to_owned())
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
