//! Dates of birth, possibly partial (a year, or a year and month), and how
//! two of them agree: exactly, as far as both are given, with day and month
//! swapped, or with one digit mistyped.

use chrono::{Datelike, NaiveDate};
use sharedcare_kit::Error;

/// A date of birth known to the year, the month or the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartialDate {
    year: i32,
    month: Option<u32>,
    day: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateAgreement {
    /// Both full and equal.
    Exact,
    /// At least one is partial; they agree on what both give.
    AsFarAsGiven {
        month_known: bool,
    },
    /// Day and month swapped (3 April / 4 March), the year equal.
    DayMonthSwapped,
    /// One digit of the day or month differs, the year equal.
    OneDigitDayOrMonth,
    /// One digit of the year differs, day and month equal: a typo, or a
    /// parent and child born on the same day of the year.
    OneDigitYear,
    Disagree,
}

impl PartialDate {
    pub fn full(date: NaiveDate) -> Self {
        PartialDate {
            year: date.year(),
            month: Some(date.month()),
            day: Some(date.day()),
        }
    }

    pub fn year_only(year: i32) -> Self {
        PartialDate {
            year,
            month: None,
            day: None,
        }
    }

    /// A year and month; `None` if the month is not 1–12.
    pub fn year_month(year: i32, month: u32) -> Option<Self> {
        (1..=12).contains(&month).then_some(PartialDate {
            year,
            month: Some(month),
            day: None,
        })
    }

    /// Parses "YYYY", "YYYY-MM" or "YYYY-MM-DD"; `field` names the request
    /// field in the error.
    pub fn parse(field: &str, input: &str) -> Result<Self, Error> {
        let input = input.trim();
        let bad = || Error::invalid(field, "must be a date as YYYY, YYYY-MM or YYYY-MM-DD");
        let parts: Vec<&str> = input.split('-').collect();
        let year_of = |s: &str| -> Result<i32, Error> {
            if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        match parts.as_slice() {
            [y] => Ok(PartialDate::year_only(year_of(y)?)),
            [y, m] if m.len() == 2 => {
                let month: u32 = m.parse().map_err(|_| bad())?;
                PartialDate::year_month(year_of(y)?, month).ok_or_else(bad)
            }
            // chrono's %Y also reads a signed year of any length
            // ("+12345"): the year is four digits here as in the other forms.
            [y, _, _] => {
                year_of(y)?;
                NaiveDate::parse_from_str(input, "%Y-%m-%d")
                    .map(PartialDate::full)
                    .map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn month(&self) -> Option<u32> {
        self.month
    }

    pub fn day(&self) -> Option<u32> {
        self.day
    }

    pub fn is_full(&self) -> bool {
        self.day.is_some()
    }

    /// "YYYY-MM-DD" for a full date, "YYYY-MM" or "YYYY" otherwise.
    pub fn as_key(&self) -> String {
        match (self.month, self.day) {
            (Some(m), Some(d)) => format!("{:04}-{m:02}-{d:02}", self.year),
            (Some(m), None) => format!("{:04}-{m:02}", self.year),
            _ => format!("{:04}", self.year),
        }
    }

    /// The year with day and month in ascending order, so a date and its
    /// day/month swap share one key; `None` unless full.
    pub fn swap_invariant_key(&self) -> Option<String> {
        let (m, d) = (self.month?, self.day?);
        Some(format!("{:04}-{:02}-{:02}", self.year, m.min(d), m.max(d)))
    }

    pub fn compare(&self, other: &PartialDate) -> DateAgreement {
        match (self.month, self.day, other.month, other.day) {
            (Some(m1), Some(d1), Some(m2), Some(d2)) => {
                if self.year == other.year && m1 == m2 && d1 == d2 {
                    DateAgreement::Exact
                } else if self.year == other.year && m1 == d2 && d1 == m2 {
                    DateAgreement::DayMonthSwapped
                } else {
                    let digits_differing = digits_differing(self, other);
                    if digits_differing == 1 && self.year == other.year {
                        DateAgreement::OneDigitDayOrMonth
                    } else if digits_differing == 1 {
                        DateAgreement::OneDigitYear
                    } else {
                        DateAgreement::Disagree
                    }
                }
            }
            _ => {
                let months_agree = match (self.month, other.month) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if self.year == other.year && months_agree {
                    DateAgreement::AsFarAsGiven {
                        month_known: self.month.is_some() && other.month.is_some(),
                    }
                } else {
                    DateAgreement::Disagree
                }
            }
        }
    }
}

/// How many of the eight digits of YYYYMMDD differ.
fn digits_differing(a: &PartialDate, b: &PartialDate) -> usize {
    a.as_key()
        .bytes()
        .zip(b.as_key().bytes())
        .filter(|(x, y)| x != y)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> PartialDate {
        PartialDate::parse("birth_date", s).expect(s)
    }

    #[test]
    fn full_dates_agree_exactly_swapped_or_by_one_digit() {
        assert_eq!(
            d("1980-04-03").compare(&d("1980-04-03")),
            DateAgreement::Exact
        );
        assert_eq!(
            d("1980-04-03").compare(&d("1980-03-04")),
            DateAgreement::DayMonthSwapped
        );
        assert_eq!(
            d("1980-04-13").compare(&d("1980-04-18")),
            DateAgreement::OneDigitDayOrMonth
        );
        assert_eq!(
            d("1980-04-13").compare(&d("1990-04-13")),
            DateAgreement::OneDigitYear
        );
        assert_eq!(
            d("1980-04-13").compare(&d("1981-05-13")),
            DateAgreement::Disagree
        );
        // a parent and child: different years, days and months
        assert_eq!(
            d("1962-07-21").compare(&d("1991-02-09")),
            DateAgreement::Disagree
        );
    }

    #[test]
    fn partial_dates_agree_where_given() {
        assert_eq!(
            d("1980").compare(&d("1980-04-03")),
            DateAgreement::AsFarAsGiven { month_known: false }
        );
        assert_eq!(
            d("1980-04-03").compare(&d("1980-04")),
            DateAgreement::AsFarAsGiven { month_known: true }
        );
        assert_eq!(
            d("1980-05").compare(&d("1980-04-03")),
            DateAgreement::Disagree
        );
        assert_eq!(d("1981").compare(&d("1980-04-03")), DateAgreement::Disagree);
    }

    #[test]
    fn malformed_dates_are_rejected_naming_the_field() {
        for bad in [
            "",
            "80",
            "1980-4",
            "1980-13",
            "1981-02-29",
            "3/4/1980",
            "1980-04-03-01",
            "+12345-01-01",
            "+1980-04-03",
            "12345-01-01",
        ] {
            let err = PartialDate::parse("patient.birth_date", bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("patient.birth_date"), "{bad}");
        }
    }

    #[test]
    fn a_swapped_date_shares_its_swap_invariant_key() {
        assert_eq!(
            d("1980-04-03").swap_invariant_key(),
            d("1980-03-04").swap_invariant_key()
        );
        assert_eq!(d("1980-04").swap_invariant_key(), None);
        assert_eq!(d("1980-04").as_key(), "1980-04");
    }
}
