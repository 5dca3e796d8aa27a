//! Fellegi–Sunter scoring. Each field's agreement level adds its weight
//! log2(m/u): m the chance of that level when two records are the same
//! person, u when they are two different people (among records that share a
//! blocking key). The sum is normalised to [0, 1] over the range from every
//! field disagreeing to every field agreeing exactly, so 1.0 means exact on
//! every field. Hard rules ("vetoes") keep a pair the weights favour from an
//! automatic match where a wrong merge is likely: twins, parent and child,
//! two NHS numbers.

use super::{DateAgreement, NameAgreement, NameKey, PostcodeAgreement, PreparedPerson};

/// From this score, with no veto, a pair is a match: 30.4 bits, just above
/// the same names and date of birth at an unrelated postcode with no NHS
/// number (29.6 bits, 0.593), which may be two people and so stays possible.
pub const MATCH_THRESHOLD: f64 = 0.60;
/// From this score (or a vetoed match) a pair is a possible match, for a
/// person to decide: 13.8 bits, about a date of birth and one name agreeing.
pub const POSSIBLE_THRESHOLD: f64 = 0.45;

/// The m and u probabilities of one agreement level.
#[derive(Debug, Clone, Copy)]
struct Mu {
    m: f64,
    u: f64,
}

impl Mu {
    fn weight(self) -> f64 {
        (self.m / self.u).log2()
    }
}

const fn mu(m: f64, u: f64) -> Mu {
    Mu { m, u }
}

// NHS number: a wrong number of some other valid patient is rare (1 in 10^4
// records typed), and two records of different people share one only by a
// typo that passes Modulus 11 (taken as 1 in 10^9).
const NHS_AGREE: Mu = mu(0.99, 1e-9);
const NHS_DISAGREE: Mu = mu(1e-4, 1.0);
// Given name: ~1 in 200 different people share a first given name.
const GIVEN_EXACT: Mu = mu(0.85, 0.005);
const GIVEN_NICKNAME: Mu = mu(0.05, 0.001);
const GIVEN_SIMILAR: Mu = mu(0.04, 0.004);
const GIVEN_INITIAL: Mu = mu(0.02, 0.008);
const GIVEN_OTHER_NAME: Mu = mu(0.02, 0.004);
const GIVEN_DISAGREE: Mu = mu(0.03, 0.98);
// Family name: ~1 in 500 share one; ~5 in 100 of a person's records carry a
// new family name with the old one recorded as previous.
const FAMILY_EXACT: Mu = mu(0.88, 0.002);
const FAMILY_PREVIOUS: Mu = mu(0.05, 0.0005);
const FAMILY_SIMILAR: Mu = mu(0.04, 0.003);
const FAMILY_PART: Mu = mu(0.02, 0.001);
const FAMILY_DISAGREE: Mu = mu(0.03, 0.995);
// Given and family names transposed: the pattern is as rare among
// different people as agreeing on both, so it is split between the two.
const NAME_TRANSPOSED: Mu = mu(0.1, 0.003);
// Date of birth: 1 in ~29,200 (80 years of days) for different people.
const DOB_EXACT: Mu = mu(0.93, 1.0 / 29_200.0);
const DOB_SWAPPED: Mu = mu(0.01, 1.0 / 29_200.0);
const DOB_ONE_DIGIT: Mu = mu(0.03, 5e-4);
const DOB_ONE_DIGIT_YEAR: Mu = mu(0.01, 2e-4);
const DOB_YEAR_MONTH: Mu = mu(0.9, 1.0 / 960.0);
const DOB_YEAR: Mu = mu(0.9, 1.0 / 80.0);
const DOB_DISAGREE: Mu = mu(0.02, 1.0);
// Gender, male or female only.
const GENDER_AGREE: Mu = mu(0.98, 0.5);
const GENDER_DISAGREE: Mu = mu(0.02, 0.5);
// Postcode: ~1 in 5 records of a person follow a move.
const POSTCODE_FULL: Mu = mu(0.7, 1e-4);
const POSTCODE_SECTOR: Mu = mu(0.05, 0.002);
const POSTCODE_DISTRICT: Mu = mu(0.05, 0.01);
const POSTCODE_DISAGREE: Mu = mu(0.2, 0.99);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    NhsNumber,
    GivenName,
    FamilyName,
    BirthDate,
    Gender,
    Postcode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    Agree,
    Partial,
    Disagree,
    /// Missing from one record or both: no evidence either way.
    NotCompared,
}

/// One field's part in a score: the explainable trace.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldResult {
    pub field: Field,
    pub agreement: Agreement,
    /// How it agreed: "exact", "nickname", "day/month swapped", …
    pub how: &'static str,
    pub weight: f64,
}

/// What matching decided about one candidate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairLevel {
    Match,
    Possible,
    NoMatch,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchScore {
    /// The sum of the fields' weights (bits of evidence).
    pub weight: f64,
    /// `weight` normalised to [0, 1].
    pub score: f64,
    pub fields: Vec<FieldResult>,
    /// Why this pair may not be matched automatically, whatever its score.
    pub veto: Option<&'static str>,
}

impl MatchScore {
    pub fn level(&self) -> PairLevel {
        if self.score >= MATCH_THRESHOLD && self.veto.is_none() {
            PairLevel::Match
        } else if self.score >= POSSIBLE_THRESHOLD {
            PairLevel::Possible
        } else {
            PairLevel::NoMatch
        }
    }

    pub fn field(&self, field: Field) -> Option<&FieldResult> {
        self.fields.iter().find(|f| f.field == field)
    }

    fn agreement(&self, field: Field) -> Agreement {
        self.field(field)
            .map_or(Agreement::NotCompared, |f| f.agreement)
    }
}

/// The outcome of matching one person against their candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<T> {
    /// One confident candidate: safe to return automatically.
    Match(T),
    /// Candidates for a person to choose among, best first; never guessed.
    Possible(Vec<T>),
    NoMatch,
}

/// Decides among scored candidates: a match only when exactly one candidate
/// is at match level; several at match level, or any possible, are
/// possibles.
pub fn decide<T: Clone>(scored: &[(T, MatchScore)]) -> Decision<T> {
    let mut ranked: Vec<&(T, MatchScore)> = scored
        .iter()
        .filter(|(_, s)| s.level() != PairLevel::NoMatch)
        .collect();
    ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    let matches: Vec<&T> = ranked
        .iter()
        .filter(|(_, s)| s.level() == PairLevel::Match)
        .map(|(t, _)| t)
        .collect();
    match matches.as_slice() {
        [only] => Decision::Match((*only).clone()),
        _ if ranked.is_empty() => Decision::NoMatch,
        _ => Decision::Possible(ranked.into_iter().map(|(t, _)| t.clone()).collect()),
    }
}

fn result(field: Field, agreement: Agreement, how: &'static str, mu: Mu) -> FieldResult {
    FieldResult {
        field,
        agreement,
        how,
        weight: mu.weight(),
    }
}

fn not_compared(field: Field) -> FieldResult {
    FieldResult {
        field,
        agreement: Agreement::NotCompared,
        how: "missing",
        weight: 0.0,
    }
}

/// Scores a pair; symmetric in `a` and `b`.
pub fn score(a: &PreparedPerson, b: &PreparedPerson) -> MatchScore {
    let (pa, pb) = (a.person(), b.person());
    let nhs = match (&pa.nhs_number, &pb.nhs_number) {
        (Some(x), Some(y)) if x == y => {
            result(Field::NhsNumber, Agreement::Agree, "exact", NHS_AGREE)
        }
        (Some(_), Some(_)) => result(
            Field::NhsNumber,
            Agreement::Disagree,
            "different numbers",
            NHS_DISAGREE,
        ),
        _ => not_compared(Field::NhsNumber),
    };
    let (given, family) = names(a, b);
    let dob = match pa.birth_date.compare(&pb.birth_date) {
        DateAgreement::Exact => result(Field::BirthDate, Agreement::Agree, "exact", DOB_EXACT),
        DateAgreement::AsFarAsGiven { month_known: true } => result(
            Field::BirthDate,
            Agreement::Partial,
            "year and month",
            DOB_YEAR_MONTH,
        ),
        DateAgreement::AsFarAsGiven { month_known: false } => {
            result(Field::BirthDate, Agreement::Partial, "year", DOB_YEAR)
        }
        DateAgreement::DayMonthSwapped => result(
            Field::BirthDate,
            Agreement::Partial,
            "day/month swapped",
            DOB_SWAPPED,
        ),
        DateAgreement::OneDigitDayOrMonth => result(
            Field::BirthDate,
            Agreement::Partial,
            "one digit of day or month",
            DOB_ONE_DIGIT,
        ),
        DateAgreement::OneDigitYear => result(
            Field::BirthDate,
            Agreement::Partial,
            "one digit of year",
            DOB_ONE_DIGIT_YEAR,
        ),
        DateAgreement::Disagree => result(
            Field::BirthDate,
            Agreement::Disagree,
            "different",
            DOB_DISAGREE,
        ),
    };
    let gender = match (a.binary_gender(), b.binary_gender()) {
        (Some(x), Some(y)) if x == y => {
            result(Field::Gender, Agreement::Agree, "exact", GENDER_AGREE)
        }
        (Some(_), Some(_)) => result(
            Field::Gender,
            Agreement::Disagree,
            "different",
            GENDER_DISAGREE,
        ),
        _ => not_compared(Field::Gender),
    };
    let postcode = match (&pa.postcode, &pb.postcode) {
        (Some(x), Some(y)) => match x.compare(y) {
            PostcodeAgreement::Full => {
                result(Field::Postcode, Agreement::Agree, "exact", POSTCODE_FULL)
            }
            PostcodeAgreement::Sector => result(
                Field::Postcode,
                Agreement::Partial,
                "sector",
                POSTCODE_SECTOR,
            ),
            PostcodeAgreement::District => result(
                Field::Postcode,
                Agreement::Partial,
                "district",
                POSTCODE_DISTRICT,
            ),
            PostcodeAgreement::Disagree => result(
                Field::Postcode,
                Agreement::Disagree,
                "different",
                POSTCODE_DISAGREE,
            ),
        },
        _ => not_compared(Field::Postcode),
    };
    let fields = vec![nhs, given, family, dob, gender, postcode];
    let weight: f64 = fields.iter().map(|f| f.weight).sum();
    let (min, max) = weight_range();
    let mut scored = MatchScore {
        weight,
        score: ((weight - min) / (max - min)).clamp(0.0, 1.0),
        fields,
        veto: None,
    };
    scored.veto = veto(&scored);
    scored
}

/// Pairs never matched automatically, however high their score. With one
/// NHS number on both, one of given name, family name and date of birth
/// may disagree (a new surname, a mistyped date); two may not (a mistyped
/// number that is someone else's).
fn veto(s: &MatchScore) -> Option<&'static str> {
    let nhs = s.agreement(Field::NhsNumber);
    if nhs == Agreement::Disagree {
        return Some("different NHS numbers");
    }
    // A first name that is only the other's middle name is a twin as often
    // as someone going by their middle name.
    let given_differ = s
        .field(Field::GivenName)
        .is_some_and(|f| f.agreement == Agreement::Disagree || f.how == "another given name");
    let family_differ = s.agreement(Field::FamilyName) == Agreement::Disagree;
    // a one-digit year slip is also a parent and child born on one day
    let years_differ = s
        .field(Field::BirthDate)
        .is_some_and(|f| f.agreement == Agreement::Disagree || f.how == "one digit of year");
    if nhs == Agreement::Agree {
        let differing = [given_differ, family_differ, years_differ]
            .iter()
            .filter(|d| **d)
            .count();
        return (differing >= 2).then_some("the NHS number agrees but the details do not");
    }
    // A family name alone may differ: a marriage not recorded as such, or
    // a short name mistyped; the score weighs it.
    if given_differ {
        // twins: same family name, date of birth and address
        Some("given names differ")
    } else if years_differ {
        // parent and child of one name
        Some("dates of birth differ")
    } else {
        None
    }
}

/// The lowest and highest possible sums: every field disagreeing, every
/// field exact.
fn weight_range() -> (f64, f64) {
    let min = [
        NHS_DISAGREE,
        GIVEN_DISAGREE,
        FAMILY_DISAGREE,
        DOB_DISAGREE,
        GENDER_DISAGREE,
        POSTCODE_DISAGREE,
    ]
    .iter()
    .map(|m| m.weight())
    .sum();
    let max = [
        NHS_AGREE,
        GIVEN_EXACT,
        FAMILY_EXACT,
        DOB_EXACT,
        GENDER_AGREE,
        POSTCODE_FULL,
    ]
    .iter()
    .map(|m| m.weight())
    .sum();
    (min, max)
}

/// Given and family names, with transposition and previous family names.
fn names(a: &PreparedPerson, b: &PreparedPerson) -> (FieldResult, FieldResult) {
    let given = compare_given(&a.given, &b.given);
    let family = compare_family(a, b);
    let given_weak = matches!(given.agreement, Agreement::Disagree);
    let family_weak = matches!(family.agreement, Agreement::Disagree);
    if (given_weak || family_weak) && transposed(a, b) {
        return (
            result(
                Field::GivenName,
                Agreement::Partial,
                "transposed with family name",
                NAME_TRANSPOSED,
            ),
            result(
                Field::FamilyName,
                Agreement::Partial,
                "transposed with given name",
                NAME_TRANSPOSED,
            ),
        );
    }
    (given, family)
}

fn transposed(a: &PreparedPerson, b: &PreparedPerson) -> bool {
    // Both names crossing over is strong evidence in itself, so one typo
    // in a shorter name is allowed as well ("Hutn" for "Hunt").
    let close = |x: &NameKey, y: &NameKey| {
        matches!(
            x.compare(y, false),
            NameAgreement::Exact | NameAgreement::Similar
        ) || (x.is_latin()
            && y.is_latin()
            && x.key().len().min(y.key().len()) >= 4
            && strsim::osa_distance(x.key(), y.key()) <= 1)
    };
    // the given name in the family slot may be a nickname of the other's
    let close_given =
        |x: &NameKey, y: &NameKey| close(x, y) || x.compare(y, true) == NameAgreement::Nickname;
    match (a.given.first(), b.given.first()) {
        (Some(ag), Some(bg)) => {
            close(ag, &b.family) && close_given(&a.family, bg)
                || close(&a.family, bg) && close_given(ag, &b.family)
        }
        _ => false,
    }
}

fn compare_given(a: &[NameKey], b: &[NameKey]) -> FieldResult {
    let (Some(first_a), Some(first_b)) = (a.first(), b.first()) else {
        return not_compared(Field::GivenName);
    };
    let partial = |how, mu| result(Field::GivenName, Agreement::Partial, how, mu);
    match first_a.compare(first_b, true) {
        NameAgreement::Exact => {
            return result(Field::GivenName, Agreement::Agree, "exact", GIVEN_EXACT);
        }
        NameAgreement::Nickname => return partial("nickname", GIVEN_NICKNAME),
        NameAgreement::Similar | NameAgreement::Part => return partial("similar", GIVEN_SIMILAR),
        NameAgreement::Initial => return partial("initial", GIVEN_INITIAL),
        NameAgreement::Disagree => {}
    }
    // The first names differ. Middle names that agree (with a first name
    // mistyped beyond recognition) still say something; a first name that
    // is the other's middle name too, but it is also the mark of a twin.
    let agrees = |x: &NameKey, y: &NameKey| {
        matches!(
            x.compare(y, true),
            NameAgreement::Exact | NameAgreement::Nickname
        )
    };
    let middle_agrees = a
        .iter()
        .skip(1)
        .any(|x| b.iter().skip(1).any(|y| agrees(x, y)));
    let crossed = b.iter().skip(1).any(|y| agrees(first_a, y))
        || a.iter().skip(1).any(|x| agrees(x, first_b));
    if middle_agrees {
        partial("middle name", GIVEN_OTHER_NAME)
    } else if crossed {
        partial("another given name", GIVEN_OTHER_NAME)
    } else {
        result(
            Field::GivenName,
            Agreement::Disagree,
            "different",
            GIVEN_DISAGREE,
        )
    }
}

fn compare_family(a: &PreparedPerson, b: &PreparedPerson) -> FieldResult {
    let direct = a.family.compare(&b.family, false);
    if direct == NameAgreement::Exact {
        return result(Field::FamilyName, Agreement::Agree, "exact", FAMILY_EXACT);
    }
    let previous = a
        .previous_family
        .iter()
        .any(|p| matches!(p.compare(&b.family, false), NameAgreement::Exact))
        || b.previous_family
            .iter()
            .any(|p| matches!(p.compare(&a.family, false), NameAgreement::Exact));
    if previous {
        return result(
            Field::FamilyName,
            Agreement::Partial,
            "previous family name",
            FAMILY_PREVIOUS,
        );
    }
    match direct {
        NameAgreement::Part => result(
            Field::FamilyName,
            Agreement::Partial,
            "part of a double-barrelled name",
            FAMILY_PART,
        ),
        NameAgreement::Similar => result(
            Field::FamilyName,
            Agreement::Partial,
            "similar",
            FAMILY_SIMILAR,
        ),
        _ => result(
            Field::FamilyName,
            Agreement::Disagree,
            "different",
            FAMILY_DISAGREE,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::matching::{PartialDate, Person, Postcode};
    use crate::domain::{Gender, NhsNumber};

    fn person(given: &str, family: &str, dob: &str, postcode: &str) -> Person {
        Person {
            given_names: given.split(' ').map(str::to_owned).collect(),
            family_name: family.into(),
            previous_family_names: vec![],
            birth_date: PartialDate::parse("dob", dob).expect("dob"),
            gender: Gender::Female,
            postcode: Postcode::parse("postcode", postcode).ok(),
            nhs_number: None,
        }
    }

    fn with_nhs(mut p: Person, nhs: &str) -> Person {
        p.nhs_number = Some(NhsNumber::parse("nhs", nhs).expect("nhs"));
        p
    }

    fn pair(a: Person, b: Person) -> MatchScore {
        score(&PreparedPerson::new(a), &PreparedPerson::new(b))
    }

    fn jane() -> Person {
        person("Jane", "O'Brien", "1980-04-03", "LS1 4AP")
    }

    #[test]
    fn the_same_details_score_one_and_match() {
        let s = pair(
            with_nhs(jane(), "9434765919"),
            with_nhs(jane(), "9434765919"),
        );
        assert!((s.score - 1.0).abs() < 1e-9, "{}", s.score);
        assert_eq!(s.level(), PairLevel::Match);
        let s = pair(jane(), jane());
        assert_eq!(s.level(), PairLevel::Match);
        assert!(s.score < 1.0);
    }

    #[test]
    fn scoring_is_symmetric() {
        let mut married = person("Jane", "Smith", "1980-04-03", "M1 1AE");
        married.previous_family_names = vec!["O'Brien".into()];
        let (x, y) = (pair(jane(), married.clone()), pair(married, jane()));
        assert!((x.weight - y.weight).abs() < 1e-9);
    }

    #[test]
    fn variants_of_one_person_match() {
        let mut married = person("Jane", "Smith", "1980-04-03", "LS1 4AP");
        married.previous_family_names = vec!["O'Brien".into()];
        for (variant, field, how) in [
            (
                person("Jane", "OBrien", "1980-04-03", "LS1 4AP"),
                Field::FamilyName,
                "exact",
            ),
            (
                person("Jane", "O'Brian", "1980-04-03", "LS1 4AP"),
                Field::FamilyName,
                "similar",
            ),
            (
                person("O'Brien", "Jane", "1980-04-03", "LS1 4AP"),
                Field::GivenName,
                "transposed with family name",
            ),
            (
                person("Jane", "O'Brien", "1980-03-04", "LS1 4AP"),
                Field::BirthDate,
                "day/month swapped",
            ),
            (
                person("Jane", "O'Brien", "1980-04-08", "LS1 4AP"),
                Field::BirthDate,
                "one digit of day or month",
            ),
            (
                person("Jane", "O'Brien", "1980-04", "LS1 4AP"),
                Field::BirthDate,
                "year and month",
            ),
            (married, Field::FamilyName, "previous family name"),
        ] {
            let s = pair(jane(), variant.clone());
            assert_eq!(s.level(), PairLevel::Match, "{variant:?} {s:?}");
            assert_eq!(s.field(field).map(|f| f.how), Some(how), "{variant:?}");
        }
        let s = pair(
            person("Elizabeth", "Jones", "1950-01-02", "B15 2TT"),
            person("Betty", "Jones", "1950-01-02", "B15 2TT"),
        );
        assert_eq!(s.level(), PairLevel::Match);
    }

    #[test]
    fn twins_and_a_parent_and_child_are_never_matched() {
        let twin = person("Joan", "O'Brien", "1980-04-03", "LS1 4AP");
        let s = pair(jane(), twin);
        assert_ne!(s.level(), PairLevel::Match);
        assert_eq!(s.veto, Some("given names differ"));
        // one twin's first name the other's middle name
        let twin = person("Mary Jane", "O'Brien", "1980-04-03", "LS1 4AP");
        let s = pair(jane(), twin);
        assert_eq!(
            s.field(Field::GivenName).map(|f| f.how),
            Some("another given name")
        );
        assert_eq!(s.veto, Some("given names differ"));
        let mother = person("Jane", "O'Brien", "1956-09-17", "LS1 4AP");
        let s = pair(jane(), mother);
        assert_ne!(s.level(), PairLevel::Match);
        assert_eq!(s.veto, Some("dates of birth differ"));
        // born on the same day of the year, decades apart
        let mother = person("Jane", "O'Brien", "1950-04-03", "LS1 4AP");
        assert_ne!(pair(jane(), mother).level(), PairLevel::Match);
    }

    #[test]
    fn one_nhs_number_is_strong_but_conflicts_still_show() {
        let a = with_nhs(jane(), "9434765919");
        let b = with_nhs(
            person("Mary", "Jones", "1970-01-01", "M1 1AE"),
            "9434765919",
        );
        let s = pair(a.clone(), b);
        assert_eq!(
            s.field(Field::NhsNumber).map(|f| f.agreement),
            Some(Agreement::Agree)
        );
        assert_eq!(
            s.field(Field::GivenName).map(|f| f.agreement),
            Some(Agreement::Disagree)
        );
        assert_eq!(
            s.field(Field::BirthDate).map(|f| f.agreement),
            Some(Agreement::Disagree)
        );
        assert_ne!(s.level(), PairLevel::Match);
        // one number, a new surname and a moved house: a match
        let b = with_nhs(
            person("Jane", "Smith", "1980-04-03", "M1 1AE"),
            "9434765919",
        );
        let s = pair(a, b);
        assert_eq!(
            s.field(Field::FamilyName).map(|f| f.agreement),
            Some(Agreement::Disagree)
        );
        assert_eq!(s.level(), PairLevel::Match);
        let a = with_nhs(jane(), "9434765919");
        let b = with_nhs(
            person("Jane", "O'Brien", "1980-04-03", "M1 1AE"),
            "9434765919",
        );
        assert_eq!(pair(a, b).level(), PairLevel::Match);
    }

    #[test]
    fn two_nhs_numbers_are_near_decisive_against() {
        let a = with_nhs(jane(), "9434765919");
        let b = with_nhs(jane(), "4010232137");
        let s = pair(a, b);
        assert_ne!(s.level(), PairLevel::Match);
        assert_eq!(s.veto, Some("different NHS numbers"));
    }

    #[test]
    fn the_same_name_and_birthday_elsewhere_is_only_possible() {
        let s = pair(jane(), person("Jane", "O'Brien", "1980-04-03", "BS8 1TH"));
        assert_eq!(s.level(), PairLevel::Possible);
        let s = pair(jane(), person("Oliver", "Jones", "1975-11-23", "BS8 1TH"));
        assert_eq!(s.level(), PairLevel::NoMatch);
    }

    #[test]
    fn a_decision_needs_exactly_one_confident_candidate() {
        let q = PreparedPerson::new(jane());
        let same = score(&q, &PreparedPerson::new(jane()));
        let twin = score(
            &q,
            &PreparedPerson::new(person("Joan", "O'Brien", "1980-04-03", "LS1 4AP")),
        );
        let other = score(
            &q,
            &PreparedPerson::new(person("Oliver", "Jones", "1975-11-23", "BS8 1TH")),
        );
        assert_eq!(
            decide(&[(1, same.clone()), (2, other.clone())]),
            Decision::Match(1)
        );
        assert_eq!(
            decide(&[(1, same.clone()), (3, same.clone())]),
            Decision::Possible(vec![1, 3])
        );
        assert_eq!(
            decide(&[(2, twin), (4, other.clone())]),
            Decision::Possible(vec![2])
        );
        assert_eq!(decide(&[(4, other)]), Decision::NoMatch);
        assert_eq!(decide::<u8>(&[]), Decision::NoMatch);
    }
}
