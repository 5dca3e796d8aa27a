//! Checking a FHIR R4 resource before it is stored: a JSON object of a
//! supported `resourceType`, bounded in size, whose `subject` or `patient`
//! reference is this patient. The server sets `id` and `meta`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sharedcare_kit::Error;

use super::{PatientId, RecordId};

const FIELD: &str = "resource_json";

/// Patient-linked clinical and care resources we accept. Patient itself is
/// not here: demographics live in identity.
pub const SUPPORTED_RESOURCE_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "Condition",
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
    object: Map<String, Value>,
    resource_type: String,
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
        let value: Value = serde_json::from_str(json).map_err(|e| {
            // serde_json's message holds a position, never the content.
            Error::invalid(FIELD, format!("is not valid JSON ({e})"))
        })?;
        let Value::Object(object) = value else {
            return Err(Error::invalid(FIELD, "must be a JSON object"));
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
                    truncate(&resource_type, 40),
                    SUPPORTED_RESOURCE_TYPES.join(", ")
                ),
            ));
        }
        check_patient_reference(&object, patient)?;
        Ok(ValidResource {
            object,
            resource_type,
        })
    }

    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// The resource as received (what the classification map reads).
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.object
    }

    /// The resource as stored: `id`, `meta.versionId` and `meta.lastUpdated`
    /// set by the server, the rest of `meta` kept.
    pub fn stamp(mut self, id: &RecordId, version: i64, at: DateTime<Utc>) -> String {
        self.object
            .insert("id".into(), Value::String(id.as_str().to_owned()));
        let mut meta = match self.object.remove("meta") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        meta.insert("versionId".into(), Value::String(version.to_string()));
        meta.insert(
            "lastUpdated".into(),
            Value::String(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        self.object.insert("meta".into(), Value::Object(meta));
        Value::Object(self.object).to_string()
    }
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
    use super::*;

    fn patient() -> PatientId {
        PatientId::parse("p", "p-1").expect("valid")
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

    #[test]
    fn a_valid_resource_is_stamped_by_the_server() {
        let resource =
            ValidResource::parse(&observation("Patient/p-1"), &patient(), 1 << 20).expect("valid");
        assert_eq!(resource.resource_type(), "Observation");
        let id = RecordId::parse("r", "r-1").expect("id");
        let stored: Value =
            serde_json::from_str(&resource.stamp(&id, 1, Utc::now())).expect("json");
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
    fn oversize_resources_are_refused_before_parsing() {
        let err =
            ValidResource::parse(&observation("Patient/p-1"), &patient(), 16).expect_err("too big");
        assert!(err.message.contains("limit"));
    }

    #[test]
    fn allergy_uses_the_patient_element() {
        let json = r#"{"resourceType":"AllergyIntolerance","patient":{"reference":"Patient/p-1"}}"#;
        assert!(ValidResource::parse(json, &patient(), 1 << 20).is_ok());
    }
}
