//! Search index fields taken from a FHIR R4 resource when it is written.
//!
//! Records stores resources encrypted, so search cannot look inside them.
//! Like HAPI FHIR's search-parameter tables, we pull out the few fields search
//! needs — the clinical date and the `code` and `category` tokens — at write
//! time and keep those in clear in index tables. Search reads only the index
//! and never decrypts.

use chrono::{DateTime, Days, Months, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use sharedcare_kit::Error;

/// At most this many tokens per resource; further codings are dropped. A
/// bound on the index rows one write can create.
pub const MAX_TOKENS: usize = 64;
/// A coding whose system is longer than this is not indexed (never
/// truncated: a truncated system would match codes it does not hold).
pub const MAX_SYSTEM_CHARS: usize = 256;
/// A coding whose code is longer than this is not indexed, as above.
pub const MAX_CODE_CHARS: usize = 128;

/// The system of AllergyIntolerance.category, whose values are plain codes.
const ALLERGY_CATEGORY_SYSTEM: &str = "http://hl7.org/fhir/allergy-intolerance-category";
/// AllergyIntolerance.category's required value set.
const ALLERGY_CATEGORIES: &[&str] = &["food", "medication", "environment", "biologic"];

/// Which token search parameter a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenParam {
    Code,
    Category,
}

impl TokenParam {
    /// The search parameter's name, as stored in the index.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenParam::Code => "code",
            TokenParam::Category => "category",
        }
    }

    /// The inverse of [`TokenParam::as_str`].
    pub fn from_stored(stored: &str) -> Option<Self> {
        match stored {
            "code" => Some(TokenParam::Code),
            "category" => Some(TokenParam::Category),
            _ => None,
        }
    }
}

/// One coding of a resource, under the search parameter it answers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token {
    pub param: TokenParam,
    /// `""` when the coding has no system.
    pub system: String,
    pub code: String,
}

/// The clinical period a resource is about: [start, end) in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// What records indexes for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchIndex {
    pub date: Option<DateRange>,
    /// Distinct tokens in the order found: `code` first, then `category`.
    pub tokens: Vec<Token>,
}

/// The index fields of a resource of `resource_type`.
///
/// Never fails: the resource was validated before, and an element we cannot
/// read (a number where a code belongs, a date like "yesterday") is skipped
/// rather than refusing a write over a field only search uses. For the date,
/// the first element of the type's list that yields a date wins, so an
/// unreadable one falls through to the next. Unknown types index nothing.
pub fn extract(resource_type: &str, resource: &Map<String, Value>) -> SearchIndex {
    let Some(rules) = Rules::of(resource_type) else {
        return SearchIndex::default();
    };
    let date = rules
        .dates
        .iter()
        .find_map(|element| element.range(resource));
    let mut tokens = Vec::new();
    for (param, element) in [
        (TokenParam::Code, rules.code),
        (TokenParam::Category, rules.category),
    ] {
        if let Some(element) = element {
            element.collect(resource, param, &mut tokens);
        }
    }
    SearchIndex { date, tokens }
}

/// A `code` or `category` query value: `system|code`, `|code` (no system),
/// or `code` (any system). Matching is exact and case-sensitive, as FHIR
/// codes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenQuery {
    /// `None`: any system. `Some("")`: only codings without a system.
    pub system: Option<String>,
    pub code: String,
}

impl TokenQuery {
    /// Parses a query value; errors name `field`. Values longer than we index
    /// are refused, since they could never match.
    pub fn parse(field: &str, value: &str) -> Result<TokenQuery, Error> {
        if value.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        let (system, code) = match value.split_once('|') {
            None => (None, value),
            Some((_, code)) if code.contains('|') => {
                return Err(Error::invalid(
                    field,
                    "must be `system|code`, `|code` or `code`, with at most one `|`",
                ));
            }
            Some((system, code)) => (Some(system), code),
        };
        if code.is_empty() {
            return Err(Error::invalid(field, "has no code after `|`"));
        }
        if system.is_some_and(|system| longer_than(system, MAX_SYSTEM_CHARS)) {
            return Err(Error::invalid(
                field,
                format!("system is longer than {MAX_SYSTEM_CHARS} characters"),
            ));
        }
        if longer_than(code, MAX_CODE_CHARS) {
            return Err(Error::invalid(
                field,
                format!("code is longer than {MAX_CODE_CHARS} characters"),
            ));
        }
        Ok(TokenQuery {
            system: system.map(str::to_owned),
            code: code.to_owned(),
        })
    }

    /// Whether `token` answers this query. The parameter is not compared:
    /// the caller picks the tokens of the parameter being searched.
    pub fn matches(&self, token: &Token) -> bool {
        token.code == self.code
            && self
                .system
                .as_ref()
                .is_none_or(|system| *system == token.system)
    }
}

/// Where a resource type keeps its index fields.
struct Rules {
    /// Tried in order; the first that yields a date wins.
    dates: &'static [DateElement],
    code: Option<TokenElement>,
    category: Option<TokenElement>,
}

/// An element that can give the clinical date, by its path from the root.
#[derive(Clone, Copy)]
enum DateElement {
    /// A `date`, `dateTime` or `instant` string.
    At(&'static [&'static str]),
    /// A `Period`.
    Period(&'static [&'static str]),
}

/// An element holding codes.
#[derive(Clone, Copy)]
enum TokenElement {
    /// A CodeableConcept, or an array of them.
    Concepts(&'static str),
    /// A single Coding.
    Coding(&'static str),
    /// AllergyIntolerance.category: an array of bare codes.
    AllergyCategories(&'static str),
}

const EFFECTIVE: &[DateElement] = &[
    DateElement::At(&["effectiveDateTime"]),
    DateElement::Period(&["effectivePeriod"]),
    DateElement::At(&["effectiveInstant"]),
    DateElement::At(&["issued"]),
];
const ONSET: &[DateElement] = &[
    DateElement::At(&["onsetDateTime"]),
    DateElement::Period(&["onsetPeriod"]),
    DateElement::At(&["recordedDate"]),
];
const PERIOD: &[DateElement] = &[DateElement::Period(&["period"])];

const CODE: Option<TokenElement> = Some(TokenElement::Concepts("code"));
const CATEGORY: Option<TokenElement> = Some(TokenElement::Concepts("category"));
const MEDICATION: Option<TokenElement> = Some(TokenElement::Concepts("medicationCodeableConcept"));

impl Rules {
    fn of(resource_type: &str) -> Option<Rules> {
        let rules = |dates, code, category| {
            Some(Rules {
                dates,
                code,
                category,
            })
        };
        match resource_type {
            "Observation" | "DiagnosticReport" => rules(EFFECTIVE, CODE, CATEGORY),
            "MedicationAdministration" | "MedicationStatement" => {
                rules(EFFECTIVE, MEDICATION, None)
            }
            "Condition" => rules(ONSET, CODE, CATEGORY),
            "AllergyIntolerance" => rules(
                ONSET,
                CODE,
                Some(TokenElement::AllergyCategories("category")),
            ),
            "Encounter" => rules(
                PERIOD,
                Some(TokenElement::Concepts("type")),
                Some(TokenElement::Coding("class")),
            ),
            "Immunization" => rules(
                &[
                    DateElement::At(&["occurrenceDateTime"]),
                    DateElement::At(&["recorded"]),
                ],
                Some(TokenElement::Concepts("vaccineCode")),
                None,
            ),
            "MedicationRequest" => rules(&[DateElement::At(&["authoredOn"])], MEDICATION, CATEGORY),
            "Procedure" => rules(
                &[
                    DateElement::At(&["performedDateTime"]),
                    DateElement::Period(&["performedPeriod"]),
                ],
                CODE,
                CATEGORY,
            ),
            "DocumentReference" => rules(
                &[
                    DateElement::Period(&["context", "period"]),
                    DateElement::At(&["date"]),
                ],
                Some(TokenElement::Concepts("type")),
                CATEGORY,
            ),
            // Neither has a `code` element; category is what they are
            // searched by.
            "CarePlan" | "CareTeam" => rules(PERIOD, None, CATEGORY),
            "ServiceRequest" => rules(
                &[
                    DateElement::At(&["occurrenceDateTime"]),
                    DateElement::Period(&["occurrencePeriod"]),
                    DateElement::At(&["authoredOn"]),
                ],
                CODE,
                CATEGORY,
            ),
            // A device's dates (manufacture, expiry) are not clinical ones.
            "Device" => rules(&[], Some(TokenElement::Concepts("type")), None),
            _ => None,
        }
    }
}

impl DateElement {
    fn range(self, resource: &Map<String, Value>) -> Option<DateRange> {
        match self {
            DateElement::At(path) => parse_date(lookup(resource, path)?.as_str()?),
            DateElement::Period(path) => period_range(lookup(resource, path)?),
        }
    }
}

fn lookup<'a>(resource: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(resource.get(*first)?, |value, key| value.get(*key))
}

/// A Period covers [start's range start, end's range end). With one side
/// only, we index that side's own range rather than an open-ended one, so
/// every indexed date is bounded; an unreadable side counts as absent.
fn period_range(period: &Value) -> Option<DateRange> {
    let side = |key| period.get(key).and_then(Value::as_str).and_then(parse_date);
    match (side("start"), side("end")) {
        // An end before the start breaks FHIR's per-1 invariant: unreadable.
        (Some(start), Some(end)) => (start.start < end.end).then_some(DateRange {
            start: start.start,
            end: end.end,
        }),
        (Some(only), None) | (None, Some(only)) => Some(only),
        (None, None) => None,
    }
}

/// The range a FHIR `date`, `dateTime` or `instant` covers at its precision:
/// a year, a month or a UTC day for partial dates (which carry no zone); a
/// second for `hh:mm:ss`; the millisecond containing it when there is a
/// fraction (finer digits are dropped, as timestamps are stored to the
/// millisecond). `None` if it does not follow FHIR's grammar.
fn parse_date(text: &str) -> Option<DateRange> {
    let b = text.as_bytes();
    let year = digits(b, 0, 4)?;
    if year == 0 {
        return None;
    }
    let year = i32::try_from(year).ok()?;
    if b.len() == 4 {
        let start = NaiveDate::from_ymd_opt(year, 1, 1)?;
        return whole_days(start, start.checked_add_months(Months::new(12))?);
    }
    expect(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    if b.len() == 7 {
        let start = NaiveDate::from_ymd_opt(year, month, 1)?;
        return whole_days(start, start.checked_add_months(Months::new(1))?);
    }
    expect(b, 7, b'-')?;
    let date = NaiveDate::from_ymd_opt(year, month, digits(b, 8, 2)?)?;
    if b.len() == 10 {
        return whole_days(date, date.checked_add_days(Days::new(1))?);
    }

    expect(b, 10, b'T')?;
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b':')?;
    let second = digits(b, 17, 2)?;
    let mut rest = b.get(19..)?;
    let mut millis = None;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        // The first three digits, padded: ".5" is 500 ms.
        let ms = fraction[..len]
            .iter()
            .chain(b"00")
            .take(3)
            .fold(0, |ms, digit| ms * 10 + u32::from(digit - b'0'));
        millis = Some(ms);
        rest = &fraction[len..];
    }
    let offset_minutes = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (digits(rest, 1, 2)?, digits(rest, 4, 2)?);
            if minutes > 59 || hours > 14 || (hours == 14 && minutes > 0) {
                return None;
            }
            let total = i64::from(hours * 60 + minutes);
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    // FHIR allows a leap second (:60); chrono's UTC has none, so it becomes
    // the first instant after :59.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let leap = TimeDelta::seconds(i64::from(second == 60));
    let time = NaiveTime::from_hms_milli_opt(hour, minute, second.min(59), millis.unwrap_or(0))?;
    let start = date
        .and_time(time)
        .checked_add_signed(leap)?
        .checked_sub_signed(TimeDelta::minutes(offset_minutes))?
        .and_utc();
    let width = match millis {
        Some(_) => TimeDelta::milliseconds(1),
        None => TimeDelta::seconds(1),
    };
    Some(DateRange {
        start,
        end: start.checked_add_signed(width)?,
    })
}

/// [start, end) from midnight UTC to midnight UTC.
fn whole_days(start: NaiveDate, end: NaiveDate) -> Option<DateRange> {
    Some(DateRange {
        start: start.and_time(NaiveTime::MIN).and_utc(),
        end: end.and_time(NaiveTime::MIN).and_utc(),
    })
}

/// The number written by exactly `len` ASCII digits at `at`.
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let field = b.get(at..at + len)?;
    field.iter().try_fold(0, |n: u32, c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

fn expect(b: &[u8], at: usize, c: u8) -> Option<()> {
    (b.get(at) == Some(&c)).then_some(())
}

impl TokenElement {
    fn collect(self, resource: &Map<String, Value>, param: TokenParam, tokens: &mut Vec<Token>) {
        match self {
            TokenElement::Concepts(name) => {
                let concepts = match resource.get(name) {
                    Some(Value::Array(concepts)) => concepts.as_slice(),
                    Some(concept @ Value::Object(_)) => std::slice::from_ref(concept),
                    _ => &[],
                };
                for concept in concepts {
                    if let Some(Value::Array(codings)) = concept.get("coding") {
                        for coding in codings {
                            push_coding(tokens, param, coding);
                        }
                    }
                }
            }
            TokenElement::Coding(name) => {
                if let Some(coding) = resource.get(name) {
                    push_coding(tokens, param, coding);
                }
            }
            TokenElement::AllergyCategories(name) => {
                if let Some(Value::Array(codes)) = resource.get(name) {
                    for code in codes.iter().filter_map(Value::as_str) {
                        if ALLERGY_CATEGORIES.contains(&code) {
                            push(tokens, param, ALLERGY_CATEGORY_SYSTEM, code);
                        }
                    }
                }
            }
        }
    }
}

/// Indexes a Coding that has a string code (and a string system, if any).
fn push_coding(tokens: &mut Vec<Token>, param: TokenParam, coding: &Value) {
    let Some(Value::String(code)) = coding.get("code") else {
        return;
    };
    let system = match coding.get("system") {
        None => "",
        Some(Value::String(system)) => system,
        Some(_) => return,
    };
    push(tokens, param, system, code);
}

fn push(tokens: &mut Vec<Token>, param: TokenParam, system: &str, code: &str) {
    if tokens.len() >= MAX_TOKENS
        || code.is_empty()
        || longer_than(system, MAX_SYSTEM_CHARS)
        || longer_than(code, MAX_CODE_CHARS)
    {
        return;
    }
    let seen = tokens
        .iter()
        .any(|t| t.param == param && t.system == system && t.code == code);
    if !seen {
        tokens.push(Token {
            param,
            system: system.to_owned(),
            code: code.to_owned(),
        });
    }
}

/// Whether `s` has more than `max` characters, without counting all of a
/// long one.
fn longer_than(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().nth(max).is_some()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LOINC: &str = "http://loinc.org";
    const SNOMED: &str = "http://snomed.info/sct";
    /// The Synthea sample, outside the repository (`/work/shared/data/...`).
    const DATA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/synthea-10-patients/"
    );

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            other => panic!("not an object: {other}"),
        }
    }

    fn indexed(value: Value) -> SearchIndex {
        let resource = object(value);
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .expect("resourceType")
            .to_owned();
        extract(&resource_type, &resource)
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a test instant")
            .with_timezone(&Utc)
    }

    fn range(start: &str, end: &str) -> DateRange {
        DateRange {
            start: at(start),
            end: at(end),
        }
    }

    fn token(param: TokenParam, system: &str, code: &str) -> Token {
        Token {
            param,
            system: system.to_owned(),
            code: code.to_owned(),
        }
    }

    fn concept(system: &str, code: &str) -> Value {
        json!({"coding": [{"system": system, "code": code}]})
    }

    fn query(value: &str) -> TokenQuery {
        TokenQuery::parse("code", value).expect("a valid query")
    }

    #[test]
    fn partial_dates_cover_their_precision() {
        let cases = [
            ("2020", "2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z"),
            ("2020-05", "2020-05-01T00:00:00Z", "2020-06-01T00:00:00Z"),
            ("2020-12", "2020-12-01T00:00:00Z", "2021-01-01T00:00:00Z"),
            ("2020-02-29", "2020-02-29T00:00:00Z", "2020-03-01T00:00:00Z"),
            ("2020-12-31", "2020-12-31T00:00:00Z", "2021-01-01T00:00:00Z"),
            (
                "2020-05-03T10:20:30Z",
                "2020-05-03T10:20:30Z",
                "2020-05-03T10:20:31Z",
            ),
            (
                "1976-01-19T22:58:16-05:00",
                "1976-01-20T03:58:16Z",
                "1976-01-20T03:58:17Z",
            ),
            (
                "2020-05-03T01:00:00+14:00",
                "2020-05-02T11:00:00Z",
                "2020-05-02T11:00:01Z",
            ),
            (
                "1987-11-19T00:22:16.824-05:00",
                "1987-11-19T05:22:16.824Z",
                "1987-11-19T05:22:16.825Z",
            ),
            (
                "2020-05-03T10:20:30.5Z",
                "2020-05-03T10:20:30.500Z",
                "2020-05-03T10:20:30.501Z",
            ),
            (
                "2020-05-03T10:20:30.123456789Z",
                "2020-05-03T10:20:30.123Z",
                "2020-05-03T10:20:30.124Z",
            ),
            (
                "2016-12-31T23:59:60Z",
                "2017-01-01T00:00:00Z",
                "2017-01-01T00:00:01Z",
            ),
        ];
        for (text, start, end) in cases {
            assert_eq!(parse_date(text), Some(range(start, end)), "{text}");
        }
        // The last year FHIR can write ends beyond what RFC 3339 can.
        let last = parse_date("9999-12-31").expect("a date");
        assert_eq!(last.start, at("9999-12-31T00:00:00Z"));
        assert_eq!(
            last.end,
            NaiveDate::from_ymd_opt(10000, 1, 1)
                .expect("year 10000")
                .and_time(NaiveTime::MIN)
                .and_utc()
        );
    }

    #[test]
    fn text_outside_fhir_date_grammar_is_no_date() {
        for text in [
            "",
            "yesterday",
            "0000",
            "20",
            "2020-",
            "2020-5",
            "2020-13",
            "2020-00",
            "2021-02-29",
            "2020-04-31",
            "2020-05-03T",
            "2020-05-03T10:20",
            "2020-05-03T10:20:30",
            "2020-05-03t10:20:30Z",
            "2020-05-03 10:20:30Z",
            "2020-05-03T24:00:00Z",
            "2020-05-03T10:60:00Z",
            "2020-05-03T10:20:61Z",
            "2020-05-03T10:20:30.Z",
            "2020-05-03T10:20:30z",
            "2020-05-03T10:20:30+0500",
            "2020-05-03T10:20:30+05",
            "2020-05-03T10:20:30+14:30",
            "2020-05-03T10:20:30+05:60",
            "2020-05-03T10:20:30Z ",
            " 2020",
            "2020-05-03Z",
            "+2020",
            "２０２０",
        ] {
            assert_eq!(parse_date(text), None, "{text:?}");
        }
    }

    #[test]
    fn periods_span_from_start_to_end() {
        let both = json!({"start": "2020-05-03T10:00:00+01:00", "end": "2020-05"});
        assert_eq!(
            period_range(&both),
            Some(range("2020-05-03T09:00:00Z", "2020-06-01T00:00:00Z"))
        );
        let start_only = json!({"start": "2020-05-03"});
        assert_eq!(
            period_range(&start_only),
            Some(range("2020-05-03T00:00:00Z", "2020-05-04T00:00:00Z"))
        );
        let end_only = json!({"end": "2021"});
        assert_eq!(
            period_range(&end_only),
            Some(range("2021-01-01T00:00:00Z", "2022-01-01T00:00:00Z"))
        );
        // An unreadable side is as good as absent.
        let bad_start = json!({"start": "soon", "end": "2021"});
        assert_eq!(period_range(&bad_start), period_range(&end_only));
        // The same instant at both ends is a one-second period.
        let instant = json!({"start": "2020-05-03T10:00:00Z", "end": "2020-05-03T10:00:00Z"});
        assert_eq!(
            period_range(&instant),
            Some(range("2020-05-03T10:00:00Z", "2020-05-03T10:00:01Z"))
        );
        for none in [
            json!({}),
            json!({"start": 2020}),
            json!("2020"),
            json!({"start": "2020-05-03T10:00:01Z", "end": "2020-05-03T10:00:00Z"}),
            json!({"start": "2021", "end": "2020"}),
        ] {
            assert_eq!(period_range(&none), None, "{none}");
        }
    }

    #[test]
    fn observation_gives_its_effective_date_code_and_category() {
        let index = indexed(json!({
            "resourceType": "Observation",
            "category": [concept(
                "http://terminology.hl7.org/CodeSystem/observation-category",
                "vital-signs",
            )],
            "code": {
                "coding": [
                    {"system": LOINC, "code": "8867-4", "display": "Heart rate"},
                    {"code": "hr"},
                    {"system": LOINC, "code": "8867-4"},
                ],
                "text": "Heart rate",
            },
            "effectiveDateTime": "2020-05-03T10:20:30+02:00",
            "issued": "2020-05-04T00:00:00Z",
        }));
        assert_eq!(
            index,
            SearchIndex {
                date: Some(range("2020-05-03T08:20:30Z", "2020-05-03T08:20:31Z")),
                tokens: vec![
                    token(TokenParam::Code, LOINC, "8867-4"),
                    token(TokenParam::Code, "", "hr"),
                    token(
                        TokenParam::Category,
                        "http://terminology.hl7.org/CodeSystem/observation-category",
                        "vital-signs",
                    ),
                ],
            }
        );
    }

    #[test]
    fn observation_date_falls_through_its_list() {
        let period = indexed(json!({
            "resourceType": "Observation",
            "effectivePeriod": {"start": "2020-01", "end": "2020-03"},
            "issued": "2020-05-04T00:00:00Z",
        }));
        assert_eq!(
            period.date,
            Some(range("2020-01-01T00:00:00Z", "2020-04-01T00:00:00Z"))
        );
        let issued = indexed(json!({
            "resourceType": "Observation",
            "effectiveDateTime": "yesterday",
            "issued": "2020-05-04T00:00:00.000Z",
        }));
        assert_eq!(
            issued.date,
            Some(range("2020-05-04T00:00:00Z", "2020-05-04T00:00:00.001Z"))
        );
    }

    #[test]
    fn condition_gives_its_onset() {
        let onset = indexed(json!({
            "resourceType": "Condition",
            "code": concept(SNOMED, "44054006"),
            "onsetDateTime": "2019-06",
            "recordedDate": "2020-01-01",
        }));
        assert_eq!(
            onset.date,
            Some(range("2019-06-01T00:00:00Z", "2019-07-01T00:00:00Z"))
        );
        assert_eq!(
            onset.tokens,
            vec![token(TokenParam::Code, SNOMED, "44054006")]
        );

        let period = indexed(json!({
            "resourceType": "Condition",
            "onsetPeriod": {"start": "2019", "end": "2019-03-04"},
        }));
        assert_eq!(
            period.date,
            Some(range("2019-01-01T00:00:00Z", "2019-03-05T00:00:00Z"))
        );

        let recorded = indexed(json!({
            "resourceType": "Condition",
            "onsetString": "in childhood",
            "recordedDate": "2020-01-01",
        }));
        assert_eq!(
            recorded.date,
            Some(range("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn encounter_gives_its_period_types_and_class() {
        let index = indexed(json!({
            "resourceType": "Encounter",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
            },
            "type": [concept(SNOMED, "185347001"), concept(SNOMED, "162673000")],
            "period": {
                "start": "1989-10-04T02:25:16-04:00",
                "end": "1989-10-04T06:20:16-04:00",
            },
        }));
        assert_eq!(
            index,
            SearchIndex {
                date: Some(range("1989-10-04T06:25:16Z", "1989-10-04T10:20:17Z")),
                tokens: vec![
                    token(TokenParam::Code, SNOMED, "185347001"),
                    token(TokenParam::Code, SNOMED, "162673000"),
                    token(
                        TokenParam::Category,
                        "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "AMB",
                    ),
                ],
            }
        );
    }

    #[test]
    fn immunization_gives_its_vaccine_code() {
        let index = indexed(json!({
            "resourceType": "Immunization",
            "vaccineCode": concept("http://hl7.org/fhir/sid/cvx", "140"),
            "occurrenceString": "last spring",
            "recorded": "2017-07-26",
        }));
        assert_eq!(
            index,
            SearchIndex {
                date: Some(range("2017-07-26T00:00:00Z", "2017-07-27T00:00:00Z")),
                tokens: vec![token(
                    TokenParam::Code,
                    "http://hl7.org/fhir/sid/cvx",
                    "140"
                )],
            }
        );
    }

    #[test]
    fn allergy_categories_are_bare_codes_of_one_system() {
        let index = indexed(json!({
            "resourceType": "AllergyIntolerance",
            "category": ["food", "medication", "food", "sandwich", 7],
            "code": concept(SNOMED, "442571000124108"),
            "recordedDate": "1928-11-23T17:58:16-05:00",
        }));
        assert_eq!(
            index.tokens,
            vec![
                token(TokenParam::Code, SNOMED, "442571000124108"),
                token(TokenParam::Category, ALLERGY_CATEGORY_SYSTEM, "food"),
                token(TokenParam::Category, ALLERGY_CATEGORY_SYSTEM, "medication"),
            ]
        );
        assert_eq!(
            index.date,
            Some(range("1928-11-23T22:58:16Z", "1928-11-23T22:58:17Z"))
        );
    }

    #[test]
    fn device_has_a_type_and_no_date() {
        let index = indexed(json!({
            "resourceType": "Device",
            "type": concept(SNOMED, "337414009"),
            "manufactureDate": "1958-07-12T23:58:16-04:00",
            "expirationDate": "1983-07-27T23:58:16-04:00",
        }));
        assert_eq!(
            index,
            SearchIndex {
                date: None,
                tokens: vec![token(TokenParam::Code, SNOMED, "337414009")],
            }
        );
    }

    #[test]
    fn other_types_follow_their_rules() {
        let medication = indexed(json!({
            "resourceType": "MedicationRequest",
            "category": [concept("c", "community")],
            "medicationCodeableConcept": concept("r", "314076"),
            "authoredOn": "1989-05-27",
        }));
        assert_eq!(
            medication.tokens,
            vec![
                token(TokenParam::Code, "r", "314076"),
                token(TokenParam::Category, "c", "community"),
            ]
        );
        assert!(medication.date.is_some());

        let document = indexed(json!({
            "resourceType": "DocumentReference",
            "type": concept(LOINC, "34117-2"),
            "category": [concept("d", "clinical-note")],
            "date": "1987-11-19T00:22:16.824-05:00",
            "context": {"period": {"start": "1987-11-18"}},
        }));
        assert_eq!(
            document.date,
            Some(range("1987-11-18T00:00:00Z", "1987-11-19T00:00:00Z"))
        );
        assert_eq!(document.tokens.len(), 2);

        // CarePlan indexes its category, not its (absent) code.
        let plan = indexed(json!({
            "resourceType": "CarePlan",
            "category": [concept(SNOMED, "736285004")],
            "code": concept(SNOMED, "1"),
            "period": {"start": "2020"},
        }));
        assert_eq!(
            plan.tokens,
            vec![token(TokenParam::Category, SNOMED, "736285004")]
        );
        assert!(plan.date.is_some());

        // Procedure.category is a single CodeableConcept in R4.
        let procedure = indexed(json!({
            "resourceType": "Procedure",
            "category": concept(SNOMED, "387713003"),
            "performedPeriod": {"start": "2022-06-22T12:31:08-04:00"},
        }));
        assert_eq!(
            procedure.tokens,
            vec![token(TokenParam::Category, SNOMED, "387713003")]
        );
        assert!(procedure.date.is_some());

        let unknown = indexed(json!({
            "resourceType": "Patient",
            "code": concept(SNOMED, "1"),
            "period": {"start": "2020"},
        }));
        assert_eq!(unknown, SearchIndex::default());
    }

    #[test]
    fn malformed_elements_are_ignored() {
        let index = indexed(json!({
            "resourceType": "Observation",
            "code": {"coding": [
                {"system": LOINC, "code": 8867},
                {"system": 7, "code": "x"},
                {"system": LOINC},
                {"system": LOINC, "code": ""},
                "8867-4",
                {"system": LOINC, "code": "8867-4"},
            ]},
            "category": [{"coding": {"code": "not-an-array"}}, "vital-signs", 3],
            "effectiveDateTime": "yesterday",
            "effectivePeriod": "last week",
        }));
        assert_eq!(
            index,
            SearchIndex {
                date: None,
                tokens: vec![token(TokenParam::Code, LOINC, "8867-4")],
            }
        );

        // A Coding where a CodeableConcept belongs, and a CodeableConcept where a
        // Coding belongs, are not read.
        let encounter = indexed(json!({
            "resourceType": "Encounter",
            "type": {"system": SNOMED, "code": "1"},
            "class": concept(SNOMED, "2"),
            "period": 2020,
        }));
        assert_eq!(encounter, SearchIndex::default());
    }

    #[test]
    fn tokens_are_bounded_and_overlong_ones_skipped() {
        let long_system = format!("http://{}", "s".repeat(MAX_SYSTEM_CHARS));
        let long_code = "é".repeat(MAX_CODE_CHARS + 1);
        // At the limit in characters, though over it in bytes.
        let code_at_limit = "é".repeat(MAX_CODE_CHARS);
        let system_at_limit = "s".repeat(MAX_SYSTEM_CHARS);
        let mut codings = vec![
            json!({"system": long_system, "code": "a"}),
            json!({"system": LOINC, "code": long_code}),
            json!({"system": system_at_limit, "code": code_at_limit}),
        ];
        codings.extend((0..100).map(|i| json!({"system": LOINC, "code": format!("c{i}")})));
        let index = indexed(json!({
            "resourceType": "Observation",
            "code": {"coding": codings},
            "category": [concept("x", "y")],
        }));
        assert_eq!(index.tokens.len(), MAX_TOKENS);
        assert_eq!(
            index.tokens[0],
            token(TokenParam::Code, &system_at_limit, &code_at_limit)
        );
        assert_eq!(index.tokens[1], token(TokenParam::Code, LOINC, "c0"));
        assert_eq!(
            index.tokens[MAX_TOKENS - 1],
            token(TokenParam::Code, LOINC, &format!("c{}", MAX_TOKENS - 2))
        );
    }

    #[test]
    fn token_params_round_trip_through_storage() {
        for param in [TokenParam::Code, TokenParam::Category] {
            assert_eq!(TokenParam::from_stored(param.as_str()), Some(param));
        }
        assert_eq!(TokenParam::from_stored("Code"), None);
        assert_eq!(TokenParam::from_stored(""), None);
    }

    #[test]
    fn token_queries_parse_the_three_forms() {
        assert_eq!(
            query("http://loinc.org|8867-4"),
            TokenQuery {
                system: Some(LOINC.to_owned()),
                code: "8867-4".to_owned(),
            }
        );
        assert_eq!(
            query("|x"),
            TokenQuery {
                system: Some(String::new()),
                code: "x".to_owned(),
            }
        );
        assert_eq!(
            query("8867-4"),
            TokenQuery {
                system: None,
                code: "8867-4".to_owned(),
            }
        );
        let at_limits = format!(
            "{}|{}",
            "s".repeat(MAX_SYSTEM_CHARS),
            "c".repeat(MAX_CODE_CHARS)
        );
        assert!(TokenQuery::parse("code", &at_limits).is_ok());
    }

    #[test]
    fn token_queries_refuse_malformed_values() {
        for value in [
            String::new(),
            "a|".to_owned(),
            "|".to_owned(),
            "a|b|c".to_owned(),
            "||c".to_owned(),
            format!("{}|c", "s".repeat(MAX_SYSTEM_CHARS + 1)),
            "c".repeat(MAX_CODE_CHARS + 1),
            format!("{LOINC}|{}", "c".repeat(MAX_CODE_CHARS + 1)),
        ] {
            let error = TokenQuery::parse("category", &value).expect_err(&value);
            assert_eq!(error.field.as_deref(), Some("category"), "{value}");
        }
    }

    #[test]
    fn token_queries_match_by_system_and_code() {
        let loinc = token(TokenParam::Code, LOINC, "8867-4");
        let bare = token(TokenParam::Code, "", "8867-4");
        let other = token(TokenParam::Category, SNOMED, "8867-4");

        let any_system = query("8867-4");
        assert!(any_system.matches(&loinc));
        assert!(any_system.matches(&bare));
        assert!(any_system.matches(&other));

        let with_system = query("http://loinc.org|8867-4");
        assert!(with_system.matches(&loinc));
        assert!(!with_system.matches(&bare));
        assert!(!with_system.matches(&other));

        let no_system = query("|8867-4");
        assert!(!no_system.matches(&loinc));
        assert!(no_system.matches(&bare));

        assert!(!query("8867-5").matches(&loinc));
        assert!(!query("8867").matches(&loinc));
        assert!(!query("http://LOINC.org|8867-4").matches(&loinc));
    }

    #[test]
    fn synthea_resources_are_indexed() {
        let types = [
            "Condition",
            "Encounter",
            "Immunization",
            "MedicationRequest",
            "Procedure",
            "DocumentReference",
            "AllergyIntolerance",
            "Device",
        ];
        let probe = format!("{DATA}Condition.000.ndjson");
        if !std::path::Path::new(&probe).exists() {
            eprintln!("skipping: no Synthea sample at {DATA}");
            return;
        }
        for resource_type in types {
            let path = format!("{DATA}{resource_type}.000.ndjson");
            let text = std::fs::read_to_string(&path).expect(&path);
            let rules = Rules::of(resource_type).expect("a type with rules");
            let mut lines = 0;
            for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
                let value: Value = serde_json::from_str(line).expect("valid JSON");
                let resource = object(value);
                assert_eq!(
                    resource.get("resourceType").and_then(Value::as_str),
                    Some(resource_type)
                );
                let index = extract(resource_type, &resource);
                if rules.code.is_some() {
                    assert!(
                        index.tokens.iter().any(|t| t.param == TokenParam::Code),
                        "{resource_type} line {}: no code token",
                        n + 1
                    );
                }
                if !rules.dates.is_empty() {
                    let date = index
                        .date
                        .unwrap_or_else(|| panic!("{resource_type} line {}: no date", n + 1));
                    assert!(date.start < date.end);
                }
                lines += 1;
            }
            assert!(lines > 0, "{path} is empty");
        }

        let text = std::fs::read_to_string(probe).expect("Condition sample");
        let first = text.lines().next().expect("a first Condition");
        let resource = object(serde_json::from_str(first).expect("valid JSON"));
        let index = extract("Condition", &resource);
        assert!(
            index
                .tokens
                .contains(&token(TokenParam::Code, SNOMED, "91302008"))
        );
        assert!(index.tokens.contains(&token(
            TokenParam::Category,
            "http://terminology.hl7.org/CodeSystem/condition-category",
            "encounter-diagnosis",
        )));
        assert_eq!(
            index.date.map(|d| d.start),
            Some(at("1976-01-20T03:58:16Z"))
        );
        assert!(query("http://snomed.info/sct|91302008").matches(&index.tokens[0]));
    }
}
