//! The FHIR R4 resources the GP writes in the demo: made-up, minimal, and
//! coded so that records' classification map files each under its category
//! (`services/records/classification.toml`).

/// A systolic blood pressure reading: the general record.
pub fn blood_pressure(patient_id: &str) -> String {
    serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs"
            }]
        }],
        "code": {
            "coding": [{
                "system": "http://snomed.info/sct",
                "code": "271649006",
                "display": "Systolic blood pressure"
            }]
        },
        "subject": { "reference": format!("Patient/{patient_id}") },
        "effectiveDateTime": "2025-01-15T09:30:00Z",
        "valueQuantity": {
            "value": 128,
            "unit": "mmHg",
            "system": "http://unitsofmeasure.org",
            "code": "mm[Hg]"
        }
    })
    .to_string()
}

/// An HIV diagnosis: sexual health by its SNOMED CT code (86406008),
/// whatever its writer labels it.
pub fn hiv_diagnosis(patient_id: &str) -> String {
    serde_json::json!({
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"
            }]
        },
        "code": {
            "coding": [{
                "system": "http://snomed.info/sct",
                "code": "86406008",
                "display": "Human immunodeficiency virus infection"
            }]
        },
        "subject": { "reference": format!("Patient/{patient_id}") },
        "recordedDate": "2025-01-15"
    })
    .to_string()
}

/// A referral to social services: social care by its SNOMED CT code
/// (306238000).
pub fn social_services_referral(patient_id: &str) -> String {
    serde_json::json!({
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {
            "coding": [{
                "system": "http://snomed.info/sct",
                "code": "306238000",
                "display": "Referral to social services"
            }]
        },
        "subject": { "reference": format!("Patient/{patient_id}") },
        "authoredOn": "2025-01-15"
    })
    .to_string()
}
