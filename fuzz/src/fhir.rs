//! FHIR intake: records' resource check, the classification map, the search
//! index, and search's token queries.

use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use serde_json::{Map, Value};
use sharedcare_records::domain::{
    ClassificationMap, PatientId, RecordId, TokenQuery, ValidResource, extract,
};

/// The patient every seed refers to (`Patient/fuzz-patient-1`).
pub const PATIENT: &str = "fuzz-patient-1";

/// records' default `max_resource_bytes`.
const MAX_BYTES: usize = 1 << 20;

fn map() -> &'static ClassificationMap {
    static MAP: OnceLock<ClassificationMap> = OnceLock::new();
    MAP.get_or_init(|| ClassificationMap::builtin().expect("the built-in classification map"))
}

fn patient() -> PatientId {
    PatientId::parse("patient_id", PATIENT).expect("a valid patient id")
}

/// The text as a resource for [`PATIENT`]. One accepted is classified and
/// indexed; stamped, it is still valid, of the same type, carries the
/// server's id, version and time and is otherwise the same, and classifies
/// and indexes the same. Refusals name a field
/// under `resource_json`. The text is also read as a token query value.
pub fn fhir_intake(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    token_query(json);
    let patient = patient();
    let resource = match ValidResource::parse(json, &patient, MAX_BYTES) {
        Ok(resource) => resource,
        Err(e) => {
            let field = e.field.as_deref().unwrap_or_default();
            assert!(
                field.starts_with("resource_json"),
                "a refusal names the field: {e:?}"
            );
            return;
        }
    };
    let category = map().classify(&resource);
    let index = extract(resource.resource_type(), resource.as_json());

    let id = RecordId::parse("id", "rec-1").expect("a valid record id");
    let at = Utc
        .timestamp_opt(1_700_000_000, 0)
        .single()
        .unwrap_or_default();
    let stamped = resource.stamp(&id, 3, at);
    let again = match ValidResource::parse(&stamped, &patient, usize::MAX) {
        Ok(again) => again,
        Err(e) => panic!("a stamped resource is refused ({e:?}): {stamped}"),
    };
    assert_eq!(again.resource_type(), resource.resource_type());
    assert_eq!(again.client_id(), Some("rec-1"), "{stamped}");
    assert_eq!(map().classify(&again), category, "{stamped}");
    assert_eq!(
        extract(again.resource_type(), again.as_json()),
        index,
        "{stamped}"
    );
    // Stamping is a function of what was sent: stamping twice is stamping once.
    assert_eq!(again.stamp(&id, 3, at), stamped);
    // And it sets the id, the version and the time, and nothing else.
    assert_eq!(
        without_server_members(again.as_json()),
        without_server_members(resource.as_json()),
        "{stamped}"
    );
    let meta = &again.as_json()["meta"];
    assert_eq!(meta["versionId"], "3");
    assert_eq!(meta["lastUpdated"], "2023-11-14T22:13:20.000Z");
}

/// A resource without `id`, `meta.versionId` and `meta.lastUpdated` (and
/// without a `meta` left empty by their removal).
fn without_server_members(resource: &Map<String, Value>) -> Map<String, Value> {
    let mut out = resource.clone();
    out.remove("id");
    if let Some(Value::Object(meta)) = out.get_mut("meta") {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            out.remove("meta");
        }
    }
    out
}

/// A token query parses to a system and a non-empty code that write back
/// to the same value.
fn token_query(value: &str) {
    let Ok(query) = TokenQuery::parse("code", value) else {
        return;
    };
    assert!(!query.code.is_empty());
    let written = match &query.system {
        Some(system) => format!("{system}|{}", query.code),
        None => query.code.clone(),
    };
    assert_eq!(written, value);
    assert_eq!(TokenQuery::parse("code", &written).ok(), Some(query));
}
