//! The demographics matching works on, and their prepared comparison keys.

use chrono::{Datelike, NaiveDate};
use sharedcare_kit::Error;

use super::{NameKey, PartialDate, Postcode};
use crate::domain::{
    Demographics, Gender, NhsNumber,
    patient::{parse_family_name, parse_given_names},
};

/// What is known of a person, as registered or as asked about: names kept
/// exactly as given, any part but the family name and birth year optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub given_names: Vec<String>,
    pub family_name: String,
    /// Family names held before (a maiden name, say), newest first.
    pub previous_family_names: Vec<String>,
    pub birth_date: PartialDate,
    pub gender: Gender,
    pub postcode: Option<Postcode>,
    pub nhs_number: Option<NhsNumber>,
}

impl Person {
    /// A registered patient's demographics as a `Person`. The postcode was
    /// validated when registered; one that no longer parses is left out
    /// rather than failing the match.
    pub fn from_demographics(demographics: &Demographics, nhs_number: Option<NhsNumber>) -> Self {
        Person {
            given_names: demographics.given_names.clone(),
            family_name: demographics.family_name.clone(),
            previous_family_names: demographics.previous_family_names.clone(),
            birth_date: PartialDate::full(demographics.birth_date),
            gender: demographics.gender,
            postcode: demographics
                .postcode
                .as_deref()
                .and_then(|p| Postcode::parse("postcode", p).ok()),
            nhs_number,
        }
    }
}

impl Person {
    /// What a trace asks about, validated: the family name and birth date
    /// (which may be a year, or a year and month) required, the rest
    /// optional; `prefix` is the request path ("demographics").
    #[allow(clippy::too_many_arguments)]
    pub fn parse_query(
        prefix: &str,
        given_names: &[String],
        family_name: &str,
        birth_date: &str,
        gender: Gender,
        postcode: &str,
        nhs_number: Option<NhsNumber>,
        today: NaiveDate,
    ) -> Result<Self, Error> {
        let given_names = parse_given_names(prefix, given_names)?;
        let family_name = parse_family_name(prefix, family_name)?;
        let field = format!("{prefix}.birth_date");
        if birth_date.trim().is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        let birth_date = PartialDate::parse(&field, birth_date)?;
        let in_future = match (birth_date.month(), birth_date.day()) {
            (Some(m), Some(d)) => {
                NaiveDate::from_ymd_opt(birth_date.year(), m, d).is_none_or(|date| date > today)
            }
            (Some(m), None) => (birth_date.year(), m) > (today.year(), today.month()),
            _ => birth_date.year() > today.year(),
        };
        if in_future {
            return Err(Error::invalid(field, "must not be in the future"));
        }
        let postcode = if postcode.trim().is_empty() {
            None
        } else {
            Some(Postcode::parse(&format!("{prefix}.postcode"), postcode)?)
        };
        Ok(Person {
            given_names,
            family_name,
            previous_family_names: Vec::new(),
            birth_date,
            gender,
            postcode,
            nhs_number,
        })
    }
}

/// A `Person` with its names folded and encoded once, so that scoring many
/// candidates does not repeat the work.
#[derive(Debug, Clone)]
pub struct PreparedPerson {
    pub(super) person: Person,
    pub(super) given: Vec<NameKey>,
    pub(super) family: NameKey,
    pub(super) previous_family: Vec<NameKey>,
}

impl PreparedPerson {
    pub fn new(person: Person) -> Self {
        let given = person
            .given_names
            .iter()
            .map(|n| NameKey::new(n))
            .filter(|k| !k.is_empty())
            .collect();
        let family = NameKey::new(&person.family_name);
        let previous_family = person
            .previous_family_names
            .iter()
            .map(|n| NameKey::new(n))
            .filter(|k| !k.is_empty())
            .collect();
        PreparedPerson {
            person,
            given,
            family,
            previous_family,
        }
    }

    pub fn person(&self) -> &Person {
        &self.person
    }

    /// Male or female, the only values two records can agree or disagree on;
    /// "other", "unknown" and unspecified are not compared.
    pub(super) fn binary_gender(&self) -> Option<Gender> {
        match self.person.gender {
            g @ (Gender::Male | Gender::Female) => Some(g),
            _ => None,
        }
    }
}

impl From<Person> for PreparedPerson {
    fn from(person: Person) -> Self {
        PreparedPerson::new(person)
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn demographics_convert_with_their_postcode_parsed() {
        let demographics = Demographics {
            given_names: vec!["Siân".into()],
            family_name: "O'Brien".into(),
            birth_date: NaiveDate::from_ymd_opt(1980, 2, 29).expect("date"),
            gender: Gender::Female,
            postcode: Some("LS1 4AP".into()),
            ..Demographics::default()
        };
        let person = Person::from_demographics(&demographics, None);
        assert_eq!(person.given_names, vec!["Siân"]);
        assert_eq!(
            person.postcode.map(|p| p.to_string()).as_deref(),
            Some("LS1 4AP")
        );
        assert!(person.birth_date.is_full());
    }
}
