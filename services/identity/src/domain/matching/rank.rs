//! Scoring a set of candidates against one person and ranking them: what a
//! trace returns and what find-or-create decides on.

use super::{MatchScore, PairLevel, Person, PreparedPerson, score};

/// A candidate and how it scored against the person asked about.
#[derive(Debug, Clone)]
pub struct Ranked<T> {
    pub item: T,
    pub score: MatchScore,
}

impl<T> Ranked<T> {
    pub fn level(&self) -> PairLevel {
        self.score.level()
    }
}

/// Scores each candidate against `query` and keeps those at possible-match
/// level or above, best first (ties in the order given).
pub fn rank<T>(
    query: &PreparedPerson,
    candidates: impl IntoIterator<Item = (T, Person)>,
) -> Vec<Ranked<T>> {
    let mut ranked: Vec<Ranked<T>> = candidates
        .into_iter()
        .map(|(item, person)| Ranked {
            score: score(query, &PreparedPerson::new(person)),
            item,
        })
        .filter(|r| r.level() != PairLevel::NoMatch)
        .collect();
    ranked.sort_by(|a, b| b.score.score.total_cmp(&a.score.score));
    ranked
}

/// The one confident candidate, if exactly one of the ranked is at match
/// level; several confident ones are as ambiguous as none.
pub fn unique_match<T>(ranked: &[Ranked<T>]) -> Option<&Ranked<T>> {
    let mut matches = ranked.iter().filter(|r| r.level() == PairLevel::Match);
    match (matches.next(), matches.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Gender,
        matching::{PartialDate, Postcode},
    };

    fn person(given: &str, family: &str, dob: &str, postcode: &str) -> Person {
        Person {
            given_names: vec![given.into()],
            family_name: family.into(),
            previous_family_names: vec![],
            birth_date: PartialDate::parse("dob", dob).expect("dob"),
            gender: Gender::Female,
            postcode: Postcode::parse("postcode", postcode).ok(),
            nhs_number: None,
        }
    }

    #[test]
    fn candidates_rank_best_first_and_non_matches_drop_out() {
        let query = PreparedPerson::new(person("Katherine", "Smith", "1980-04-03", "LS1 4AP"));
        let ranked = rank(
            &query,
            [
                ("kate", person("Kate", "Smith", "1980-04-03", "M1 1AE")),
                ("other", person("Oliver", "Jones", "1975-11-23", "M1 1AE")),
                (
                    "same",
                    person("Katherine", "Smith", "1980-04-03", "LS1 4AP"),
                ),
            ],
        );
        let order: Vec<&str> = ranked.iter().map(|r| r.item).collect();
        assert_eq!(order, ["same", "kate"]);
        // Kate, moved, is only possible: the one confident match stands.
        assert_eq!(ranked[1].level(), PairLevel::Possible);
        assert_eq!(unique_match(&ranked).map(|r| r.item), Some("same"));
        let two = rank(
            &query,
            [
                ("a", person("Katherine", "Smith", "1980-04-03", "LS1 4AP")),
                ("b", person("Katherine", "Smith", "1980-04-03", "LS1 4AP")),
            ],
        );
        assert_eq!(two.len(), 2);
        assert!(unique_match(&two).is_none(), "two confident candidates");
    }

    #[test]
    fn twins_are_never_a_unique_match() {
        let query = PreparedPerson::new(person("Amy", "Smith", "1990-06-01", "LS1 4AP"));
        let ranked = rank(
            &query,
            [("twin", person("Zoe", "Smith", "1990-06-01", "LS1 4AP"))],
        );
        assert!(unique_match(&ranked).is_none());
    }
}
