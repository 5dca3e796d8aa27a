//! A deterministic evaluation set for patient matching: base people (the
//! Synthea patients and generated ones), planted duplicates of some of them
//! (a second record of the same person, altered as records are) and planted
//! near-misses (different people who look alike). Every record carries the
//! id of the person it is, so decisions can be scored.

use std::collections::HashSet;

use chrono::NaiveDate;
use sharedcare_identity::domain::matching::{PartialDate, Person, Postcode};
use sharedcare_identity::domain::{Gender, NhsNumber};
use sharedcare_identity::synthetic::{DISTRICTS, FAMILY, FEMALE_GIVEN, MALE_GIVEN, UNIT_LETTERS};

/// SplitMix64: small, fast and the same on every platform and version, so a
/// seed always gives the same set.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Skewed to the front of the list, as name frequencies are: the first
    /// names are picked far more often than the last.
    pub fn pick_common<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        &items[((u * u) * items.len() as f64) as usize % items.len()]
    }
}

/// People whose names are in other scripts: (given, family, male).
const NON_LATIN: &[(&str, &str, bool)] = &[
    ("伟", "王", true),
    ("娜", "李", false),
    ("秀英", "张", false),
    ("敏", "刘", false),
    ("强", "陈", true),
    ("磊", "杨", true),
    ("محمد", "حسن", true),
    ("فاطمة", "علي", false),
    ("Γιώργος", "Παπαδόπουλος", true),
    ("Ελένη", "Παπαδοπούλου", false),
    ("Иван", "Иванов", true),
    ("Ольга", "Смирнова", false),
    ("राहुल", "शर्मा", true),
    ("민준", "김", true),
];

/// Full given names and nicknames a record may carry instead.
const NICKNAMES: &[(&str, &[&str])] = &[
    ("Robert", &["Bob", "Rob", "Robbie", "Bobby"]),
    ("William", &["Bill", "Will", "Billy"]),
    ("Elizabeth", &["Liz", "Beth", "Lizzie", "Betty"]),
    ("Margaret", &["Peggy", "Maggie", "Meg"]),
    ("James", &["Jim", "Jimmy", "Jamie"]),
    ("Thomas", &["Tom", "Tommy"]),
    ("Katherine", &["Kate", "Katie", "Kathy"]),
    ("Catherine", &["Kate", "Katie", "Cathy"]),
    ("David", &["Dave"]),
    ("Michael", &["Mike", "Mick"]),
    ("Susan", &["Sue", "Susie"]),
    ("Christopher", &["Chris"]),
    ("Christine", &["Chris"]),
    ("Alexander", &["Alex"]),
    ("Alexandra", &["Alex"]),
    ("Samuel", &["Sam"]),
    ("Samantha", &["Sam"]),
    ("John", &["Jack", "Johnny"]),
    ("Henry", &["Harry"]),
    ("Daniel", &["Dan", "Danny"]),
    ("Benjamin", &["Ben"]),
    ("Edward", &["Ed", "Eddie", "Ted"]),
    ("Joseph", &["Joe"]),
    ("Jennifer", &["Jen", "Jenny"]),
    ("Nicholas", &["Nick"]),
    ("Matthew", &["Matt"]),
    ("Andrew", &["Andy", "Drew"]),
    ("Anthony", &["Tony"]),
    ("Stephen", &["Steve"]),
    ("Peter", &["Pete"]),
    ("Patricia", &["Pat", "Trish"]),
    ("Richard", &["Rick", "Dick", "Rich"]),
    ("Rebecca", &["Becky"]),
    ("Sarah", &["Sally"]),
    ("Frederick", &["Fred", "Freddie"]),
    ("Oliver", &["Ollie"]),
    ("Deborah", &["Debbie"]),
    ("Amanda", &["Mandy"]),
    ("Victoria", &["Vicky"]),
    ("Isabella", &["Izzy"]),
    ("Charlotte", &["Charlie"]),
    ("Matilda", &["Tilly"]),
    ("Eleanor", &["Ellie"]),
    ("Theodore", &["Theo"]),
];

/// What kind of record a query is, to break the figures down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A base record asked about again (others' records are candidates).
    Base,
    /// A second record of a base person.
    Duplicate,
    /// A different person: a twin of a base person.
    Twin,
    /// A different person: a parent or child of the same name.
    ParentOrChild,
    /// A different person: a common name at the same postcode.
    CommonNameSamePostcode,
    /// A different person: the same name and date of birth elsewhere.
    SameNameAndBirthDateElsewhere,
}

pub struct Record {
    /// Which person this record is.
    pub person_id: usize,
    pub person: Person,
    pub kind: Kind,
    /// For a duplicate, how it differs from the original.
    pub alterations: Vec<&'static str>,
}

pub struct EvalSet {
    /// The index: one record per person.
    pub base: Vec<Record>,
    /// Records asked about: duplicates of base people and near-misses.
    pub queries: Vec<Record>,
    /// How many base people came from Synthea.
    pub synthea: usize,
}

impl EvalSet {
    /// `people` base people (Synthea's first), a fifth as many planted
    /// duplicates and a tenth as many planted near-misses.
    pub fn generate(seed: u64, people: usize) -> Self {
        let mut g = Generator {
            rng: Rng::new(seed),
            nhs_issued: HashSet::new(),
        };
        let mut base: Vec<Record> = Vec::with_capacity(people);
        for mut person in synthea_people() {
            if base.len() >= people {
                break;
            }
            person.postcode = Some(g.postcode());
            person.nhs_number = Some(g.nhs_number());
            base.push(Record {
                person_id: base.len(),
                person,
                kind: Kind::Base,
                alterations: Vec::new(),
            });
        }
        let synthea = base.len();
        while base.len() < people {
            for person in g.household() {
                if base.len() < people {
                    base.push(Record {
                        person_id: base.len(),
                        person,
                        kind: Kind::Base,
                        alterations: Vec::new(),
                    });
                }
            }
        }
        let mut queries = Vec::new();
        for _ in 0..people / 5 {
            let original = g.rng.below(base.len());
            let (person, alterations) = g.duplicate(&base[original].person);
            queries.push(Record {
                person_id: original,
                person,
                kind: Kind::Duplicate,
                alterations,
            });
        }
        for (person_id, i) in (base.len()..).zip(0..people / 10) {
            let mut of = &base[g.rng.below(base.len())].person;
            if i % 4 == 2 {
                // someone with a common family name, so the near-miss has one
                for _ in 0..50 {
                    if FAMILY[..10].contains(&of.family_name.as_str()) {
                        break;
                    }
                    of = &base[g.rng.below(base.len())].person;
                }
            }
            let (kind, person) = match i % 4 {
                0 => (Kind::Twin, g.twin(of)),
                1 => (Kind::ParentOrChild, g.parent_or_child(of)),
                2 => (
                    Kind::CommonNameSamePostcode,
                    g.common_name_same_postcode(of),
                ),
                _ => (
                    Kind::SameNameAndBirthDateElsewhere,
                    g.same_name_elsewhere(of),
                ),
            };
            queries.push(Record {
                person_id,
                person,
                kind,
                alterations: Vec::new(),
            });
        }
        EvalSet {
            base,
            queries,
            synthea,
        }
    }
}

/// The Synthea sample's patients, their names without Synthea's numeric
/// suffixes ("Sumiko254" → "Sumiko") and a maiden name as a previous family
/// name. Empty if the sample is not there.
fn synthea_people() -> Vec<Person> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/synthea-10-patients/Patient.000.ndjson"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let strip = |s: &str| s.trim_end_matches(|c: char| c.is_ascii_digit()).to_owned();
    let mut people = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(p) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let names = p["name"].as_array().cloned().unwrap_or_default();
        let official = names.iter().find(|n| n["use"] == "official");
        let Some(official) = official else { continue };
        let given: Vec<String> = official["given"]
            .as_array()
            .map(|g| g.iter().filter_map(|s| s.as_str()).map(strip).collect())
            .unwrap_or_default();
        let family = official["family"].as_str().map(strip).unwrap_or_default();
        let previous: Vec<String> = names
            .iter()
            .filter(|n| n["use"] == "maiden")
            .filter_map(|n| n["family"].as_str())
            .map(strip)
            .collect();
        let Some(birth_date) = p["birthDate"]
            .as_str()
            .and_then(|d| PartialDate::parse("birthDate", d).ok())
        else {
            continue;
        };
        let gender = match p["gender"].as_str() {
            Some("male") => Gender::Male,
            Some("female") => Gender::Female,
            _ => Gender::Unknown,
        };
        if given.is_empty() || family.is_empty() {
            continue;
        }
        people.push(Person {
            given_names: given,
            family_name: family,
            previous_family_names: previous,
            birth_date,
            gender,
            postcode: None,
            nhs_number: None,
        });
    }
    people
}

struct Generator {
    rng: Rng,
    nhs_issued: HashSet<String>,
}

impl Generator {
    /// A fresh valid NHS number, never one issued before in this set.
    fn nhs_number(&mut self) -> NhsNumber {
        loop {
            let digits: Vec<u32> = (0..9).map(|_| self.rng.below(10) as u32).collect();
            let sum: u32 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
            let check = match 11 - (sum % 11) {
                11 => 0,
                10 => continue,
                c => c,
            };
            let number: String = digits
                .iter()
                .chain(std::iter::once(&check))
                .map(|d| char::from(b'0' + *d as u8))
                .collect();
            if let Ok(nhs) = NhsNumber::parse("nhs_number", &number)
                && self.nhs_issued.insert(number)
            {
                return nhs;
            }
        }
    }

    fn postcode_in(&mut self, district: &str) -> Postcode {
        let sector = self.rng.below(10);
        let a = char::from(*self.rng.pick(UNIT_LETTERS));
        let b = char::from(*self.rng.pick(UNIT_LETTERS));
        let text = format!("{district} {sector}{a}{b}");
        Postcode::parse("postcode", &text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn postcode(&mut self) -> Postcode {
        let district = *self.rng.pick_common(DISTRICTS);
        self.postcode_in(district)
    }

    fn birth_date(&mut self, from_year: i32, to_year: i32) -> PartialDate {
        let year = from_year + self.rng.below((to_year - from_year + 1) as usize) as i32;
        let day0 = NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or_default();
        let date = day0 + chrono::Days::new(self.rng.below(365) as u64);
        PartialDate::full(date)
    }

    fn given_name(&mut self, male: bool) -> String {
        let names = if male { MALE_GIVEN } else { FEMALE_GIVEN };
        (*self.rng.pick_common(names)).to_owned()
    }

    fn person(
        &mut self,
        family: &str,
        male: bool,
        dob: PartialDate,
        postcode: &Postcode,
    ) -> Person {
        let mut given_names = vec![self.given_name(male)];
        if self.rng.chance(0.4) {
            let middle = self.given_name(male);
            if middle != given_names[0] {
                given_names.push(middle);
            }
        }
        Person {
            given_names,
            family_name: family.to_owned(),
            previous_family_names: Vec::new(),
            birth_date: dob,
            gender: if male { Gender::Male } else { Gender::Female },
            postcode: Some(postcode.clone()),
            nhs_number: self.rng.chance(0.9).then(|| self.nhs_number()),
        }
    }

    /// One to four people at one postcode: a single person, a couple, or
    /// a family with children; a few in other scripts.
    fn household(&mut self) -> Vec<Person> {
        let postcode = self.postcode();
        if self.rng.chance(0.03) {
            let (given, family, male) = *self.rng.pick(NON_LATIN);
            return vec![Person {
                given_names: vec![given.to_owned()],
                family_name: family.to_owned(),
                previous_family_names: Vec::new(),
                birth_date: self.birth_date(1940, 2020),
                gender: if male { Gender::Male } else { Gender::Female },
                postcode: Some(postcode),
                nhs_number: self.rng.chance(0.9).then(|| self.nhs_number()),
            }];
        }
        let family = (*self.rng.pick_common(FAMILY)).to_owned();
        let adult_dob = self.birth_date(1930, 2004);
        let male = self.rng.chance(0.5);
        let mut people = vec![self.person(&family, male, adult_dob, &postcode)];
        let size = [1, 1, 2, 2, 3, 4][self.rng.below(6)];
        if size >= 2 {
            let partner_year = adult_dob.year() - 5 + self.rng.below(11) as i32;
            let dob = self.birth_date(partner_year, partner_year);
            let male = people[0].gender != Gender::Male;
            let mut partner = self.person(&family, male, dob, &postcode);
            if !male && self.rng.chance(0.7) {
                partner.previous_family_names = vec![(*self.rng.pick_common(FAMILY)).to_owned()];
            }
            people.push(partner);
        }
        for _ in 2..size {
            let year = (adult_dob.year() + 20 + self.rng.below(20) as i32).min(2024);
            let dob = self.birth_date(year, year);
            let male = self.rng.chance(0.5);
            let child = self.person(&family, male, dob, &postcode);
            people.push(child);
        }
        people
    }

    fn typo(&mut self, name: &str) -> String {
        let mut chars: Vec<char> = name.chars().collect();
        if chars.len() < 4 {
            return name.to_owned();
        }
        // not the first letter: people rarely mistype it
        let i = 1 + self.rng.below(chars.len() - 2);
        match self.rng.below(4) {
            0 => chars.swap(i, i + 1),
            1 => {
                chars.remove(i);
            }
            2 => chars.insert(i, chars[i]),
            _ => chars[i] = char::from(b'a' + self.rng.below(26) as u8),
        }
        chars.into_iter().collect()
    }

    /// A second record of `original`: one to three of the alterations real
    /// second records show, each kind as likely as the others, and their
    /// names.
    fn duplicate(&mut self, original: &Person) -> (Person, Vec<&'static str>) {
        let mut p = original.clone();
        let mut done = Vec::new();
        let alterations = [1, 1, 1, 2, 2, 3][self.rng.below(6)];
        // Life events (a nickname, a marriage, a move) before slips in
        // typing them (typos, transposition), as they happen.
        let mut kinds: Vec<usize> = (0..alterations).map(|_| self.rng.below(10)).collect();
        kinds.sort_unstable_by_key(|k| [4, 5, 9, 0, 1, 7, 8, 6, 2, 3][*k]);
        for kind in kinds {
            let name = match kind {
                0 => {
                    p.given_names[0] = self.typo(&p.given_names[0]);
                    "given-name typo"
                }
                1 => {
                    p.family_name = self.typo(&p.family_name);
                    "family-name typo"
                }
                2 => {
                    let first = p.given_names[0].clone();
                    p.given_names = vec![p.family_name.clone()];
                    p.family_name = first;
                    "names transposed"
                }
                3 => {
                    let nick = NICKNAMES
                        .iter()
                        .find(|(full, _)| *full == p.given_names[0])
                        .map(|(_, nicks)| *nicks);
                    match nick {
                        Some(nicks) => {
                            p.given_names[0] = (*self.rng.pick(nicks)).to_owned();
                            "nickname"
                        }
                        None => {
                            p.given_names[0] = self.typo(&p.given_names[0]);
                            "given-name typo"
                        }
                    }
                }
                4 => {
                    // moved: sometimes nearby, mostly anywhere
                    let nearby = self.rng.chance(0.3);
                    p.postcode = Some(match (&p.postcode, nearby) {
                        (Some(old), true) => {
                            let district = old.district().to_owned();
                            self.postcode_in(&district)
                        }
                        _ => self.postcode(),
                    });
                    if nearby { "moved nearby" } else { "moved away" }
                }
                5 => {
                    p.nhs_number = None;
                    "no NHS number"
                }
                6 => {
                    if p.gender == Gender::Female {
                        p.previous_family_names.insert(0, p.family_name.clone());
                        p.family_name = (*self.rng.pick_common(FAMILY)).to_owned();
                        "married name"
                    } else {
                        p.family_name = self.typo(&p.family_name);
                        "family-name typo"
                    }
                }
                7 => {
                    let (date, name) = self.swap_or_mistype(p.birth_date);
                    p.birth_date = date;
                    name
                }
                8 => {
                    p.birth_date = self.mistype_date(p.birth_date);
                    "birth-date typo"
                }
                _ => {
                    // only the year (or year and month) known, as in an
                    // emergency registration
                    let d = p.birth_date;
                    p.birth_date = match (d.month(), self.rng.chance(0.5)) {
                        (Some(m), true) => PartialDate::year_month(d.year(), m).unwrap_or(d),
                        _ => PartialDate::year_only(d.year()),
                    };
                    "partial birth date"
                }
            };
            done.push(name);
        }
        if original.nhs_number.is_none() && !done.contains(&"no NHS number") {
            done.push("no NHS number");
        }
        // a second record rarely repeats every given name
        if p.given_names.len() > 1 && self.rng.chance(0.5) {
            p.given_names.truncate(1);
        }
        done.sort_unstable();
        (p, done)
    }

    fn swap_or_mistype(&mut self, d: PartialDate) -> (PartialDate, &'static str) {
        match (d.month(), d.day()) {
            (Some(m), Some(day)) if day <= 12 && day != m => (
                NaiveDate::from_ymd_opt(d.year(), day, m).map_or(d, PartialDate::full),
                "day/month swapped",
            ),
            _ => (self.mistype_date(d), "birth-date typo"),
        }
    }

    /// One digit of the day or month changed, the date still valid.
    fn mistype_date(&mut self, d: PartialDate) -> PartialDate {
        let (Some(m), Some(day)) = (d.month(), d.day()) else {
            return d;
        };
        for _ in 0..20 {
            let (mut m2, mut d2) = (m, day);
            match self.rng.below(3) {
                0 => d2 = (day / 10) * 10 + self.rng.below(10) as u32,
                1 => d2 = (self.rng.below(4) as u32) * 10 + day % 10,
                _ => m2 = (m / 10) * 10 + self.rng.below(10) as u32,
            }
            if (m2, d2) != (m, day)
                && let Some(date) = NaiveDate::from_ymd_opt(d.year(), m2, d2)
            {
                return PartialDate::full(date);
            }
        }
        d
    }

    /// Near-misses have an NHS number of their own less often than base
    /// people, to test demographics alone.
    fn maybe_own_nhs(&mut self) -> Option<NhsNumber> {
        self.rng.chance(0.3).then(|| self.nhs_number())
    }

    fn twin(&mut self, of: &Person) -> Person {
        let mut p = of.clone();
        let male = of.gender == Gender::Male;
        let mut given = self.given_name(male);
        while given == of.given_names[0] {
            given = self.given_name(male);
        }
        p.given_names = vec![given];
        p.nhs_number = self.maybe_own_nhs();
        p
    }

    fn parent_or_child(&mut self, of: &Person) -> Person {
        let mut p = of.clone();
        let gap = 18 + self.rng.below(25) as i32;
        let year = if of.birth_date.year() > 1975 {
            of.birth_date.year() - gap
        } else {
            (of.birth_date.year() + gap).min(2024)
        };
        p.birth_date = self.birth_date(year, year);
        p.previous_family_names.clear();
        p.nhs_number = self.maybe_own_nhs();
        p
    }

    /// Someone else of the same family name, a common given name and any
    /// date of birth, at the same postcode.
    fn common_name_same_postcode(&mut self, of: &Person) -> Person {
        let male = self.rng.chance(0.5);
        let given = if male { MALE_GIVEN } else { FEMALE_GIVEN };
        Person {
            given_names: vec![(*self.rng.pick(&given[..5])).to_owned()],
            family_name: of.family_name.clone(),
            previous_family_names: Vec::new(),
            birth_date: self.birth_date(1930, 2024),
            gender: if male { Gender::Male } else { Gender::Female },
            postcode: of.postcode.clone(),
            nhs_number: self.maybe_own_nhs(),
        }
    }

    fn same_name_elsewhere(&mut self, of: &Person) -> Person {
        let mut p = of.clone();
        let mut postcode = self.postcode();
        while of.postcode.as_ref().map(Postcode::district) == Some(postcode.district()) {
            postcode = self.postcode();
        }
        p.postcode = Some(postcode);
        p.previous_family_names.clear();
        p.nhs_number = self.maybe_own_nhs();
        p
    }
}
