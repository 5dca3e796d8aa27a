//! A record's category by its content: the classification map.
//!
//! A writer may label a resource's category, but a sexual-health diagnosis
//! sent without a label must not be stored as `general`, or the patient's
//! objection to sharing sexual-health data would not apply to it. The map
//! says which coded values put a resource in which category. It is data, in
//! TOML: the default is `services/records/classification.toml`, compiled in,
//! and its header documents the format. The stored category is the most
//! sensitive of what the codes say and what the writer said
//! ([`ClassificationMap::decide`]).
//!
//! Loading checks every rule (categories, systems, code syntax and check
//! digits, resource types, unknown keys) and names the file and the line of
//! the rule that is wrong.

use std::{collections::HashSet, fmt, path::Path};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Category, SUPPORTED_RESOURCE_TYPES, ValidResource};

/// The map records uses unless `records.classification_map` names another.
pub const DEFAULT_MAP: &str = include_str!("../../classification.toml");

/// How errors in [`DEFAULT_MAP`] name it.
pub const DEFAULT_MAP_NAME: &str =
    "the built-in classification map (services/records/classification.toml)";

pub const SNOMED_CT: &str = "http://snomed.info/sct";
pub const ICD_10: &str = "http://hl7.org/fhir/sid/icd-10";
/// The UK edition of ICD-10, as UK Core names it. Matched as [`ICD_10`].
pub const ICD_10_UK: &str = "http://hl7.org/fhir/sid/icd-10-uk";
pub const LOINC: &str = "http://loinc.org";

const CATEGORY_NAMES: &str = "general, social_care, mental_health, sexual_health or safeguarding";

/// How sensitive a category is: `general < social_care < mental_health <
/// sexual_health < safeguarding`. Safeguarding is the most sensitive: shown
/// to the wrong person (an abuser can be a carer or a relative), it can put
/// someone at risk of harm. Sexual health is next: much of it (sexually
/// transmitted infections, abortion) has confidentiality rules of its own in
/// law. Then mental health, then social care. A record has one category, so
/// when several apply the most sensitive is stored.
pub fn sensitivity(category: Category) -> u8 {
    match category {
        Category::General => 0,
        Category::SocialCare => 1,
        Category::MentalHealth => 2,
        Category::SexualHealth => 3,
        Category::Safeguarding => 4,
    }
}

/// The more sensitive of two categories.
pub fn most_sensitive(a: Category, b: Category) -> Category {
    if sensitivity(b) > sensitivity(a) {
        b
    } else {
        a
    }
}

/// What is wrong with a classification map, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    /// The file's path, or [`DEFAULT_MAP_NAME`].
    pub file: String,
    /// 1-based, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}, line {line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for MapError {}

/// A code system, with the known ones told apart. ICD-10 and its UK edition
/// are one system here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum System {
    SnomedCt,
    Icd10,
    Loinc,
    Other(String),
}

impl System {
    /// The system a resource's Coding names. The known systems are
    /// recognised even when misspelt in scheme, case or a trailing slash: a
    /// writer's typo must not hide a sensitive code.
    fn of(uri: &str) -> System {
        let loose = loosen(uri);
        if loose == loosen(SNOMED_CT) {
            System::SnomedCt
        } else if loose == loosen(ICD_10) || loose == loosen(ICD_10_UK) {
            System::Icd10
        } else if loose == loosen(LOINC) {
            System::Loinc
        } else {
            System::Other(uri.to_owned())
        }
    }

    /// The system a map's rule names: a URI, and a known one spelt exactly.
    fn parse(uri: &str) -> Result<System, String> {
        if uri.is_empty() {
            return Err(
                "system is empty: name the code system by its URI, e.g. http://snomed.info/sct"
                    .into(),
            );
        }
        if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("system `{}` contains spaces", uri.escape_debug()));
        }
        if !["http://", "https://", "urn:"]
            .iter()
            .any(|scheme| uri.starts_with(scheme))
        {
            return Err(format!(
                "system `{uri}` is not a URI: FHIR names code systems by URI, e.g. http://snomed.info/sct"
            ));
        }
        let system = System::of(uri);
        let canonical = match system {
            System::SnomedCt => SNOMED_CT,
            System::Loinc => LOINC,
            System::Icd10 if loosen(uri) == loosen(ICD_10_UK) => ICD_10_UK,
            System::Icd10 => ICD_10,
            System::Other(_) => return Ok(system),
        };
        if uri != canonical {
            return Err(format!(
                "system `{uri}` should be written `{canonical}`, as FHIR spells it"
            ));
        }
        Ok(system)
    }

    fn name(&self) -> &str {
        match self {
            System::SnomedCt => "SNOMED CT",
            System::Icd10 => "ICD-10",
            System::Loinc => "LOINC",
            System::Other(uri) => uri,
        }
    }

    /// A code as compared: ICD-10 without dots and in capitals.
    fn normalise(&self, code: &str) -> String {
        match self {
            System::Icd10 => code
                .trim()
                .chars()
                .filter(|&c| c != '.')
                .map(|c| c.to_ascii_uppercase())
                .collect(),
            _ => code.trim().to_owned(),
        }
    }

    /// Checks a map's code (or prefix) and returns it normalised.
    fn check(&self, code: &str, prefix: bool) -> Result<String, String> {
        let what = if prefix { "prefix" } else { "code" };
        if code.is_empty() {
            return Err(format!("{what} is empty"));
        }
        if code.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{what} `{}` contains spaces", code.escape_debug()));
        }
        if code.chars().count() > 64 {
            return Err(format!("{what} `{code}` is longer than 64 characters"));
        }
        match self {
            System::SnomedCt if prefix => Err(prefixes_unsupported(self)),
            System::Loinc if prefix => Err(prefixes_unsupported(self)),
            System::SnomedCt => check_snomed(code).map(|()| code.to_owned()),
            System::Loinc => check_loinc(code).map(|()| code.to_owned()),
            System::Icd10 => {
                let normal = self.normalise(code);
                if icd10_shape(&normal, prefix) {
                    Ok(normal)
                } else if prefix {
                    Err(format!(
                        "prefix `{code}` is not the start of an ICD-10 code: a capital letter, then digits (e.g. F, A5, B20, Z614)"
                    ))
                } else {
                    Err(format!(
                        "code `{code}` is not an ICD-10 code: a capital letter and two digits, then at most four more (e.g. F32, F32.1)"
                    ))
                }
            }
            System::Other(_) => Ok(code.to_owned()),
        }
    }
}

/// Scheme, case and a trailing slash aside.
fn loosen(uri: &str) -> String {
    let lower = uri.trim().trim_end_matches('/').to_ascii_lowercase();
    match lower.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => lower,
    }
}

fn prefixes_unsupported(system: &System) -> String {
    format!(
        "code_prefixes cannot be used with {}: its codes say nothing about where a concept sits in the hierarchy, so list the codes",
        system.name()
    )
}

/// A SNOMED CT concept id: 6 to 18 digits, no leading zero, a concept's
/// partition ("00" or "10" before the check digit) and a valid Verhoeff
/// check digit.
fn check_snomed(code: &str) -> Result<(), String> {
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("code `{code}` is not a SNOMED CT id: digits only"));
    }
    if !(6..=18).contains(&code.len()) || code.starts_with('0') {
        return Err(format!(
            "code `{code}` is not a SNOMED CT id: 6 to 18 digits, not starting with 0"
        ));
    }
    let partition = &code[code.len() - 3..code.len() - 1];
    if partition != "00" && partition != "10" {
        return Err(format!(
            "code `{code}` is not a SNOMED CT concept id (its partition is {partition}; a concept's is 00 or 10)"
        ));
    }
    if !verhoeff_valid(code) {
        return Err(format!(
            "code `{code}` is not a SNOMED CT id: its check digit is wrong (a typo?)"
        ));
    }
    Ok(())
}

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// The Verhoeff check SNOMED CT ids end with; `digits` are ASCII digits.
fn verhoeff_valid(digits: &str) -> bool {
    let mut check = 0usize;
    for (i, b) in digits.bytes().rev().enumerate() {
        let digit = usize::from(b - b'0');
        check = usize::from(VERHOEFF_D[check][usize::from(VERHOEFF_P[i % 8][digit])]);
    }
    check == 0
}

/// A LOINC code: up to 7 digits, a hyphen and the mod-10 check digit.
fn check_loinc(code: &str) -> Result<(), String> {
    let shape = || {
        format!(
            "code `{code}` is not a LOINC code: digits, a hyphen and a check digit (e.g. 7917-8)"
        )
    };
    let (number, check) = code.split_once('-').ok_or_else(shape)?;
    if number.is_empty()
        || number.len() > 7
        || check.len() != 1
        || !number
            .bytes()
            .chain(check.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(shape());
    }
    let expected = loinc_check_digit(number);
    if check.as_bytes()[0] - b'0' != expected {
        return Err(format!(
            "code `{code}` is not a LOINC code: its check digit should be {expected} (a typo?)"
        ));
    }
    Ok(())
}

/// LOINC's mod-10 check digit (the Luhn algorithm) of the digits before the hyphen.
fn loinc_check_digit(number: &str) -> u8 {
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let digit = u32::from(b - b'0');
            if i % 2 == 0 {
                let doubled = digit * 2;
                doubled / 10 + doubled % 10
            } else {
                digit
            }
        })
        .sum();
    u8::try_from((10 - sum % 10) % 10).unwrap_or(0)
}

/// Normalised ICD-10: a capital letter, then (for a code) two digits and up
/// to four more characters; a prefix may stop anywhere after the letter.
fn icd10_shape(code: &str, prefix: bool) -> bool {
    let bytes = code.as_bytes();
    let Some((first, rest)) = bytes.split_first() else {
        return false;
    };
    if !first.is_ascii_uppercase() || rest.len() > 6 {
        return false;
    }
    let digits = rest.iter().take(2).all(u8::is_ascii_digit);
    let tail = rest
        .iter()
        .skip(2)
        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    digits && tail && (prefix || rest.len() >= 2)
}

/// One entry of the map file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    category: String,
    label: String,
    system: String,
    #[serde(default)]
    codes: Vec<String>,
    #[serde(default)]
    code_prefixes: Vec<String>,
    #[serde(default)]
    resource_types: Option<Vec<String>>,
}

/// A checked rule.
#[derive(Debug, Clone)]
struct Rule {
    category: Category,
    system: System,
    codes: HashSet<String>,
    prefixes: Vec<String>,
    /// `None`: every resource type.
    resource_types: Option<Vec<String>>,
}

impl Rule {
    fn compile(raw: RawRule) -> Result<Rule, String> {
        let category = Category::from_stored(&raw.category).ok_or_else(|| {
            format!(
                "category `{}` is not one of {CATEGORY_NAMES}",
                raw.category.escape_debug()
            )
        })?;
        if raw.label.trim().is_empty() {
            return Err("label is empty: say, for people, what these codes are".into());
        }
        let system = System::parse(&raw.system)?;
        if raw.codes.is_empty() && raw.code_prefixes.is_empty() {
            return Err("has neither codes nor code_prefixes, so it would match nothing".into());
        }
        let mut codes = HashSet::new();
        for (i, code) in raw.codes.iter().enumerate() {
            codes.insert(
                system
                    .check(code, false)
                    .map_err(|e| format!("codes[{i}]: {e}"))?,
            );
        }
        let mut prefixes = Vec::new();
        for (i, prefix) in raw.code_prefixes.iter().enumerate() {
            prefixes.push(
                system
                    .check(prefix, true)
                    .map_err(|e| format!("code_prefixes[{i}]: {e}"))?,
            );
        }
        if let Some(types) = &raw.resource_types {
            if types.is_empty() {
                return Err(
                    "resource_types is empty: leave it out to match every resource type".into(),
                );
            }
            for (i, t) in types.iter().enumerate() {
                if !SUPPORTED_RESOURCE_TYPES.contains(&t.as_str()) {
                    return Err(format!(
                        "resource_types[{i}]: `{}` is not a resource type records stores ({})",
                        t.escape_debug(),
                        SUPPORTED_RESOURCE_TYPES.join(", ")
                    ));
                }
            }
        }
        Ok(Rule {
            category,
            system,
            codes,
            prefixes,
            resource_types: raw.resource_types,
        })
    }

    fn applies_to(&self, resource_type: &str) -> bool {
        self.resource_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == resource_type))
    }

    fn matches(&self, system: &System, code: &str) -> bool {
        self.system == *system
            && (self.codes.contains(code) || self.prefixes.iter().any(|p| code.starts_with(p)))
    }
}

/// Which coded values put a resource in which category. Built only by
/// parsing a map that passes every check.
#[derive(Debug, Clone)]
pub struct ClassificationMap {
    name: String,
    rules: Vec<Rule>,
}

impl ClassificationMap {
    /// The map that ships with records ([`DEFAULT_MAP`]).
    pub fn builtin() -> Result<Self, MapError> {
        Self::parse(DEFAULT_MAP_NAME, DEFAULT_MAP)
    }

    /// Reads and checks a map file.
    pub fn load(path: &Path) -> Result<Self, MapError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MapError {
            file: name.clone(),
            line: None,
            message: format!("cannot be read ({e})"),
        })?;
        Self::parse(&name, &text)
    }

    /// Checks a map's text; `name` says where it came from in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, MapError> {
        let error = |line: Option<usize>, message: String| MapError {
            file: name.to_owned(),
            line,
            message,
        };
        let mut table = config::Format::parse(&config::FileFormat::Toml, None, text)
            .map_err(|e| toml_syntax_error(name, &e.to_string()))?;
        if let Some(key) = table.keys().find(|k| k.as_str() != "rule") {
            return Err(error(
                key_line(text, key),
                format!("unknown key `{key}`: a map has only [[rule]] entries"),
            ));
        }
        let Some(rules) = table.remove("rule") else {
            return Err(error(
                None,
                "has no [[rule]] entries: a map that classifies nothing would store every sensitive record as general".into(),
            ));
        };
        let rules = rules.into_array().map_err(|_| {
            error(
                key_line(text, "rule"),
                "`rule` must be an array of tables: write each entry as [[rule]]".into(),
            )
        })?;
        // Each rule's line is its [[rule]] header's, when the headers can be
        // told apart from the text (they always can in a map written as the
        // default is).
        let headers = rule_header_lines(text);
        let headers_known = headers.len() == rules.len();
        let line_of = |i: usize| headers_known.then(|| headers[i]);
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, value) in rules.into_iter().enumerate() {
            let raw: RawRule = value
                .try_deserialize()
                .map_err(|e| error(line_of(i), format!("rule {}: {e}", i + 1)))?;
            let label = raw.label.clone();
            let rule = Rule::compile(raw).map_err(|e| {
                error(
                    line_of(i),
                    format!("rule {} (\"{}\"): {e}", i + 1, label.escape_debug()),
                )
            })?;
            compiled.push(rule);
        }
        Ok(ClassificationMap {
            name: name.to_owned(),
            rules: compiled,
        })
    }

    /// Where the map came from: a path, or [`DEFAULT_MAP_NAME`].
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The category the resource's codes put it in: the most sensitive of
    /// the rules that match, general when none does.
    pub fn classify(&self, resource: &ValidResource) -> Category {
        self.matching(resource.resource_type(), resource.as_json())
            .into_iter()
            .map(|rule| rule.category)
            .fold(Category::General, most_sensitive)
    }

    /// The category to store: the more sensitive of what the codes say and
    /// the writer's label. A label can raise sensitivity, never lower it.
    pub fn decide(&self, resource: &ValidResource, label: Category) -> Category {
        most_sensitive(self.classify(resource), label)
    }

    fn matching(&self, resource_type: &str, resource: &Map<String, Value>) -> Vec<&Rule> {
        let codings: Vec<(System, String)> = codings(resource)
            .into_iter()
            .map(|(system, code)| {
                let system = System::of(system);
                let code = system.normalise(code);
                (system, code)
            })
            .collect();
        self.rules
            .iter()
            .filter(|rule| rule.applies_to(resource_type))
            .filter(|rule| {
                codings
                    .iter()
                    .any(|(system, code)| rule.matches(system, code))
            })
            .collect()
    }
}

/// Every Coding in a resource, walked structurally: any object with a string
/// `system` and a string `code`, wherever it is (CodeableConcept.coding
/// items, Encounter.class, contained resources, ...).
fn codings(resource: &Map<String, Value>) -> Vec<(&str, &str)> {
    let mut found = Vec::new();
    let mut pending: Vec<&Value> = resource.values().collect();
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(object) => {
                if let (Some(Value::String(system)), Some(Value::String(code))) =
                    (object.get("system"), object.get("code"))
                {
                    found.push((system.as_str(), code.as_str()));
                }
                pending.extend(object.values());
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    found
}

/// The 1-based lines of the `[[rule]]` headers.
fn rule_header_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split('#').next().unwrap_or("");
            code.chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                == "[[rule]]"
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// The first line that defines top-level `key` (as `key = ...` or a table
/// header), if there is one.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches('[').trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(['=', ']', '.']))
        })
        .map(|i| i + 1)
}

/// toml's message ("TOML parse error at line N, column M", the line quoted,
/// then what was wrong) as one line that names the line.
fn toml_syntax_error(name: &str, message: &str) -> MapError {
    let mut lines = message.lines();
    let line = lines
        .next()
        .and_then(|first| first.strip_prefix("TOML parse error at line "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok());
    let detail: Vec<&str> = lines
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('|')
                && !l
                    .split_once(" |")
                    .is_some_and(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let message = if line.is_some() && !detail.is_empty() {
        format!("not valid TOML: {}", detail.join("; "))
    } else {
        format!(
            "not valid TOML: {}",
            message.lines().collect::<Vec<_>>().join("; ")
        )
    };
    MapError {
        file: name.to_owned(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::domain::PatientId;

    fn patient() -> PatientId {
        PatientId::parse("p", "p-1").expect("id")
    }

    fn resource(json: Value) -> ValidResource {
        ValidResource::parse(&json.to_string(), &patient(), 1 << 20).expect("valid resource")
    }

    fn builtin() -> ClassificationMap {
        ClassificationMap::builtin().expect("the built-in map is valid")
    }

    fn concept(system: &str, code: &str) -> Value {
        json!({"coding": [{"system": system, "code": code}]})
    }

    /// A resource of `resource_type` with one coded `code` element.
    fn coded(resource_type: &str, system: &str, code: &str) -> ValidResource {
        resource(json!({
            "resourceType": resource_type,
            "subject": {"reference": "Patient/p-1"},
            "code": concept(system, code),
        }))
    }

    fn condition(system: &str, code: &str) -> ValidResource {
        coded("Condition", system, code)
    }

    fn observation(system: &str, code: &str) -> ValidResource {
        coded("Observation", system, code)
    }

    /// A full code that starts with an ICD-10 prefix, dotted as people write it.
    fn icd10_under(prefix: &str) -> String {
        format!("{prefix:0<3}.9")
    }

    #[test]
    fn every_entry_of_the_default_map_classifies_a_resource_carrying_it() {
        let map = builtin();
        let mut checked = 0;
        for (i, rule) in map.rules.iter().enumerate() {
            let resource_type = rule
                .resource_types
                .as_ref()
                .map_or("Observation", |types| types[0].as_str());
            let systems: &[&str] = match &rule.system {
                System::SnomedCt => &[SNOMED_CT],
                System::Loinc => &[LOINC],
                System::Icd10 => &[ICD_10, ICD_10_UK],
                System::Other(_) => panic!("the default map uses only known systems"),
            };
            let mut codes: Vec<String> = rule.codes.iter().cloned().collect();
            codes.extend(rule.prefixes.iter().map(|p| icd10_under(p)));
            for system in systems {
                for code in &codes {
                    let found = map.classify(&coded(resource_type, system, code));
                    assert_eq!(
                        found,
                        rule.category,
                        "rule {}: {} {code} in a {resource_type}",
                        i + 1,
                        rule.system.name(),
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 50, "only {checked} codes checked");
    }

    /// How many rules name each category.
    fn categories_covered(map: &ClassificationMap) -> HashMap<&'static str, usize> {
        let mut covered = HashMap::new();
        for rule in &map.rules {
            *covered.entry(rule.category.as_str()).or_insert(0) += 1;
        }
        covered
    }

    /// One code per default rule, with its category written out here, so
    /// that a change of category in the file is a visible change here too.
    #[test]
    fn the_default_map_puts_these_codes_in_these_categories() {
        use Category::*;
        let map = builtin();
        let cases = [
            ("Condition", SNOMED_CT, "165816005", SexualHealth),
            ("Condition", ICD_10, "B24", SexualHealth),
            ("Observation", LOINC, "56888-1", SexualHealth),
            ("Condition", SNOMED_CT, "15628003", SexualHealth),
            ("Condition", ICD_10, "A56.0", SexualHealth),
            ("Observation", LOINC, "24111-7", SexualHealth),
            ("Observation", SNOMED_CT, "13197004", SexualHealth),
            ("Encounter", ICD_10_UK, "Z30.0", SexualHealth),
            ("Procedure", SNOMED_CT, "386639001", SexualHealth),
            ("Condition", ICD_10, "O04.9", SexualHealth),
            ("Condition", ICD_10, "F41.1", MentalHealth),
            ("Condition", SNOMED_CT, "35489007", MentalHealth),
            ("Observation", LOINC, "44261-6", MentalHealth),
            ("Condition", ICD_10, "T74.2", Safeguarding),
            ("Observation", SNOMED_CT, "766561000000109", Safeguarding),
            ("ServiceRequest", SNOMED_CT, "306238000", SocialCare),
            (
                "DocumentReference",
                SNOMED_CT,
                "326321000000103",
                SocialCare,
            ),
            ("Condition", SNOMED_CT, "38341003", General), // Hypertensive disorder
            ("Condition", ICD_10, "I10", General),         // Essential hypertension
            ("Observation", LOINC, "8867-4", General),     // Heart rate
        ];
        for (resource_type, system, code, expected) in cases {
            assert_eq!(
                map.classify(&coded(resource_type, system, code)),
                expected,
                "{resource_type} {system} {code}"
            );
        }
    }

    #[test]
    fn the_default_map_covers_every_sensitive_category() {
        let covered = categories_covered(&builtin());
        for category in [
            "sexual_health",
            "mental_health",
            "safeguarding",
            "social_care",
        ] {
            assert!(covered.contains_key(category), "{category}: {covered:?}");
        }
    }

    #[test]
    fn an_hiv_condition_is_sexual_health() {
        let map = builtin();
        assert_eq!(
            map.classify(&condition(SNOMED_CT, "86406008")),
            Category::SexualHealth
        );
        for (system, code) in [(ICD_10, "B20.0"), (ICD_10_UK, "Z21X"), (ICD_10_UK, "A63.0")] {
            assert_eq!(
                map.classify(&condition(system, code)),
                Category::SexualHealth,
                "{system} {code}"
            );
        }
    }

    #[test]
    fn an_f32_depression_condition_is_mental_health_in_either_icd10_edition() {
        let map = builtin();
        for (system, code) in [
            (ICD_10, "F32"),
            (ICD_10, "F32.1"),
            (ICD_10_UK, "F321"),
            (ICD_10_UK, "f32.1"),
        ] {
            assert_eq!(
                map.classify(&condition(system, code)),
                Category::MentalHealth,
                "{system} {code}"
            );
        }
    }

    #[test]
    fn a_chlamydia_observation_is_sexual_health_by_its_loinc_code() {
        let test = resource(json!({
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": "Patient/p-1"},
            "code": {"coding": [{"system": LOINC, "code": "21613-5",
                                 "display": "Chlamydia trachomatis DNA [Presence] in Specimen by NAA with probe detection"}]},
            "valueCodeableConcept": {"coding": [{"system": SNOMED_CT, "code": "260385009", "display": "Negative"}]},
        }));
        assert_eq!(builtin().classify(&test), Category::SexualHealth);
    }

    #[test]
    fn a_heart_rate_observation_stays_general() {
        let heart_rate = resource(json!({
            "resourceType": "Observation",
            "status": "final",
            "subject": {"reference": "Patient/p-1"},
            "category": [concept("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")],
            "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        }));
        assert_eq!(builtin().classify(&heart_rate), Category::General);
    }

    #[test]
    fn codes_are_read_from_every_coded_element() {
        let map = builtin();
        let cases = [
            json!({"resourceType": "Encounter", "subject": {"reference": "Patient/p-1"},
                   "class": {"system": SNOMED_CT, "code": "386639001"}}),
            json!({"resourceType": "Procedure", "subject": {"reference": "Patient/p-1"},
                   "reasonCode": [{"text": "x"}, concept(ICD_10, "Z30.0")]}),
            json!({"resourceType": "Observation", "subject": {"reference": "Patient/p-1"},
                   "valueCodeableConcept": concept(SNOMED_CT, "165816005")}),
            json!({"resourceType": "Observation", "subject": {"reference": "Patient/p-1"},
                   "component": [{"code": concept(LOINC, "8867-4")},
                                 {"code": concept(LOINC, "7917-8")}]}),
            json!({"resourceType": "MedicationRequest", "subject": {"reference": "Patient/p-1"},
                   "medicationCodeableConcept": {"text": "x"},
                   "reasonCode": [concept(SNOMED_CT, "13197004")]}),
            json!({"resourceType": "Immunization", "patient": {"reference": "Patient/p-1"},
                   "vaccineCode": concept("http://example.org/vaccines", "x"),
                   "reasonCode": [concept(SNOMED_CT, "86406008")]}),
            json!({"resourceType": "DocumentReference", "subject": {"reference": "Patient/p-1"},
                   "type": concept(ICD_10, "A54.0")}),
            json!({"resourceType": "Condition", "subject": {"reference": "Patient/p-1"},
                   "category": [concept("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")],
                   "code": {"coding": [{"system": "http://example.org/local", "code": "1"},
                                       {"system": SNOMED_CT, "code": "76272004"}]}}),
            json!({"resourceType": "CarePlan", "subject": {"reference": "Patient/p-1"},
                   "contained": [{"resourceType": "Condition", "code": concept(SNOMED_CT, "15628003")}]}),
        ];
        for json in cases {
            let text = json.to_string();
            assert_eq!(
                map.classify(&resource(json)),
                Category::SexualHealth,
                "{text}"
            );
        }
    }

    #[test]
    fn a_code_counts_only_with_its_system_and_as_a_code() {
        let map = builtin();
        let cases = [
            // A SNOMED CT id under another system, or none.
            json!({"code": concept(LOINC, "86406008")}),
            json!({"code": {"coding": [{"code": "86406008"}]}}),
            // Free text and displays are never read.
            json!({"code": {"text": "HIV infection 86406008"}}),
            json!({"code": {"coding": [{"system": SNOMED_CT, "code": "38341003", "display": "86406008"}]}}),
            // An ICD-10 code that only looks like a chapter.
            json!({"code": concept(ICD_10, "E11.9")}),
            json!({"code": concept(SNOMED_CT, "")}),
        ];
        for mut json in cases {
            json["resourceType"] = json!("Condition");
            json["subject"] = json!({"reference": "Patient/p-1"});
            let text = json.to_string();
            assert_eq!(map.classify(&resource(json)), Category::General, "{text}");
        }
    }

    #[test]
    fn known_systems_are_recognised_through_a_writers_typo() {
        for system in [
            "https://snomed.info/sct",
            "http://snomed.info/sct/",
            "HTTP://SNOMED.INFO/SCT",
        ] {
            assert_eq!(
                builtin().classify(&condition(system, "86406008")),
                Category::SexualHealth,
                "{system}"
            );
        }
    }

    #[test]
    fn resource_types_limit_a_rule() {
        let map = builtin();
        let plan = "326321000000103"; // Social care plan (record artifact)
        assert_eq!(
            map.classify(&coded("CarePlan", SNOMED_CT, plan)),
            Category::SocialCare
        );
        assert_eq!(
            map.classify(&coded("Condition", SNOMED_CT, plan)),
            Category::General
        );
    }

    #[test]
    fn when_several_rules_match_the_most_sensitive_wins() {
        let map = builtin();
        let both = |a: Value, b: Value| {
            resource(
                json!({"resourceType": "Condition", "subject": {"reference": "Patient/p-1"},
                            "code": a, "evidence": [{"code": [b]}]}),
            )
        };
        let cases = [
            (
                concept(ICD_10, "F32.1"),
                concept(SNOMED_CT, "86406008"),
                Category::SexualHealth,
            ),
            (
                concept(SNOMED_CT, "86406008"),
                concept(ICD_10, "F32.1"),
                Category::SexualHealth,
            ),
            (
                concept(ICD_10, "T74.1"),
                concept(SNOMED_CT, "86406008"),
                Category::Safeguarding,
            ),
            (
                concept(SNOMED_CT, "306238000"),
                concept(ICD_10, "F20"),
                Category::MentalHealth,
            ),
            (
                concept(SNOMED_CT, "306238000"),
                concept(LOINC, "8867-4"),
                Category::SocialCare,
            ),
        ];
        for (a, b, expected) in cases {
            assert_eq!(map.classify(&both(a, b)), expected);
        }
    }

    #[test]
    fn sensitivity_is_a_total_order_from_general_to_safeguarding() {
        let order = [
            Category::General,
            Category::SocialCare,
            Category::MentalHealth,
            Category::SexualHealth,
            Category::Safeguarding,
        ];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                let expected = if i >= j { *a } else { *b };
                assert_eq!(most_sensitive(*a, *b), expected, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_writers_label_raises_the_category_and_never_lowers_it() {
        let map = builtin();
        let hiv = condition(SNOMED_CT, "86406008");
        let heart_rate = observation(LOINC, "8867-4");
        let cases = [
            (&hiv, Category::General, Category::SexualHealth),
            (&hiv, Category::SocialCare, Category::SexualHealth),
            (&hiv, Category::MentalHealth, Category::SexualHealth),
            (&hiv, Category::Safeguarding, Category::Safeguarding),
            (&heart_rate, Category::General, Category::General),
            (&heart_rate, Category::MentalHealth, Category::MentalHealth),
        ];
        for (resource, label, expected) in cases {
            assert_eq!(map.decide(resource, label), expected, "label {label:?}");
        }
    }

    #[test]
    fn check_digits_are_computed_as_published() {
        for id in [
            "86406008",
            "165816005",
            "74732009",
            "766561000000109",
            "326321000000103",
        ] {
            assert!(verhoeff_valid(id), "{id}");
        }
        for id in ["86406009", "86406018", "165816006"] {
            assert!(!verhoeff_valid(id), "{id}");
        }
        for (number, check) in [
            ("7917", 8),
            ("5221", 7),
            ("8867", 4),
            ("21613", 5),
            ("44261", 6),
        ] {
            assert_eq!(loinc_check_digit(number), check, "{number}");
        }
    }

    const GOOD_RULE: &str = r#"
[[rule]]
category = "sexual_health"
label = "HIV infection"
system = "http://snomed.info/sct"
codes = ["86406008"]
"#;

    /// A map whose second rule (its header on line 8) is `rule`.
    fn with_second_rule(rule: &str) -> String {
        format!("{GOOD_RULE}\n{rule}")
    }

    #[test]
    fn a_map_with_a_mistake_names_the_file_and_the_line() {
        let bad_rules = [
            (
                "category = \"sexual-health\"\nlabel = \"x\"\nsystem = \"http://snomed.info/sct\"\ncodes = [\"86406008\"]",
                "category `sexual-health`",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"\"\ncodes = [\"86406008\"]",
                "system is empty",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"snomed\"\ncodes = [\"86406008\"]",
                "not a URI",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"https://snomed.info/sct\"\ncodes = [\"86406008\"]",
                "should be written `http://snomed.info/sct`",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"http://snomed.info/sct\"\ncodes = [\"86406008\", \"86406 008\"]",
                "codes[1]: code `86406 008` contains spaces",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"http://snomed.info/sct\"\ncodes = [\"B20\"]",
                "digits only",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"http://snomed.info/sct\"\ncodes = [\"86406009\"]",
                "check digit",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"http://snomed.info/sct\"\ncodes = [\"\"]",
                "codes[0]: code is empty",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"http://snomed.info/sct\"\ncode_prefixes = [\"8640\"]",
                "code_prefixes cannot be used with SNOMED CT",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"http://loinc.org\"\ncodes = [\"7917-9\"]",
                "check digit should be 8",
            ),
            (
                "category = \"sexual_health\"\nlabel = \"x\"\nsystem = \"http://loinc.org\"\ncodes = [\"7917\"]",
                "not a LOINC code",
            ),
            (
                "category = \"mental_health\"\nlabel = \"x\"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"\ncodes = [\"32F\"]",
                "not an ICD-10 code",
            ),
            (
                "category = \"mental_health\"\nlabel = \"x\"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"\ncode_prefixes = [\"F-\"]",
                "not the start of an ICD-10 code",
            ),
            (
                "category = \"mental_health\"\nlabel = \"x\"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"",
                "neither codes nor code_prefixes",
            ),
            (
                "category = \"mental_health\"\nlabel = \"x\"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"\ncodes = []\ncode_prefixes = []",
                "neither codes nor code_prefixes",
            ),
            (
                "category = \"mental_health\"\nlabel = \" \"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"\ncodes = [\"F32\"]",
                "label is empty",
            ),
            (
                "category = \"mental_health\"\nlabel = \"x\"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"\ncode = [\"F32\"]",
                "unknown field `code`",
            ),
            (
                "category = \"mental_health\"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"\ncodes = [\"F32\"]",
                "missing configuration field \"label\"",
            ),
            (
                "category = \"mental_health\"\nlabel = \"x\"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"\ncodes = \"F32\"",
                "rule 2",
            ),
            (
                "category = \"mental_health\"\nlabel = \"x\"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"\ncodes = [\"F32\"]\nresource_types = [\"Conditon\"]",
                "`Conditon` is not a resource type",
            ),
            (
                "category = \"mental_health\"\nlabel = \"x\"\nsystem = \"http://hl7.org/fhir/sid/icd-10\"\ncodes = [\"F32\"]\nresource_types = []",
                "resource_types is empty",
            ),
        ];
        for (rule, expected) in bad_rules {
            let text = with_second_rule(&format!("[[rule]]\n{rule}\n"));
            let err = ClassificationMap::parse("local.toml", &text).expect_err(rule);
            assert_eq!(err.line, Some(8), "{rule}: {err}");
            let shown = err.to_string();
            assert!(
                shown.starts_with("local.toml, line 8: rule 2"),
                "{rule}: {shown}"
            );
            assert!(shown.contains(expected), "{rule}: {shown}");
        }
    }

    #[test]
    fn a_map_that_is_not_toml_or_not_a_list_of_rules_names_the_line() {
        let cases = [
            // A key given twice, and a broken header.
            (
                format!("{GOOD_RULE}codes = [\"1\"]\n"),
                Some(7),
                "not valid TOML",
            ),
            (format!("{GOOD_RULE}[[rule]\n"), Some(7), "not valid TOML"),
            (
                format!("rules = 1\n{GOOD_RULE}"),
                Some(1),
                "unknown key `rules`",
            ),
            (
                format!("{GOOD_RULE}\n[extra]\nx = 1\n"),
                Some(8),
                "unknown key `extra`",
            ),
            ("# nothing\n".to_owned(), None, "has no [[rule]] entries"),
            (
                "[rule]\ncategory = \"general\"\n".to_owned(),
                Some(1),
                "array of tables",
            ),
        ];
        for (text, line, expected) in cases {
            let err = ClassificationMap::parse("local.toml", &text).expect_err(&text);
            assert_eq!(err.line, line, "{text}: {err}");
            assert!(err.to_string().contains(expected), "{text}: {err}");
            assert!(err.to_string().starts_with("local.toml"), "{err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn a_map_file_replaces_the_default_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.toml");
        std::fs::write(&good, GOOD_RULE).expect("write");
        let map = ClassificationMap::load(&good).expect("valid");
        assert_eq!(map.rule_count(), 1);
        assert_eq!(map.name(), good.display().to_string());
        assert_eq!(
            map.classify(&condition(ICD_10, "F32")),
            Category::General,
            "only the file's rules apply"
        );

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, with_second_rule("[[rule]]\ncategory = \"secret\"\n")).expect("write");
        let err = ClassificationMap::load(&bad).expect_err("bad category");
        assert!(
            err.to_string()
                .starts_with(&format!("{}, line 8:", bad.display())),
            "{err}"
        );

        let missing = dir.path().join("missing.toml");
        let err = ClassificationMap::load(&missing).expect_err("missing");
        assert!(err.to_string().contains("missing.toml"), "{err}");
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }
}
