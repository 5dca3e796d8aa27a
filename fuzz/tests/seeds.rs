//! Writes the seed files of `corpus/` (run by hand, not by `cargo test`):
//!
//! ```sh
//! cargo test -p sharedcare-fuzz --test seeds -- --ignored
//! ```
//!
//! Seeds are named `seed-*`; what libFuzzer added is named by its hash.
//! FHIR and import seeds come from the Synthea export in
//! `../shared/data/synthea-10-patients`, Merkle seeds from the RFC 6962
//! vectors in `../shared/data/merkle-vectors`.

use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use prost::Message;
use serde_json::Value;
use sharedcare_fuzz::{
    PATIENT, merkle, page_token,
    proto_request::MESSAGES,
    token::{header_json, valid_claims, valid_token},
};
use sharedcare_proto::{audit, identity, records};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared() -> PathBuf {
    root().join("../../shared/data")
}

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = root().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
}

fn with_mode(mode: u8, rest: impl AsRef<[u8]>) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(rest.as_ref());
    out
}

/// The `n` shortest lines of an NDJSON file.
fn shortest_lines(file: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("synthea file");
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines.sort_by_key(|l| (l.len(), *l));
    lines.into_iter().take(n).map(str::to_owned).collect()
}

#[test]
#[ignore = "writes corpus/; run by hand"]
fn write_seeds() {
    fhir_and_import();
    demographics();
    tokens();
    pages();
    protos();
    merkle_seeds();
}

fn fhir_and_import() {
    let dir = shared().join("synthea-10-patients");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("synthea dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    for file in &files {
        let stem = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .expect("name")
            .to_owned();
        for (i, line) in shortest_lines(file, 2).into_iter().enumerate() {
            write("import_line", &format!("{stem}-{i}"), &line);
            let mut value: Value = serde_json::from_str(&line).expect("synthea JSON");
            for key in ["subject", "patient"] {
                if value.get(key).is_some() {
                    value[key] = serde_json::json!({"reference": format!("Patient/{PATIENT}")});
                }
            }
            write(
                "fhir_intake",
                &format!("{stem}-{i}"),
                serde_json::to_string(&value).expect("JSON"),
            );
        }
    }
    let reference = format!(r#""subject":{{"reference":"Patient/{PATIENT}"}}"#);
    let coded = |t: &str, system: &str, code: &str| {
        format!(
            r#"{{"resourceType":"{t}","id":"x1","meta":{{"versionId":"9","tag":[{{"system":"s","code":"c"}}]}},{reference},"code":{{"coding":[{{"system":"{system}","code":"{code}"}}]}},"effectiveDateTime":"2024-02","valueQuantity":{{"value":1.50}}}}"#
        )
    };
    write(
        "fhir_intake",
        "hiv",
        coded("Condition", "http://snomed.info/sct", "86406008"),
    );
    write(
        "fhir_intake",
        "f32",
        coded("Condition", "http://hl7.org/fhir/sid/icd-10-uk", "F32.1"),
    );
    write(
        "fhir_intake",
        "chlamydia",
        coded("Observation", "http://loinc.org", "43304-5"),
    );
    write(
        "fhir_intake",
        "duplicate",
        format!(r#"{{"resourceType":"Observation",{reference},"a":{{"b":1,"b":2}}}}"#),
    );
    write(
        "fhir_intake",
        "deep",
        format!("{}{}", "[".repeat(70), "]".repeat(70)),
    );
    write("fhir_intake", "query-system", "http://loinc.org|1234-5");
    write("fhir_intake", "query-bare", "|abc");
    write("import_line", "not-json", "{\"resourceType\":");
    write(
        "import_line",
        "escaped",
        r#"{"resourceType":"Condition","id":"c\"1","subject":{"reference":"Patient/a\\"},"x":{"reference" :  "urn:uuid:b"}}"#,
    );
}

fn demographics() {
    for (i, s) in [
        "9434765919",
        "943 476 5919",
        "0000000000",
        "1234567890",
        "999 000 0000",
    ]
    .iter()
    .enumerate()
    {
        write("nhs_number", &i.to_string(), s);
    }
    for (i, s) in [
        "LS1 4AP",
        "ls14ap",
        "SW1A1AA",
        "EC1A 1BB",
        " m1  1ae ",
        "ŁS1 4AP",
    ]
    .iter()
    .enumerate()
    {
        write("postcode", &i.to_string(), s);
    }
    for (i, s) in ["1980", "1980-05", "1980-05-17", "2000-02-30", " 1999-1-5 "]
        .iter()
        .enumerate()
    {
        write("birth_date", &i.to_string(), s);
    }
}

fn tokens() {
    write("token", "valid", with_mode(0, valid_token()));
    write("token", "edit", with_mode(1, [2, 0, 40, 0, 7, 3, 10, 0, 0]));
    let claims = serde_json::to_string(&valid_claims()).expect("claims");
    write("token", "claims", with_mode(2, &claims));
    let mut patient = valid_claims();
    patient.kind = "patient".into();
    patient.pat = PATIENT.into();
    patient.caps = vec!["break_glass".into()];
    write(
        "token",
        "claims-patient",
        with_mode(2, serde_json::to_string(&patient).expect("claims")),
    );
    write("token", "header", with_mode(3, header_json()));
    write("token", "bearer", with_mode(4, "Bearer a.b.c"));
    write("token", "bearer-lower", with_mode(4, "bearer   x.y.z  "));
    write("token", "basic", with_mode(4, "Basic dXNlcjpwYXNz"));
}

fn pages() {
    let token = sharedcare_audit::domain::PageToken::after_sequence(42).encode();
    write("page_token", "audit", with_mode(0, token));
    let position = sharedcare_kit::paging::time_id_position(1_700_000_000_000_000, "rec-1");
    write(
        "page_token",
        "cursor",
        with_mode(1, page_token::cursor(&position)),
    );
    let mut issue = vec![2, position.len() as u8, 0];
    issue.extend_from_slice(&position);
    issue.extend_from_slice(&[1, 0, 5, 0, 65]);
    write("page_token", "issue", issue);
    write("page_token", "size", with_mode(3, 100i32.to_le_bytes()));
}

fn protos() {
    let index = |name: &str| {
        MESSAGES
            .iter()
            .position(|(n, _)| *n == name)
            .expect("a listed message") as u8
    };
    let full = |name: &str, message: Vec<u8>| {
        write(
            "proto_request",
            &format!("{name}-full"),
            with_mode(index(name), message),
        );
    };
    for (i, (name, _)) in MESSAGES.iter().enumerate() {
        write("proto_request", name, [i as u8]);
    }
    let register = identity::v1::RegisterPatientRequest {
        nhs_number: "9434765919".into(),
        demographics: Some(identity::v1::Demographics {
            given_names: vec!["Ann".into(), "Marie".into()],
            family_name: "Smith".into(),
            birth_date: "1980-05-17".into(),
            gender: 2,
            postcode: "LS1 4AP".into(),
            ..Default::default()
        }),
        confirm_new_patient: true,
    };
    full(
        "sharedcare.identity.v1.RegisterPatientRequest",
        register.encode_to_vec(),
    );
    let create = records::v1::CreateRecordRequest {
        patient_id: PATIENT.into(),
        resource_json: r#"{"resourceType":"Condition"}"#.into(),
        category: 1,
        purpose: 1,
        idempotency_key: "k1".into(),
    };
    full(
        "sharedcare.records.v1.CreateRecordRequest",
        create.encode_to_vec(),
    );
    let search = records::v1::SearchRequest {
        patient_id: PATIENT.into(),
        page_size: 20,
        date_from: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 2,
        }),
        ..Default::default()
    };
    full(
        "sharedcare.records.v1.SearchRequest",
        search.encode_to_vec(),
    );
    let batch = audit::v1::AppendBatchRequest {
        events: vec![audit::v1::AuditEvent {
            event_id: "e1".into(),
            patient_id: PATIENT.into(),
            ..Default::default()
        }],
    };
    full(
        "sharedcare.audit.v1.AppendBatchRequest",
        batch.encode_to_vec(),
    );
}

fn hash(value: &Value) -> Vec<u8> {
    value
        .as_str()
        .map(|s| STANDARD.decode(s).expect("base64"))
        .unwrap_or_default()
}

fn items(out: &mut Vec<u8>, hashes: &[Vec<u8>]) {
    for h in hashes {
        out.push(h.len() as u8);
        out.extend_from_slice(h);
    }
}

/// Every JSON file below `dir`, in order.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("vectors")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out
}

fn merkle_seeds() {
    for kind in ["inclusion", "consistency"] {
        let dir = shared().join("merkle-vectors").join(kind);
        for file in json_files(&dir) {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("vector"))
                .expect("JSON");
            let proof: Vec<Vec<u8>> = v["proof"]
                .as_array()
                .map(|p| p.iter().map(hash).collect())
                .unwrap_or_default();
            let mut out = Vec::new();
            if kind == "inclusion" {
                out.push(0);
                out.extend_from_slice(&v["leafIdx"].as_u64().unwrap_or(0).to_le_bytes());
                out.extend_from_slice(&v["treeSize"].as_u64().unwrap_or(0).to_le_bytes());
                items(&mut out, &[hash(&v["leafHash"]), hash(&v["root"])]);
            } else {
                out.push(1);
                out.extend_from_slice(&v["size1"].as_u64().unwrap_or(0).to_le_bytes());
                out.extend_from_slice(&v["size2"].as_u64().unwrap_or(0).to_le_bytes());
                items(&mut out, &[hash(&v["root1"]), hash(&v["root2"])]);
            }
            items(&mut out, &proof);
            let name = file
                .strip_prefix(&dir)
                .expect("under the vectors")
                .with_extension("")
                .to_string_lossy()
                .replace('/', "-");
            write("merkle", &format!("{kind}-{name}"), out);
        }
    }
    write("merkle", "real-inclusion", [2, 7, 0, 3, 0, 3, 1, 2, 3]);
    write(
        "merkle",
        "real-consistency",
        [3, 200, 0, 77, 0, 2, 0, 1, 2, 3],
    );
    let note = merkle::signed_note_text(1234, [7; 32]);
    write("merkle", "note", with_mode(4, &note));
    write(
        "merkle",
        "note-two-signatures",
        with_mode(4, format!("{note}\u{2014} other AAAA\n")),
    );
    let mut signed = vec![5];
    signed.extend_from_slice(&1234u64.to_le_bytes());
    signed.extend_from_slice(&[7; 32]);
    signed.extend_from_slice(&[1, 1, 60, 0, b'\n']);
    write("merkle", "note-edit", signed);
    write(
        "merkle",
        "verifier-key",
        with_mode(6, merkle::verifier_key_text()),
    );
}
