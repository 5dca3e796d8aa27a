//! One line of a FHIR bulk export (NDJSON, one resource per line): what
//! `sharedcare import` makes of it, and how it rewrites the references in
//! a resource's text to the platform's ids.

use std::collections::HashMap;

use serde_json::Value;

/// A resource read from a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLine {
    pub resource_type: String,
    pub source_id: String,
    /// The line as sent, trimmed: what is stored, references rewritten.
    pub text: String,
    /// The patient it belongs to (see [`patient_of`]).
    pub patient: Option<String>,
}

/// What a line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    /// Nothing but white space.
    Blank,
    Resource(ResourceLine),
    /// Wrong (not UTF-8, not JSON): the importer says so at once.
    Bad(String),
    /// Not something to import; counted in the summary.
    Skipped(&'static str),
}

/// Reads one line (without its newline).
pub fn parse_line(line: &[u8]) -> LineOutcome {
    let Ok(text) = std::str::from_utf8(line) else {
        return LineOutcome::Bad("not UTF-8".into());
    };
    let text = text.trim();
    if text.is_empty() {
        return LineOutcome::Blank;
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return LineOutcome::Bad(format!("not valid JSON ({})", category_name(&e))),
    };
    let Some(resource_type) = value.get("resourceType").and_then(Value::as_str) else {
        return LineOutcome::Skipped("not a FHIR resource (no resourceType)");
    };
    let Some(source_id) = value.get("id").and_then(Value::as_str) else {
        return LineOutcome::Skipped("no id (needed to import it once only)");
    };
    LineOutcome::Resource(ResourceLine {
        resource_type: resource_type.to_owned(),
        source_id: source_id.to_owned(),
        patient: patient_of(&value),
        text: text.to_owned(),
    })
}

fn category_name(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "bad data",
        serde_json::error::Category::Eof => "truncated",
    }
}

/// The patient a resource belongs to: `subject` or `patient`, as
/// `Patient/<id>` or `urn:uuid:<id>`.
pub fn patient_of(resource: &Value) -> Option<String> {
    ["subject", "patient"].iter().find_map(|key| {
        let reference = resource.get(key)?.get("reference")?.as_str()?;
        reference
            .strip_prefix("Patient/")
            .or_else(|| reference.strip_prefix("urn:uuid:"))
            .map(str::to_owned)
    })
}

/// Rewrites every `"reference": "..."` string whose target was imported,
/// in place: the rest of the text is untouched.
pub fn rewrite_references(text: &str, map: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\"reference\"") {
        let (before, after) = rest.split_at(at + "\"reference\"".len());
        out.push_str(before);
        let value_start = after
            .find(|c: char| !c.is_whitespace() && c != ':')
            .unwrap_or(after.len());
        let (gap, value) = after.split_at(value_start);
        out.push_str(gap);
        let Some(body) = value.strip_prefix('"') else {
            rest = value;
            continue;
        };
        // References are ids and type names: no escapes to honour.
        let Some(end) = body.find('"') else {
            rest = value;
            continue;
        };
        let reference = &body[..end];
        out.push('"');
        out.push_str(map.get(reference).map_or(reference, String::as_str));
        out.push('"');
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_rewritten_in_place() {
        let map = HashMap::from([
            ("Patient/p1".to_owned(), "Patient/NEW".to_owned()),
            ("urn:uuid:e1".to_owned(), "Encounter/E".to_owned()),
        ]);
        let text = r#"{"a":1.50,"subject":{"reference" : "Patient/p1"},"encounter":{"reference":"urn:uuid:e1"},"x":{"reference":"Practitioner/k"}}"#;
        assert_eq!(
            rewrite_references(text, &map),
            r#"{"a":1.50,"subject":{"reference" : "Patient/NEW"},"encounter":{"reference":"Encounter/E"},"x":{"reference":"Practitioner/k"}}"#
        );
    }

    #[test]
    fn lines_are_read_as_the_importer_counts_them() {
        assert_eq!(parse_line(b"  \t"), LineOutcome::Blank);
        assert_eq!(parse_line(b"\xff{}"), LineOutcome::Bad("not UTF-8".into()));
        assert_eq!(
            parse_line(b"{\"a\":"),
            LineOutcome::Bad("not valid JSON (truncated)".into())
        );
        assert!(matches!(parse_line(b"{}"), LineOutcome::Skipped(_)));
        assert!(matches!(
            parse_line(br#"{"resourceType":"Condition"}"#),
            LineOutcome::Skipped(_)
        ));
        let line =
            br#" {"resourceType":"Condition","id":"c1","subject":{"reference":"urn:uuid:p1"}} "#;
        assert_eq!(
            parse_line(line),
            LineOutcome::Resource(ResourceLine {
                resource_type: "Condition".into(),
                source_id: "c1".into(),
                text: std::str::from_utf8(line).expect("utf-8").trim().to_owned(),
                patient: Some("p1".into()),
            })
        );
    }
}
