//! The people `trace-patient` registers and traces: the same for a given
//! index on every run (so a seeded data dir is reused, not doubled), varied
//! as a population is (a few common surnames and a long tail of rarer ones,
//! dates of birth over ninety years, postcodes over hundreds of sectors),
//! so identity's blocking keys are as selective as they would be on real
//! registrations. NHS numbers come from the part of the test range kept for
//! the bench (see [`crate::demo::nhs`]), one per person.
//!
//! A trace asks about a registered person as a clerk might have heard them:
//! a nickname or a mistyped given name, sometimes a mistyped family name,
//! sometimes no postcode, and never the NHS number.

use sharedcare_proto::identity::v1::{Demographics, Gender, TracePatientRequest};

use sharedcare_identity::synthetic::{
    DISTRICTS, FAMILY as COMMON_FAMILY, FEMALE_GIVEN, MALE_GIVEN, UNIT_LETTERS,
};

use crate::demo::nhs;

/// SplitMix64: small and the same on every platform, so person `n` is the
/// same on every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Skewed to the front of the list, as name frequencies are.
    fn pick_common<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        items[((u * u) * items.len() as f64) as usize % items.len()]
    }
}

/// The long tail: place-like surnames made of a first and a last part
/// (Ashworth, Blackburn, …), thousands of them, each rare.
const TAIL_FIRST: &[&str] = &[
    "Ash", "Black", "Brad", "Brook", "Bur", "Cald", "Carr", "Chad", "Clay", "Cran", "Dal", "Dun",
    "East", "Elm", "Fair", "Farn", "Fox", "Gold", "Green", "Hal", "Hart", "Haw", "Hay", "Hol",
    "Horn", "Kirk", "Lang", "Ley", "Lind", "Long", "Mar", "Mid", "Mill", "Moss", "New", "North",
    "Oak", "Pen", "Ram", "Red", "Ros", "Rush", "Sal", "Sand", "Shel", "South", "Stan", "Stock",
    "Stone", "Sum", "Sut", "Thorn", "Tre", "Wal", "West", "Whit", "Win", "Wood", "Wor", "Wyn",
];
const TAIL_LAST: &[&str] = &[
    "ford", "worth", "burn", "field", "ley", "ton", "wood", "well", "more", "by", "ham", "stead",
    "wick", "bridge", "combe", "dale", "hurst", "land", "low", "mere", "ridge", "shaw", "thorpe",
    "bury", "cott", "den", "gate", "holme", "ington", "sworth", "over", "ing", "stone", "brook",
    "croft", "lake", "man", "son", "ock", "ett",
];

/// Full given names and a nickname a clerk may hear instead.
const NICKNAMES: &[(&str, &str)] = &[
    ("Robert", "Bob"),
    ("William", "Bill"),
    ("Elizabeth", "Liz"),
    ("Margaret", "Peggy"),
    ("James", "Jim"),
    ("Thomas", "Tom"),
    ("Katherine", "Kate"),
    ("Catherine", "Cathy"),
    ("David", "Dave"),
    ("Michael", "Mike"),
    ("Susan", "Sue"),
    ("Christopher", "Chris"),
    ("Christine", "Chris"),
    ("Alexander", "Alex"),
    ("Alexandra", "Alex"),
    ("Samuel", "Sam"),
    ("Samantha", "Sam"),
    ("Henry", "Harry"),
    ("Daniel", "Dan"),
    ("Benjamin", "Ben"),
    ("Edward", "Ted"),
    ("Joseph", "Joe"),
    ("Jennifer", "Jenny"),
    ("Nicholas", "Nick"),
    ("Matthew", "Matt"),
    ("Andrew", "Andy"),
    ("Anthony", "Tony"),
    ("Stephen", "Steve"),
    ("Peter", "Pete"),
    ("Patricia", "Trish"),
    ("Richard", "Rick"),
    ("Rebecca", "Becky"),
    ("Frederick", "Fred"),
    ("Oliver", "Ollie"),
    ("Deborah", "Debbie"),
    ("Amanda", "Mandy"),
    ("Victoria", "Vicky"),
    ("Isabella", "Izzy"),
    ("Matilda", "Tilly"),
    ("Eleanor", "Ellie"),
    ("Theodore", "Theo"),
];

/// One seeded person, as RegisterPatient is given them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Ten digits, no spaces.
    pub nhs_number: String,
    pub given: String,
    pub family: String,
    /// YYYY-MM-DD.
    pub birth_date: String,
    pub gender: Gender,
    pub postcode: String,
}

impl Person {
    pub fn demographics(&self) -> Demographics {
        Demographics {
            given_names: vec![self.given.clone()],
            family_name: self.family.clone(),
            birth_date: self.birth_date.clone(),
            gender: self.gender as i32,
            postcode: self.postcode.clone(),
            ..Default::default()
        }
    }
}

/// The most people the bench's part of the test range holds.
pub fn capacity() -> u64 {
    nhs::bench_numbers().count() as u64
}

/// People `0..count`, the same on every run; fewer if the bench's part
/// of the test range runs out (see [`capacity`]).
pub fn people(count: u64) -> Vec<Person> {
    nhs::bench_numbers()
        .take(usize::try_from(count).unwrap_or(usize::MAX))
        .enumerate()
        .map(|(n, nhs_number)| person(n as u64, nhs_number))
        .collect()
}

fn person(n: u64, nhs_number: String) -> Person {
    let mut rng = Rng::new(0x5EED_0000_0000 ^ n);
    let male = rng.chance(0.5);
    let given = if male {
        rng.pick_common(MALE_GIVEN)
    } else {
        rng.pick_common(FEMALE_GIVEN)
    };
    let family = if rng.chance(0.2) {
        rng.pick_common(COMMON_FAMILY).to_owned()
    } else {
        format!("{}{}", rng.pick(TAIL_FIRST), rng.pick(TAIL_LAST))
    };
    // 1930-01-01 plus up to ninety years.
    let birth_date = chrono::NaiveDate::from_ymd_opt(1930, 1, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new(rng.below(90 * 365) as u64)))
        .map(|d| d.to_string())
        .unwrap_or_default();
    let unit = |rng: &mut Rng| char::from(UNIT_LETTERS[rng.below(UNIT_LETTERS.len())]);
    let postcode = format!(
        "{} {}{}{}",
        rng.pick(DISTRICTS),
        rng.below(10),
        unit(&mut rng),
        unit(&mut rng)
    );
    Person {
        nhs_number,
        given: given.to_owned(),
        family,
        birth_date,
        gender: if male { Gender::Male } else { Gender::Female },
        postcode,
    }
}

/// Two adjacent letters swapped, after the first (which clerks rarely get
/// wrong); the name itself when too short.
fn transpose(name: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    if chars.len() < 4 {
        return name.to_owned();
    }
    let i = 1 + rng.below(chars.len() - 2);
    chars.swap(i, i + 1);
    chars.into_iter().collect()
}

/// `count` traces of people drawn from `people`, each heard imperfectly:
/// a nickname where there is one, else a typo in the given name; a typo in
/// the family name one time in three; no postcode one time in four; never
/// the NHS number. Up to ten candidates each (TracePatient's default).
pub fn traces(people: &[Person], count: usize) -> Vec<TracePatientRequest> {
    if people.is_empty() {
        return Vec::new();
    }
    let mut rng = Rng::new(0x7ACE);
    (0..count)
        .map(|_| {
            let p = &people[rng.below(people.len())];
            let given = NICKNAMES
                .iter()
                .find(|(full, _)| *full == p.given)
                .map(|(_, nick)| (*nick).to_owned())
                .unwrap_or_else(|| transpose(&p.given, &mut rng));
            let family = if rng.chance(1.0 / 3.0) {
                transpose(&p.family, &mut rng)
            } else {
                p.family.clone()
            };
            let postcode = if rng.chance(0.25) {
                String::new()
            } else {
                p.postcode.clone()
            };
            TracePatientRequest {
                nhs_number: String::new(),
                demographics: Some(Demographics {
                    given_names: vec![given],
                    family_name: family,
                    birth_date: p.birth_date.clone(),
                    gender: p.gender as i32,
                    postcode,
                    ..Default::default()
                }),
                max_results: 0,
                duplicates_of_patient_id: String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn people_are_the_same_on_every_run_and_varied() {
        let a = people(5000);
        assert_eq!(a, people(5000));
        assert_eq!(a.len(), 5000);
        let numbers: HashSet<&str> = a.iter().map(|p| p.nhs_number.as_str()).collect();
        assert_eq!(numbers.len(), 5000, "one NHS number each");
        let families: HashSet<&str> = a.iter().map(|p| p.family.as_str()).collect();
        assert!(families.len() > 1000, "{} surnames", families.len());
        let dates: HashSet<&str> = a.iter().map(|p| p.birth_date.as_str()).collect();
        assert!(dates.len() > 4000, "{} dates of birth", dates.len());
        assert!(a.iter().all(|p| p.birth_date.len() == 10));
    }

    #[test]
    fn the_bench_range_holds_more_than_the_default_seed() {
        assert!(capacity() > 150_000, "{}", capacity());
    }

    #[test]
    fn a_trace_never_gives_the_number_and_changes_the_given_name() {
        let people = people(200);
        for trace in traces(&people, 200) {
            assert!(trace.nhs_number.is_empty());
            let d = trace.demographics.expect("demographics");
            let person = people
                .iter()
                .find(|p| p.birth_date == d.birth_date && p.gender as i32 == d.gender)
                .expect("a seeded person's date of birth");
            assert!(!d.family_name.is_empty());
            assert!(!person.given.is_empty());
        }
        let some = traces(&people, 50);
        assert!(
            some.iter().any(|t| t
                .demographics
                .as_ref()
                .is_some_and(|d| !people.iter().any(|p| p.given == d.given_names[0]))),
            "given names are heard imperfectly"
        );
    }
}
