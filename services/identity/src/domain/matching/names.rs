//! Names: kept intact as given, compared through a folded key. Latin-script
//! names are folded (accents, case, hyphens, apostrophes, spaces, Mc/Mac)
//! and compared by Jaro–Winkler similarity, Double Metaphone and nicknames;
//! names in other scripts compare exactly after NFKC, since phonetic codes
//! for English say nothing about them.

use rphonetic::DoubleMetaphone;
use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};

/// Jaro–Winkler similarity from which two folded Latin names count as a
/// spelling variant ("Jonh"/"John" 0.97); chosen so that distinct common
/// names rarely pass.
const SIMILAR_JARO_WINKLER: f64 = 0.92;
/// The shortest names in which one typo still counts as similar ("Hatnah"
/// for "Hannah"); in shorter ones it makes another name ("Jan", "Jon").
const MIN_TYPO_LEN: usize = 5;
/// The lower similarity enough for names that also sound alike ("Jane"
/// and "Joan", 0.85, are two names).
const PHONETIC_JARO_WINKLER: f64 = 0.88;

/// A name prepared for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameKey {
    /// The folded name: the comparison key.
    key: String,
    /// The folded parts of a double-barrelled or multi-word name.
    parts: Vec<String>,
    latin: bool,
    /// Double Metaphone primary and alternate codes (Latin names only).
    phonetic: Option<(String, String)>,
}

/// How two names agree, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameAgreement {
    Exact,
    /// One is a nickname of the other, or both of one full name.
    Nickname,
    /// A spelling variant: close Jaro–Winkler or the same phonetic code.
    Similar,
    /// One name is a part of the other's double-barrelled name.
    Part,
    /// One is a single initial and the other starts with it.
    Initial,
    Disagree,
}

impl NameKey {
    pub fn new(name: &str) -> Self {
        let nfkc: String = name.nfkc().collect();
        let latin = is_latin(&nfkc);
        if !latin {
            let key: String = nfkc
                .chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect();
            return NameKey {
                parts: vec![key.clone()],
                key,
                latin,
                phonetic: None,
            };
        }
        let parts: Vec<String> = fold_latin(&nfkc)
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let key = mc_for_mac(&parts.concat());
        let encoded = DoubleMetaphone::default().double_metaphone(&key);
        NameKey {
            parts: parts.iter().map(|p| mc_for_mac(p)).collect(),
            phonetic: Some((encoded.primary(), encoded.alternate())),
            key,
            latin,
        }
    }

    /// The folded name, e.g. "obrien" for "O'Brien", "mcdonald" for
    /// "MacDonald", "王伟" for "王伟".
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn is_latin(&self) -> bool {
        self.latin
    }

    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }

    /// The primary Double Metaphone code, or the folded name for names in
    /// other scripts: what a phonetic blocking key is made of.
    pub fn phonetic_key(&self) -> &str {
        match &self.phonetic {
            Some((primary, _)) if !primary.is_empty() => primary,
            _ => &self.key,
        }
    }

    /// The key of the full name this one is a nickname of (the first, if
    /// several), else its own: "bob" → "robert".
    pub fn canonical_given(&self) -> &str {
        nicknames_of(&self.key)
            .first()
            .copied()
            .unwrap_or(&self.key)
    }

    /// The phonetic code of `canonical_given`, so nicknames and spelling
    /// variants of a given name share a blocking key.
    pub fn canonical_given_phonetic(&self) -> String {
        if !self.latin {
            return self.key.clone();
        }
        let code = DoubleMetaphone::default()
            .double_metaphone(self.canonical_given())
            .primary();
        if code.is_empty() {
            self.key.clone()
        } else {
            code
        }
    }

    pub fn initial(&self) -> Option<char> {
        self.key.chars().next()
    }

    /// Compares as surnames or given names alike; nicknames only count
    /// where `nicknames` is set (given names).
    pub fn compare(&self, other: &NameKey, nicknames: bool) -> NameAgreement {
        if self.key.is_empty() || other.key.is_empty() {
            return NameAgreement::Disagree;
        }
        if self.key == other.key {
            return NameAgreement::Exact;
        }
        if !self.latin || !other.latin {
            return NameAgreement::Disagree;
        }
        if nicknames && are_nicknames(&self.key, &other.key) {
            return NameAgreement::Nickname;
        }
        if self.key.len() > 1 && other.key.len() > 1 && self.similar(other) {
            return NameAgreement::Similar;
        }
        let part_of = |a: &NameKey, b: &NameKey| {
            a.parts.len() > 1 && a.parts.iter().any(|p| p.len() > 2 && *p == b.key)
        };
        if part_of(self, other) || part_of(other, self) {
            return NameAgreement::Part;
        }
        let (short, long) = if self.key.len() <= other.key.len() {
            (self, other)
        } else {
            (other, self)
        };
        if short.key.len() == 1 && long.key.starts_with(&short.key) {
            return NameAgreement::Initial;
        }
        NameAgreement::Disagree
    }

    fn similar(&self, other: &NameKey) -> bool {
        let jaro_winkler = strsim::jaro_winkler(&self.key, &other.key);
        if jaro_winkler >= SIMILAR_JARO_WINKLER {
            return true;
        }
        // One slip of the keyboard (a letter changed, lost, doubled or two
        // swapped) in a name long enough that it still says which name.
        let shorter = self.key.len().min(other.key.len());
        let slips = strsim::osa_distance(&self.key, &other.key);
        if shorter >= MIN_TYPO_LEN && slips <= 1 {
            return true;
        }
        // In a four-letter name only two letters swapped: a changed letter
        // there is as often another name ("Jane", "Jade").
        if shorter == 4 && slips == 1 && strsim::levenshtein(&self.key, &other.key) == 2 {
            return true;
        }
        // A shared sound alone joins different names ("Jane", "Joan"); with
        // a close spelling it catches "Smyth" for "Smith".
        match (&self.phonetic, &other.phonetic) {
            (Some((p1, a1)), Some((p2, a2))) if jaro_winkler >= PHONETIC_JARO_WINKLER => {
                p1 == p2 || p1 == a2 || a1 == p2
            }
            _ => false,
        }
    }
}

/// Whether every letter is in a Latin block (Basic Latin to Latin
/// Extended-B, Latin Extended Additional as in "Nguyễn", Extended-C/D).
fn is_latin(nfkc: &str) -> bool {
    nfkc.chars().filter(|c| c.is_alphabetic()).all(|c| {
        let c = u32::from(c);
        c <= 0x024F
            || (0x1E00..=0x1EFF).contains(&c)
            || (0x2C60..=0x2C7F).contains(&c)
            || (0xA720..=0xA7FF).contains(&c)
    })
}

/// Accents and marks dropped (NFKD), then letters NFKD leaves alone
/// ("ß", "ø", "ł") transliterated, lower case; separators kept for now.
fn fold_latin(name: &str) -> String {
    let unmarked: String = name.nfkd().filter(|c| !is_combining_mark(*c)).collect();
    deunicode::deunicode(&unmarked).to_ascii_lowercase()
}

/// "Mac" and "Mc" are one prefix in Scottish and Irish surnames.
fn mc_for_mac(key: &str) -> String {
    match key.strip_prefix("mac") {
        Some(rest) if rest.len() >= 3 => format!("mc{rest}"),
        _ => key.to_owned(),
    }
}

fn are_nicknames(a: &str, b: &str) -> bool {
    let (full_a, full_b) = (nicknames_of(a), nicknames_of(b));
    full_a.contains(&b) || full_b.contains(&a) || full_a.iter().any(|n| full_b.contains(n))
}

/// The full given names a folded nickname stands for (empty if it is none).
fn nicknames_of(key: &str) -> &'static [&'static str] {
    NICKNAMES
        .iter()
        .find(|(nick, _)| *nick == key)
        .map_or(&[], |(_, full)| *full)
}

/// Common English given-name nicknames and the full names they stand for.
const NICKNAMES: &[(&str, &[&str])] = &[
    ("bob", &["robert"]),
    ("bobby", &["robert"]),
    ("rob", &["robert"]),
    ("robbie", &["robert"]),
    ("bert", &["robert", "albert", "herbert"]),
    ("bill", &["william"]),
    ("billy", &["william"]),
    ("will", &["william"]),
    ("willie", &["william"]),
    ("liam", &["william"]),
    ("liz", &["elizabeth"]),
    ("lizzie", &["elizabeth"]),
    ("lizzy", &["elizabeth"]),
    ("beth", &["elizabeth", "bethany"]),
    ("betty", &["elizabeth"]),
    ("eliza", &["elizabeth"]),
    ("elsie", &["elizabeth"]),
    ("peggy", &["margaret"]),
    ("maggie", &["margaret"]),
    ("meg", &["margaret"]),
    ("madge", &["margaret"]),
    ("jim", &["james"]),
    ("jimmy", &["james"]),
    ("jamie", &["james"]),
    ("tom", &["thomas"]),
    ("tommy", &["thomas"]),
    ("kate", &["katherine", "catherine", "kathryn"]),
    ("katie", &["katherine", "catherine", "kathryn"]),
    ("kathy", &["katherine", "catherine", "kathryn"]),
    ("cathy", &["catherine", "katherine"]),
    ("kat", &["katherine", "catherine"]),
    ("dave", &["david"]),
    ("davey", &["david"]),
    ("mike", &["michael"]),
    ("mick", &["michael"]),
    ("mickey", &["michael"]),
    ("sue", &["susan", "suzanne"]),
    ("susie", &["susan", "suzanne"]),
    ("chris", &["christopher", "christine", "christina"]),
    ("kit", &["christopher"]),
    ("alex", &["alexander", "alexandra"]),
    ("sandy", &["alexander", "alexandra"]),
    ("sam", &["samuel", "samantha"]),
    ("sammy", &["samuel", "samantha"]),
    ("jack", &["john"]),
    ("johnny", &["john"]),
    ("harry", &["henry", "harold"]),
    ("hal", &["henry", "harold"]),
    ("dan", &["daniel"]),
    ("danny", &["daniel"]),
    ("ben", &["benjamin"]),
    ("charlie", &["charles", "charlotte"]),
    ("chuck", &["charles"]),
    ("ed", &["edward", "edmund"]),
    ("eddie", &["edward"]),
    ("ted", &["edward"]),
    ("ned", &["edward"]),
    ("fred", &["frederick"]),
    ("freddie", &["frederick"]),
    ("jo", &["joanne", "josephine", "joanna"]),
    ("joe", &["joseph"]),
    ("joey", &["joseph"]),
    ("jenny", &["jennifer"]),
    ("jen", &["jennifer"]),
    ("nick", &["nicholas"]),
    ("nicky", &["nicholas", "nicola"]),
    ("matt", &["matthew"]),
    ("andy", &["andrew"]),
    ("drew", &["andrew"]),
    ("tony", &["anthony"]),
    ("steve", &["stephen", "steven"]),
    ("pete", &["peter"]),
    ("pat", &["patrick", "patricia"]),
    ("patsy", &["patricia"]),
    ("trish", &["patricia"]),
    ("dick", &["richard"]),
    ("rick", &["richard"]),
    ("ricky", &["richard"]),
    ("rich", &["richard"]),
    ("ron", &["ronald"]),
    ("ronnie", &["ronald"]),
    ("don", &["donald"]),
    ("gerry", &["gerald", "geraldine"]),
    ("jerry", &["gerald", "jeremy"]),
    ("greg", &["gregory"]),
    ("ken", &["kenneth"]),
    ("kenny", &["kenneth"]),
    ("len", &["leonard"]),
    ("larry", &["lawrence", "laurence"]),
    ("phil", &["philip", "phillip"]),
    ("tim", &["timothy"]),
    ("vic", &["victor", "victoria"]),
    ("vicky", &["victoria"]),
    ("debbie", &["deborah"]),
    ("deb", &["deborah"]),
    ("jackie", &["jacqueline"]),
    ("mandy", &["amanda"]),
    ("becky", &["rebecca"]),
    ("becca", &["rebecca"]),
    ("abby", &["abigail"]),
    ("ellie", &["eleanor", "elizabeth"]),
    ("nell", &["eleanor", "helen"]),
    ("nellie", &["eleanor", "helen"]),
    ("polly", &["mary"]),
    ("molly", &["mary"]),
    ("annie", &["ann", "anne"]),
    ("nancy", &["ann", "anne"]),
    ("jess", &["jessica"]),
    ("jessie", &["jessica"]),
    ("sally", &["sarah"]),
    ("sadie", &["sarah"]),
    ("di", &["diana", "diane"]),
    ("val", &["valerie"]),
    ("bel", &["isabel", "isabella"]),
    ("izzy", &["isabel", "isabella"]),
    ("sophie", &["sophia"]),
    ("tilly", &["matilda"]),
    ("theo", &["theodore"]),
    ("zach", &["zachary"]),
    ("olly", &["oliver"]),
    ("ollie", &["oliver"]),
    ("archie", &["archibald"]),
    ("gill", &["gillian"]),
    ("jill", &["gillian"]),
    ("lou", &["louise", "louis"]),
    ("ray", &["raymond"]),
    ("reg", &["reginald"]),
    ("stan", &["stanley"]),
    ("terry", &["terence"]),
    ("wendy", &["gwendolen"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> NameAgreement {
        NameKey::new(a).compare(&NameKey::new(b), true)
    }

    #[test]
    fn names_keep_their_script_and_fold_for_comparison() {
        assert_eq!(NameKey::new("Siân").key(), "sian");
        assert_eq!(NameKey::new("Zoë").key(), "zoe");
        assert_eq!(NameKey::new("Nguyễn").key(), "nguyen");
        assert_eq!(NameKey::new("Łukasz").key(), "lukasz");
        assert_eq!(NameKey::new("Müller").key(), "muller");
        assert_eq!(NameKey::new("ＳＭＩＴＨ").key(), "smith");
        assert_eq!(NameKey::new("王").key(), "王");
        assert!(!NameKey::new("王伟").is_latin());
        assert!(!NameKey::new("Ελένη").is_latin());
        assert!(NameKey::new("Nguyễn").is_latin());
        assert_eq!(cmp("SIAN", "Siân"), NameAgreement::Exact);
        assert_eq!(cmp("Zoe", "ZOË"), NameAgreement::Exact);
    }

    #[test]
    fn apostrophes_hyphens_and_spaces_do_not_matter() {
        for variant in ["OBrien", "O Brien", "o'brien", "O\u{2019}Brien", "O-Brien"] {
            assert_eq!(cmp("O'Brien", variant), NameAgreement::Exact, "{variant}");
        }
        assert_eq!(cmp("Smith-Jones", "Smith Jones"), NameAgreement::Exact);
    }

    #[test]
    fn double_barrelled_names_agree_in_part() {
        assert_eq!(cmp("Smith-Jones", "Smith"), NameAgreement::Part);
        assert_eq!(cmp("Jones", "Smith-Jones"), NameAgreement::Part);
        assert_eq!(cmp("Smith-Jones", "Brown"), NameAgreement::Disagree);
    }

    #[test]
    fn mc_and_mac_are_one_prefix() {
        assert_eq!(cmp("McDonald", "MacDonald"), NameAgreement::Exact);
        assert_eq!(cmp("Mac Donald", "mcdonald"), NameAgreement::Exact);
        assert_eq!(NameKey::new("Mack").key(), "mack");
    }

    #[test]
    fn nicknames_count_for_given_names() {
        for (nick, full) in [
            ("Bob", "Robert"),
            ("Robbie", "Robert"),
            ("Bill", "William"),
            ("Billy", "William"),
            ("Liz", "Elizabeth"),
            ("Betty", "Elizabeth"),
            ("Peggy", "Margaret"),
            ("Jimmy", "James"),
            ("Kate", "Catherine"),
            ("Katie", "Katherine"),
            ("Jack", "John"),
            ("Harry", "Henry"),
            ("Sam", "Samantha"),
        ] {
            assert_eq!(cmp(nick, full), NameAgreement::Nickname, "{nick}");
            assert_eq!(cmp(full, nick), NameAgreement::Nickname, "{nick}");
        }
        // two nicknames of one name
        assert_eq!(cmp("Bob", "Rob"), NameAgreement::Nickname);
        assert_eq!(cmp("Bob", "James"), NameAgreement::Disagree);
        assert_eq!(
            NameKey::new("Bob").compare(&NameKey::new("Robert"), false),
            NameAgreement::Disagree
        );
        assert_eq!(NameKey::new("Bobby").canonical_given(), "robert");
    }

    #[test]
    fn spelling_variants_are_similar_and_other_names_are_not() {
        assert_eq!(cmp("Jonh", "John"), NameAgreement::Similar);
        assert_eq!(cmp("Smyth", "Smith"), NameAgreement::Similar);
        assert_eq!(cmp("Catherine", "Katherine"), NameAgreement::Similar);
        assert_eq!(cmp("Hatnah", "Hannah"), NameAgreement::Similar);
        assert_eq!(cmp("Jan", "Jon"), NameAgreement::Disagree);
        assert_eq!(cmp("Hlal", "Hall"), NameAgreement::Similar);
        assert_eq!(cmp("Jade", "Jane"), NameAgreement::Disagree);
        assert_eq!(cmp("Oliver", "Olivia"), NameAgreement::Disagree);
        assert_eq!(cmp("Jack", "Jane"), NameAgreement::Disagree);
        assert_eq!(cmp("Jane", "Joan"), NameAgreement::Disagree);
        assert_eq!(cmp("Smith", "Jones"), NameAgreement::Disagree);
    }

    #[test]
    fn other_scripts_compare_exactly() {
        assert_eq!(cmp("王伟", "王伟"), NameAgreement::Exact);
        assert_eq!(cmp("王伟", "王 伟"), NameAgreement::Exact);
        assert_eq!(cmp("王伟", "汪伟"), NameAgreement::Disagree);
        assert_eq!(cmp("王伟", "Wang Wei"), NameAgreement::Disagree);
        assert_eq!(cmp("محمد", "محمد"), NameAgreement::Exact);
        assert_eq!(NameKey::new("王伟").phonetic_key(), "王伟");
    }

    #[test]
    fn an_initial_agrees_with_a_name_it_starts() {
        assert_eq!(cmp("J", "John"), NameAgreement::Initial);
        assert_eq!(cmp("J.", "John"), NameAgreement::Initial);
        assert_eq!(cmp("K", "John"), NameAgreement::Disagree);
    }
}
