//! `sharedcare import`'s reading of a bulk-export line, and the rewriting
//! of the references in a resource's text to the platform's ids.

use std::collections::HashMap;

use serde_json::Value;
use sharedcare_cli::ndjson::{LineOutcome, parse_line, patient_of, rewrite_references};

/// A line read as a resource is the trimmed text, JSON, with a type and an
/// id. Rewriting its references keeps it JSON: with no map the text is
/// untouched; with every reference mapped (and nothing escaped), each
/// becomes its new value and nothing else changes.
pub fn import_line(data: &[u8]) {
    let resource = match parse_line(data) {
        LineOutcome::Resource(resource) => resource,
        LineOutcome::Blank => {
            let text = std::str::from_utf8(data).expect("a blank line is text");
            assert!(text.trim().is_empty());
            return;
        }
        LineOutcome::Bad(_) | LineOutcome::Skipped(_) => return,
    };
    let text = std::str::from_utf8(data).expect("a resource line is text");
    assert_eq!(resource.text, text.trim());
    let value: Value = serde_json::from_str(&resource.text).expect("a resource line is JSON");
    assert_eq!(
        value["resourceType"].as_str(),
        Some(&*resource.resource_type)
    );
    assert_eq!(value["id"].as_str(), Some(&*resource.source_id));
    assert_eq!(patient_of(&value), resource.patient);

    assert_eq!(
        rewrite_references(&resource.text, &HashMap::new()),
        resource.text
    );

    // Every reference as the JSON holds it (ids: no quotes or escapes) →
    // a new one of the same shape.
    let mut references = Vec::new();
    collect_references(&value, &mut references);
    let map: HashMap<String, String> = references
        .iter()
        .filter(|r| !r.contains(['"', '\\']) && !r.chars().any(char::is_control))
        .map(|r| (r.clone(), format!("Mapped/{}", r.len())))
        .collect();
    let rewritten = rewrite_references(&resource.text, &map);
    let got: Value = match serde_json::from_str(&rewritten) {
        Ok(got) => got,
        Err(e) => panic!("rewriting references broke the JSON ({e}): {rewritten}"),
    };
    // The rewrite reads the text, not the JSON: where nothing is escaped
    // the two agree, and it must find every reference.
    if !resource.text.contains('\\') {
        let mut expected = value;
        remap(&mut expected, &map);
        assert_eq!(got, expected, "{rewritten}");
    }
}

/// Every string value of a `reference` member.
fn collect_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (name, member) in object {
                if name == "reference"
                    && let Value::String(reference) = member
                {
                    out.push(reference.clone());
                }
                collect_references(member, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, out)),
        _ => {}
    }
}

fn remap(value: &mut Value, map: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            for (name, member) in object.iter_mut() {
                if name == "reference"
                    && let Value::String(reference) = member
                    && let Some(new) = map.get(reference.as_str())
                {
                    *reference = new.clone();
                }
                remap(member, map);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| remap(v, map)),
        _ => {}
    }
}
