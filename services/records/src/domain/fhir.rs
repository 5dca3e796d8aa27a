//! Checking a FHIR R4 resource before it is stored: a JSON object of a
//! supported `resourceType`, bounded in size and nesting, without duplicate
//! member names, whose `subject` or `patient` reference is this patient.
//!
//! The resource is stored as the client sent it: member order, number text
//! (FHIR decimals such as `1.50` carry their precision in the text) and string
//! escapes are kept. Only `id`, `meta.versionId` and `meta.lastUpdated` are set
//! by the server. serde_json's `Map` would sort members and normalise numbers,
//! so the top level and `meta` are held as raw text ([`RawValue`]) and the
//! parsed [`Map`] is only a view for reading.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use sharedcare_kit::Error;

use super::{PatientId, RecordId};

const FIELD: &str = "resource_json";

/// How deep objects and arrays may nest, the resource itself being level 1.
/// FHIR resources need far fewer; the bound keeps parsing cheap and safe.
pub const MAX_DEPTH: usize = 64;

/// FHIR's `id` type: `[A-Za-z0-9\-\.]{1,64}`.
const MAX_FHIR_ID_CHARS: usize = 64;

/// Member names echoed in error messages are cut to this many characters.
const MAX_ECHOED_CHARS: usize = 40;

/// Patient-linked clinical and care resources we accept. Patient itself is
/// not here: demographics live in identity.
pub const SUPPORTED_RESOURCE_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "Condition",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Immunization",
    "MedicationAdministration",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Procedure",
    "ServiceRequest",
];

/// A resource that passed every check, not yet stamped by the server.
#[derive(Debug, Clone)]
pub struct ValidResource {
    /// Parsed view of the whole resource, for reading.
    object: Map<String, Value>,
    resource_type: String,
    /// The top-level members in the order sent, with their text as sent.
    members: Vec<Member>,
    /// `meta`'s members likewise, when the client sent a `meta`.
    meta: Option<Vec<Member>>,
}

/// One member of a JSON object, kept as written.
#[derive(Debug, Clone)]
struct Member {
    /// The name's JSON string text, quotes and escapes as sent.
    raw_name: Box<RawValue>,
    /// The name decoded, for matching.
    name: String,
    value: Box<RawValue>,
}

impl ValidResource {
    pub fn parse(json: &str, patient: &PatientId, max_bytes: usize) -> Result<Self, Error> {
        if json.trim().is_empty() {
            return Err(Error::invalid(FIELD, "is required"));
        }
        if json.len() > max_bytes {
            return Err(Error::invalid(
                FIELD,
                format!("is {} bytes; the limit is {max_bytes}", json.len()),
            ));
        }
        // Before serde sees it: serde_json would refuse deep input too, but
        // only at its own limit and with a message about recursion.
        if nests_deeper_than(json, MAX_DEPTH) {
            return Err(Error::invalid(
                FIELD,
                format!("nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        let object = match parse_view(json)? {
            Value::Object(object) => object,
            _ => return Err(Error::invalid(FIELD, "must be a JSON object")),
        };
        let resource_type = match object.get("resourceType") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => {
                return Err(Error::invalid(
                    format!("{FIELD}.resourceType"),
                    "must be a string",
                ));
            }
            None => {
                return Err(Error::invalid(
                    format!("{FIELD}.resourceType"),
                    "is required",
                ));
            }
        };
        if !SUPPORTED_RESOURCE_TYPES.contains(&resource_type.as_str()) {
            return Err(Error::invalid(
                format!("{FIELD}.resourceType"),
                format!(
                    "`{}` is not a supported resource type (supported: {})",
                    truncate(&resource_type, MAX_ECHOED_CHARS),
                    SUPPORTED_RESOURCE_TYPES.join(", ")
                ),
            ));
        }
        match object.get("id") {
            None => {}
            Some(Value::String(id)) if is_fhir_id(id) => {}
            Some(Value::String(_)) => {
                return Err(Error::invalid(
                    format!("{FIELD}.id"),
                    format!("must be 1 to {MAX_FHIR_ID_CHARS} letters, digits, '-' or '.'"),
                ));
            }
            Some(_) => return Err(Error::invalid(format!("{FIELD}.id"), "must be a string")),
        }
        match object.get("meta") {
            None | Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(Error::invalid(
                    format!("{FIELD}.meta"),
                    "must be a JSON object",
                ));
            }
        }
        check_patient_reference(&object, patient)?;

        // The text was checked above, so these only fail on a serde_json
        // disagreement with itself; still an error rather than a panic.
        let members = raw_members(json)?;
        let meta = match members.iter().find(|m| m.name == "meta") {
            Some(m) => Some(raw_members(m.value.get())?),
            None => None,
        };
        Ok(ValidResource {
            object,
            resource_type,
            members,
            meta,
        })
    }

    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// The `id` the client sent, if any; the server replaces it on stamping.
    pub fn client_id(&self) -> Option<&str> {
        self.object.get("id").and_then(Value::as_str)
    }

    /// The resource as received, parsed (what the classification map reads).
    /// Member order and number text are not kept here; see [`Self::stamp`].
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.object
    }

    /// The resource as stored: the text sent, with `id`, `meta.versionId`
    /// and `meta.lastUpdated` set by the server and the rest of `meta` kept.
    /// Members keep their order and text; `id` and `meta` are replaced in
    /// place, or added after `resourceType` (and `id`) when missing.
    pub fn stamp(&self, id: &RecordId, version: i64, at: DateTime<Utc>) -> String {
        let id_text = json_string(id.as_str());
        let version_text = json_string(&version.to_string());
        let updated_text = json_string(&at.to_rfc3339_opts(SecondsFormat::Millis, true));
        let meta_text = stamp_meta(self.meta.as_deref(), &version_text, &updated_text);

        let has_id = self.members.iter().any(|m| m.name == "id");
        let sent_meta = self.meta.is_some();
        let capacity = self
            .members
            .iter()
            .map(|m| m.raw_name.get().len() + m.value.get().len() + 2)
            .sum::<usize>()
            + id_text.len()
            + meta_text.len()
            + 16;
        let mut out = ObjectWriter::with_capacity(capacity);
        for member in &self.members {
            let raw_name = member.raw_name.get();
            match member.name.as_str() {
                "id" => {
                    out.member(raw_name, &id_text);
                    if !sent_meta {
                        out.member(r#""meta""#, &meta_text);
                    }
                }
                "meta" => out.member(raw_name, &meta_text),
                "resourceType" => {
                    out.member(raw_name, member.value.get());
                    if !has_id {
                        out.member(r#""id""#, &id_text);
                        if !sent_meta {
                            out.member(r#""meta""#, &meta_text);
                        }
                    }
                }
                _ => out.member(raw_name, member.value.get()),
            }
        }
        out.finish()
    }
}

/// `meta` as stored: the members sent, in order, with `versionId` and
/// `lastUpdated` replaced in place or, when missing, put first.
fn stamp_meta(sent: Option<&[Member]>, version_text: &str, updated_text: &str) -> String {
    let sent = sent.unwrap_or_default();
    let has = |name: &str| sent.iter().any(|m| m.name == name);
    let mut out = ObjectWriter::with_capacity(
        sent.iter()
            .map(|m| m.raw_name.get().len() + m.value.get().len() + 2)
            .sum::<usize>()
            + 64,
    );
    if !has("versionId") {
        out.member(r#""versionId""#, version_text);
    }
    if !has("lastUpdated") {
        out.member(r#""lastUpdated""#, updated_text);
    }
    for member in sent {
        let value = match member.name.as_str() {
            "versionId" => version_text,
            "lastUpdated" => updated_text,
            _ => member.value.get(),
        };
        out.member(member.raw_name.get(), value);
    }
    out.finish()
}

/// Writes a compact JSON object from name and value texts that are already
/// JSON.
struct ObjectWriter {
    out: String,
    empty: bool,
}

impl ObjectWriter {
    fn with_capacity(capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        ObjectWriter { out, empty: true }
    }

    fn member(&mut self, raw_name: &str, raw_value: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push_str(raw_name);
        self.out.push(':');
        self.out.push_str(raw_value);
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// A JSON string literal for `s`.
fn json_string(s: &str) -> String {
    // Display of a Value cannot fail, unlike serde_json::to_string.
    Value::from(s).to_string()
}

/// Whether objects and arrays nest deeper than `max` anywhere in `json`.
/// A byte scan that skips string contents, so deep input costs no stack.
/// On text that is not JSON the answer is rough, and the parser refuses it.
fn nests_deeper_than(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // Quotes, backslashes and brackets are ASCII, never part of a UTF-8
    // multi-byte sequence, so bytes are enough.
    for &b in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn is_fhir_id(id: &str) -> bool {
    (1..=MAX_FHIR_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Parses the whole text into a [`Value`], refusing a member name repeated
/// within one object (serde_json would silently keep the last, so what we
/// read and what we store could differ).
fn parse_view(json: &str) -> Result<Value, Error> {
    let mut duplicate = None;
    let mut de = serde_json::Deserializer::from_str(json);
    let parsed = ViewSeed {
        duplicate: &mut duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match (parsed, duplicate) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(duplicate)) => Err(duplicate.into_error()),
        // serde_json's message holds a position, never the content.
        (Err(e), None) => Err(not_json(&e)),
    }
}

fn not_json(e: &serde_json::Error) -> Error {
    Error::invalid(FIELD, format!("is not valid JSON ({e})"))
}

/// A member name found twice, and where: the path is innermost first, as it
/// is collected while the error unwinds.
struct Duplicate {
    name: String,
    path: Vec<Step>,
}

enum Step {
    Member(String),
    Index(usize),
}

impl Duplicate {
    fn into_error(self) -> Error {
        let mut field = String::from(FIELD);
        for step in self.path.iter().rev() {
            match step {
                Step::Member(name) => {
                    field.push('.');
                    field.push_str(&truncate(name, MAX_ECHOED_CHARS));
                }
                Step::Index(i) => field.push_str(&format!("[{i}]")),
            }
        }
        // Member names are structure, not clinical content: safe to name.
        Error::invalid(
            field,
            format!(
                "has the member {:?} more than once",
                truncate(&self.name, MAX_ECHOED_CHARS)
            ),
        )
    }
}

/// Builds a [`Value`] as serde_json's own impl does, but records a duplicate
/// member name in `duplicate` and fails instead of overwriting.
struct ViewSeed<'a> {
    duplicate: &'a mut Option<Duplicate>,
}

impl<'de> DeserializeSeed<'de> for ViewSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ViewSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let seed = ViewSeed {
                duplicate: &mut *self.duplicate,
            };
            match seq.next_element_seed(seed) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    if let Some(duplicate) = self.duplicate.as_mut() {
                        duplicate.path.push(Step::Index(items.len()));
                    }
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                *self.duplicate = Some(Duplicate { name, path: vec![] });
                return Err(de::Error::custom("duplicate member name"));
            }
            let seed = ViewSeed {
                duplicate: &mut *self.duplicate,
            };
            match map.next_value_seed(seed) {
                Ok(value) => {
                    object.insert(name, value);
                }
                Err(e) => {
                    if let Some(duplicate) = self.duplicate.as_mut() {
                        duplicate.path.push(Step::Member(name));
                    }
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// An object's members in order, names and values as raw text.
struct RawMembers(Vec<Member>);

impl<'de> Deserialize<'de> for RawMembers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawMembersVisitor)
    }
}

struct RawMembersVisitor;

impl<'de> Visitor<'de> for RawMembersVisitor {
    type Value = RawMembers;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMembers, A::Error> {
        let mut members = Vec::new();
        // A name read as raw text keeps its escapes as sent; decode a copy
        // for matching.
        while let Some(raw_name) = map.next_key::<Box<RawValue>>()? {
            let value = map.next_value::<Box<RawValue>>()?;
            let name = serde_json::from_str::<String>(raw_name.get()).map_err(de::Error::custom)?;
            members.push(Member {
                raw_name,
                name,
                value,
            });
        }
        Ok(RawMembers(members))
    }
}

fn raw_members(json: &str) -> Result<Vec<Member>, Error> {
    serde_json::from_str::<RawMembers>(json)
        .map(|members| members.0)
        .map_err(|e| not_json(&e))
}

/// `subject.reference` or `patient.reference` must be `Patient/<id>`.
fn check_patient_reference(object: &Map<String, Value>, patient: &PatientId) -> Result<(), Error> {
    let expected = format!("Patient/{}", patient.as_str());
    let mut found = false;
    for key in ["subject", "patient"] {
        let Some(element) = object.get(key) else {
            continue;
        };
        let field = format!("{FIELD}.{key}.reference");
        let reference = element
            .get("reference")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid(&field, "must be a reference string"))?;
        if reference != expected {
            return Err(Error::invalid(
                &field,
                "must reference the patient named by patient_id",
            ));
        }
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("{FIELD}.subject"),
            "a subject or patient reference to this patient is required",
        ))
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn patient() -> PatientId {
        PatientId::parse("p", "p-1").expect("valid")
    }

    fn record_id() -> RecordId {
        RecordId::parse("r", "r-1").expect("id")
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5)
            .single()
            .expect("time")
    }

    const AT: &str = "2025-01-02T03:04:05.000Z";

    fn parse(json: &str) -> Result<ValidResource, Error> {
        ValidResource::parse(json, &patient(), 1 << 20)
    }

    fn stamp(json: &str) -> String {
        parse(json).expect(json).stamp(&record_id(), 1, at())
    }

    fn refused(json: &str) -> Error {
        parse(json).expect_err(json)
    }

    fn observation(reference: &str) -> String {
        serde_json::json!({
            "resourceType": "Observation",
            "id": "client-chosen",
            "status": "final",
            "code": {"text": "Heart rate"},
            "subject": {"reference": reference},
            "meta": {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Observation"]}
        })
        .to_string()
    }

    /// `{"resourceType":"Observation",<rest>}` with the subject filled in.
    fn with_subject(rest: &str) -> String {
        format!(r#"{{"resourceType":"Observation","subject":{{"reference":"Patient/p-1"}}{rest}}}"#)
    }

    #[test]
    fn a_valid_resource_is_stamped_by_the_server() {
        let resource = parse(&observation("Patient/p-1")).expect("valid");
        assert_eq!(resource.resource_type(), "Observation");
        assert_eq!(resource.client_id(), Some("client-chosen"));
        let stored: Value =
            serde_json::from_str(&resource.stamp(&record_id(), 1, Utc::now())).expect("json");
        assert_eq!(stored["id"], "r-1");
        assert_eq!(stored["meta"]["versionId"], "1");
        assert!(stored["meta"]["lastUpdated"].is_string());
        assert!(stored["meta"]["profile"].is_array(), "other meta is kept");
    }

    #[test]
    fn bad_resources_name_what_is_wrong() {
        let p = patient();
        let cases: Vec<(String, &str)> = vec![
            ("{not json".into(), "resource_json"),
            ("[1,2]".into(), "resource_json"),
            (r#"{"status":"final"}"#.into(), "resource_json.resourceType"),
            (
                r#"{"resourceType":"Patient"}"#.into(),
                "resource_json.resourceType",
            ),
            (r#"{"resourceType":7}"#.into(), "resource_json.resourceType"),
            (
                r#"{"resourceType":"Observation"}"#.into(),
                "resource_json.subject",
            ),
            (
                observation("Patient/someone-else"),
                "resource_json.subject.reference",
            ),
            (
                r#"{"resourceType":"AllergyIntolerance","patient":{"display":"x"}}"#.into(),
                "resource_json.patient.reference",
            ),
        ];
        for (json, field) in cases {
            let err = ValidResource::parse(&json, &p, 1 << 20).expect_err(&json);
            assert_eq!(err.field.as_deref(), Some(field), "{json}");
        }
    }

    #[test]
    fn not_json_and_not_objects_are_told_apart() {
        assert!(refused("{not json").message.contains("is not valid JSON"));
        assert!(
            refused(r#"{"a":1} x"#)
                .message
                .contains("is not valid JSON")
        );
        assert!(refused("[1,2]").message.contains("must be a JSON object"));
        assert!(
            refused(r#""text""#)
                .message
                .contains("must be a JSON object")
        );
    }

    #[test]
    fn oversize_resources_are_refused_before_parsing() {
        let err =
            ValidResource::parse(&observation("Patient/p-1"), &patient(), 16).expect_err("too big");
        assert!(err.message.contains("limit"));
    }

    #[test]
    fn allergy_uses_the_patient_element() {
        let json = r#"{"resourceType":"AllergyIntolerance","patient":{"reference":"Patient/p-1"}}"#;
        assert!(parse(json).is_ok());
    }

    #[test]
    fn devices_are_supported() {
        let json = r#"{"resourceType":"Device","patient":{"reference":"Patient/p-1"}}"#;
        assert_eq!(parse(json).expect("device").resource_type(), "Device");
        let mut sorted = SUPPORTED_RESOURCE_TYPES.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, SUPPORTED_RESOURCE_TYPES, "kept sorted");
    }

    #[test]
    fn numbers_and_escapes_keep_their_text() {
        let json = concat!(
            r#"{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/p-1"},"#,
            r#""valueQuantity":{"value":1.50,"unit":"mg"},"#,
            r#""component":[{"valueDecimal":0.10},{"valueDecimal":1e2},{"valueDecimal":-0.0},"#,
            r#"{"valueInteger":12345678901234567890123}],"#,
            r#""note":[{"text":"caf\u00e9 \"quoted\" \/ \ud83d\ude00 line\nnext"}]}"#
        );
        let expected = json.replacen(
            r#""resourceType":"Observation","#,
            &format!(
                r#""resourceType":"Observation","id":"r-1","meta":{{"versionId":"1","lastUpdated":"{AT}"}},"#
            ),
            1,
        );
        let stamped = stamp(json);
        assert_eq!(stamped, expected);
        for text in [
            "1.50",
            "0.10",
            "1e2",
            "-0.0",
            "12345678901234567890123",
            r#""caf\u00e9 \"quoted\" \/ \ud83d\ude00 line\nnext""#,
        ] {
            assert!(stamped.contains(text), "{text} kept");
        }
    }

    #[test]
    fn member_order_and_names_are_kept() {
        // Neither alphabetical nor serde_json's order; one name escaped.
        let json = concat!(
            r#"{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/p-1"},"#,
            r#""\u0063ode":{"text":"x","coding":[]},"effectiveDateTime":"2024-05-01"}"#
        );
        let expected = json.replacen(
            r#""resourceType":"Observation","#,
            &format!(
                r#""resourceType":"Observation","id":"r-1","meta":{{"versionId":"1","lastUpdated":"{AT}"}},"#
            ),
            1,
        );
        assert_eq!(stamp(json), expected);
        // The view decodes the name.
        assert!(parse(json).expect("valid").as_json().contains_key("code"));
    }

    #[test]
    fn whitespace_between_top_level_members_is_compacted_and_inside_values_kept() {
        let json = "{\n  \"resourceType\" : \"Observation\",\n  \"subject\": { \"reference\" : \"Patient/p-1\" }\n}\n";
        assert_eq!(
            stamp(json),
            format!(
                r#"{{"resourceType":"Observation","id":"r-1","meta":{{"versionId":"1","lastUpdated":"{AT}"}},"subject":{{ "reference" : "Patient/p-1" }}}}"#
            )
        );
    }

    #[test]
    fn id_is_replaced_in_place_and_meta_added_after_it() {
        let json = r#"{"resourceType":"Observation","status":"final","id":"client-1","subject":{"reference":"Patient/p-1"}}"#;
        assert_eq!(parse(json).expect("valid").client_id(), Some("client-1"));
        assert_eq!(
            stamp(json),
            format!(
                r#"{{"resourceType":"Observation","status":"final","id":"r-1","meta":{{"versionId":"1","lastUpdated":"{AT}"}},"subject":{{"reference":"Patient/p-1"}}}}"#
            )
        );
    }

    #[test]
    fn id_and_meta_are_added_after_resource_type() {
        let json = r#"{"status":"final","resourceType":"Observation","subject":{"reference":"Patient/p-1"}}"#;
        assert_eq!(parse(json).expect("valid").client_id(), None);
        assert_eq!(
            stamp(json),
            format!(
                r#"{{"status":"final","resourceType":"Observation","id":"r-1","meta":{{"versionId":"1","lastUpdated":"{AT}"}},"subject":{{"reference":"Patient/p-1"}}}}"#
            )
        );
    }

    #[test]
    fn meta_keeps_its_place_and_members_with_server_values_in_place() {
        let json = with_subject(concat!(
            r#","meta":{"profile":["http://x/p"],"versionId":"7","security":[{"code":"R"}],"#,
            r#""lastUpdated":"2000-01-01T00:00:00Z","tag":[]},"id":"client-1","status":"final""#
        ));
        let expected = format!(
            r#"{{"resourceType":"Observation","subject":{{"reference":"Patient/p-1"}},"meta":{{"profile":["http://x/p"],"versionId":"1","security":[{{"code":"R"}}],"lastUpdated":"{AT}","tag":[]}},"id":"r-1","status":"final"}}"#
        );
        assert_eq!(stamp(&json), expected);
    }

    #[test]
    fn missing_meta_members_are_put_first() {
        let cases = [
            (
                r#","meta":{"tag":[],"lastUpdated":"x"}"#,
                format!(r#""meta":{{"versionId":"1","tag":[],"lastUpdated":"{AT}"}}"#),
            ),
            (
                r#","meta":{"versionId":"0","tag":[]}"#,
                format!(r#""meta":{{"lastUpdated":"{AT}","versionId":"1","tag":[]}}"#),
            ),
            (
                r#","meta":{}"#,
                format!(r#""meta":{{"versionId":"1","lastUpdated":"{AT}"}}"#),
            ),
        ];
        for (rest, meta) in cases {
            let json = with_subject(rest);
            let stamped = stamp(&json);
            assert!(stamped.contains(&meta), "{stamped}");
            // id is added after resourceType, and meta is not added twice.
            assert!(stamped.starts_with(r#"{"resourceType":"Observation","id":"r-1","subject""#));
            assert_eq!(stamped.matches(r#""meta""#).count(), 1);
        }
    }

    #[test]
    fn a_version_the_client_sent_is_overwritten() {
        let json =
            with_subject(r#","meta":{"versionId":"99","lastUpdated":"1999-01-01T00:00:00Z"}"#);
        let stored: Value =
            serde_json::from_str(&parse(&json).expect("valid").stamp(&record_id(), 4, at()))
                .expect("json");
        assert_eq!(stored["meta"]["versionId"], "4");
        assert_eq!(stored["meta"]["lastUpdated"], AT);
    }

    /// Drops what the server sets, for comparing stored and sent values.
    fn without_server_members(mut value: Value) -> Value {
        if let Some(object) = value.as_object_mut() {
            object.remove("id");
            object.remove("meta");
        }
        value
    }

    fn synthea_round_trip(file: &str) {
        let path = format!(
            "{}/../../../shared/data/synthea-10-patients/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let Ok(text) = std::fs::read_to_string(&path) else {
            println!("note: {path} is missing; skipping the Synthea round trip");
            return;
        };
        let id = record_id();
        let mut lines = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let sent: Value = serde_json::from_str(line).expect("synthea line");
            let reference = ["subject", "patient"]
                .iter()
                .find_map(|k| sent[k]["reference"].as_str())
                .expect("patient reference");
            let patient_id = reference
                .strip_prefix("Patient/")
                .expect("Patient/ reference");
            let patient = PatientId::parse("p", patient_id).expect("patient id");
            let resource = ValidResource::parse(line, &patient, 1 << 20).expect(line);
            let stamped = resource.stamp(&id, 3, at());

            let stored: Value = serde_json::from_str(&stamped).expect("stored json");
            assert_eq!(stored["id"], "r-1");
            assert_eq!(stored["meta"]["versionId"], "3");
            assert_eq!(
                without_server_members(stored),
                without_server_members(sent),
                "{line}"
            );

            // Exact text: undo the server's changes and the line comes back,
            // so any change of order, number text or escapes would show.
            let client_id = resource.client_id().expect("synthea resources have ids");
            let restored = stamped
                .replacen(r#""id":"r-1""#, &format!(r#""id":"{client_id}""#), 1)
                .replacen(
                    &format!(r#""meta":{{"versionId":"3","lastUpdated":"{AT}","#),
                    r#""meta":{"#,
                    1,
                );
            assert_eq!(restored, line);
            lines += 1;
        }
        assert!(lines > 0, "{path} has resources");
    }

    #[test]
    fn synthea_conditions_are_stored_as_sent() {
        synthea_round_trip("Condition.000.ndjson");
    }

    #[test]
    fn synthea_devices_and_medication_requests_are_stored_as_sent() {
        // MedicationRequest has decimals (dosage), Device the patient element.
        synthea_round_trip("Device.000.ndjson");
        synthea_round_trip("MedicationRequest.000.ndjson");
    }

    /// A resource whose deepest point is `depth` levels down, the resource
    /// itself being level 1.
    fn nested(depth: usize) -> String {
        let arrays = depth - 1;
        with_subject(&format!(
            r#","extension":{}{}"#,
            "[".repeat(arrays),
            "]".repeat(arrays)
        ))
    }

    #[test]
    fn nesting_is_bounded() {
        assert!(parse(&nested(MAX_DEPTH)).is_ok());
        let err = refused(&nested(MAX_DEPTH + 1));
        assert_eq!(err.field.as_deref(), Some("resource_json"));
        assert!(
            err.message.contains("nests deeper than 64 levels"),
            "{}",
            err.message
        );

        // Far deeper than any stack allows for a recursive parser.
        let err = refused(&"[".repeat(100_000));
        assert!(err.message.contains("nests deeper than 64 levels"));
        let err = refused(&format!(r#"{{"a":{}"#, "{\"a\":".repeat(100_000)));
        assert!(err.message.contains("nests deeper than 64 levels"));
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let text = format!(r#"\"{}\\"#, "[{".repeat(200));
        let json = with_subject(&format!(r#","note":[{{"text":"{text}"}}]"#));
        let resource = parse(&json).expect("brackets in text are fine");
        let stamped = resource.stamp(&record_id(), 1, at());
        assert!(stamped.contains(&text));
    }

    #[test]
    fn duplicate_member_names_are_refused_wherever_they_are() {
        let cases = [
            (
                with_subject(r#","status":"final","status":"amended""#),
                "resource_json",
                "status",
            ),
            (
                // The same name, escaped differently.
                with_subject(r#","status":"final","\u0073tatus":"amended""#),
                "resource_json",
                "status",
            ),
            (
                with_subject(r#","code":{"text":"a","text":"b"}"#),
                "resource_json.code",
                "text",
            ),
            (
                with_subject(r#","code":{"coding":[{"code":"1"},{"code":"2","system":"s","code":"3"}]}"#),
                "resource_json.code.coding[1]",
                "code",
            ),
            (
                r#"{"resourceType":"Observation","resourceType":"Condition","subject":{"reference":"Patient/p-1"}}"#.into(),
                "resource_json",
                "resourceType",
            ),
        ];
        for (json, field, name) in cases {
            let err = refused(&json);
            assert_eq!(err.field.as_deref(), Some(field), "{json}");
            assert!(
                err.message.contains(&format!("\"{name}\"")),
                "{}",
                err.message
            );
            assert!(err.message.contains("more than once"), "{}", err.message);
            // Values are clinical content and never echoed.
            assert!(!err.message.contains("amended") && !err.message.contains("Condition\""));
        }
    }

    #[test]
    fn long_duplicate_names_are_cut_in_the_message() {
        let name = "n".repeat(100);
        let err = refused(&with_subject(&format!(r#","{name}":1,"{name}":2"#)));
        assert!(err.message.contains(&"n".repeat(40)));
        assert!(!err.message.contains(&"n".repeat(41)));
    }

    #[test]
    fn ids_follow_the_fhir_id_rule() {
        for id in [
            r#""a/b""#.to_owned(),
            format!(r#""{}""#, "a".repeat(65)),
            r#""""#.to_owned(),
            r#""a b""#.to_owned(),
            "7".to_owned(),
            "null".to_owned(),
        ] {
            let err = refused(&with_subject(&format!(r#","id":{id}"#)));
            assert_eq!(err.field.as_deref(), Some("resource_json.id"), "{id}");
        }
        let longest = "A-z.9".repeat(13)[..64].to_owned();
        let resource = parse(&with_subject(&format!(r#","id":"{longest}""#))).expect("64 chars");
        assert_eq!(resource.client_id(), Some(longest.as_str()));
    }

    #[test]
    fn meta_must_be_an_object() {
        for meta in ["[]", r#""x""#, "1", "null"] {
            let err = refused(&with_subject(&format!(r#","meta":{meta}"#)));
            assert_eq!(err.field.as_deref(), Some("resource_json.meta"), "{meta}");
        }
    }

    #[test]
    fn the_view_is_the_parsed_resource() {
        let json = with_subject(r#","valueQuantity":{"value":1.50},"code":{"text":"x"}"#);
        let resource = parse(&json).expect("valid");
        let expected: Value = serde_json::from_str(&json).expect("json");
        assert_eq!(&Value::Object(resource.as_json().clone()), &expected);
    }
}
