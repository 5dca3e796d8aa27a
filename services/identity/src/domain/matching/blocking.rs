//! Blocking keys: a few keys per person such that a duplicate record shares
//! at least one with the original despite a typo, a nickname, a move, a
//! marriage or a swapped day and month, so candidates come from an index
//! lookup, never a scan. Plain strings here; the store keeps them as blind
//! indexes (HMAC) so they reveal nothing at rest.

use super::PreparedPerson;

/// The person's blocking keys, sorted and without repeats. Each key's
/// prefix names its kind, so kinds never collide.
pub fn blocking_keys(person: &PreparedPerson) -> Vec<String> {
    let p = &person.person;
    let mut keys = Vec::new();
    if let Some(nhs) = &p.nhs_number {
        // the number alone: what a caller with the right number finds
        keys.push(format!("nhs:{}", nhs.as_str()));
    }
    let year = p.birth_date.year();
    let first_given = person.given.first();
    let given_initial = first_given
        .and_then(|g| g.canonical_given().chars().next())
        .map(String::from)
        .unwrap_or_default();
    let family = &person.family;
    let families = std::iter::once(family).chain(&person.previous_family);
    if let Some(dob) = p.birth_date.swap_invariant_key() {
        for family in families.clone() {
            // date of birth (day and month in either order) and both names
            // phonetically, in either order: typos that keep the sound,
            // swapped day and month, given and family names transposed
            if let Some(given) = first_given {
                let (a, b) = (given.phonetic_key(), family.phonetic_key());
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                keys.push(format!("dn:{dob}:{lo}:{hi}"));
            }
        }
        // date of birth and the given name's full form phonetically: a new
        // family name (marriage) or a mistyped one
        if let Some(given) = first_given {
            keys.push(format!("dg:{dob}:{}", given.canonical_given_phonetic()));
        }
    }
    if let (Some(given), Some(month), Some(day)) =
        (first_given, p.birth_date.month(), p.birth_date.day())
    {
        // both names phonetically and the birthday without its year: a
        // mistyped year
        let (lo, hi) = (month.min(day), month.max(day));
        keys.push(format!(
            "nb:{}:{}:{lo:02}-{hi:02}",
            family.phonetic_key(),
            given.canonical_given_phonetic()
        ));
    }
    for family in families {
        // family name phonetically, birth year and initial: a mistyped
        // date of birth, or a partial one
        keys.push(format!(
            "fy:{}:{year:04}:{given_initial}",
            family.phonetic_key()
        ));
    }
    // The two names' initials, in either order, survive a typo after the
    // first letter and a transposition of given and family names.
    let family_initial = person
        .family
        .initial()
        .map(String::from)
        .unwrap_or_default();
    let initials = if given_initial <= family_initial {
        format!("{given_initial}{family_initial}")
    } else {
        format!("{family_initial}{given_initial}")
    };
    if let Some(dob) = p.birth_date.swap_invariant_key() {
        // date of birth and initials: typos in both names
        keys.push(format!("di:{dob}:{initials}"));
    }
    if let Some(postcode) = &p.postcode {
        // where they live, the initials and the birth year: names mistyped
        // beyond their sound and a date mistyped, at the same address
        keys.push(format!("ps:{}:{initials}:{year:04}", postcode.sector()));
    }
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Gender;
    use crate::domain::matching::{PartialDate, Person, Postcode};

    fn person(given: &str, family: &str, dob: &str, postcode: &str) -> PreparedPerson {
        PreparedPerson::new(Person {
            given_names: vec![given.into()],
            family_name: family.into(),
            previous_family_names: vec![],
            birth_date: PartialDate::parse("dob", dob).expect("dob"),
            gender: Gender::Female,
            postcode: Postcode::parse("postcode", postcode).ok(),
            nhs_number: None,
        })
    }

    fn share_a_key(a: &PreparedPerson, b: &PreparedPerson) -> bool {
        let keys = blocking_keys(a);
        blocking_keys(b).iter().any(|k| keys.contains(k))
    }

    #[test]
    fn variants_of_one_person_share_a_key() {
        let original = person("Katherine", "Smith", "1980-04-03", "LS1 4AP");
        for variant in [
            person("Kate", "Smith", "1980-04-03", "M1 1AE"),
            person("Smith", "Katherine", "1980-04-03", ""),
            person("Katherine", "Smyth", "1980-03-04", "M1 1AE"),
            person("Katherine", "Jones", "1980-04-03", "M1 1AE"),
            person("Katherine", "Smith", "1981-04-03", "M1 1AE"),
            person("Katherine", "Smith", "1980", ""),
            person("Ktaherine", "Smtih", "1980-04-03", "LS1 4AP"),
            person("Smtih", "Katherine", "1980-04-13", "LS1 4AP"),
        ] {
            assert!(share_a_key(&original, &variant), "{:?}", variant.person());
        }
    }

    #[test]
    fn unrelated_people_share_no_key() {
        let a = person("Katherine", "Smith", "1980-04-03", "LS1 4AP");
        let b = person("Oliver", "Jones", "1975-11-23", "M1 1AE");
        assert!(!share_a_key(&a, &b));
    }
}
