//! The Synthea bulk export in through `sharedcare import` and out through
//! `sharedcare export`, against the real `sharedcare dev`: everything
//! patient-linked is imported, what is not is skipped with a reason, a
//! re-run imports nothing twice, and what comes out equals what went in
//! apart from ids, references and meta.

mod support;

use std::{collections::HashMap, path::Path};

use serde_json::Value;
use support::{Dev, admin_token, cli, free_base_port, principal_token};

const SYNTHEA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/synthea-10-patients"
);

/// A resource with what the platform sets or rewrites taken out.
fn comparable(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get_mut("reference") {
                    *r = "<reference>".into();
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if let Value::Object(map) = &mut value {
        map.remove("id");
        map.remove("meta");
    }
    strip(&mut value);
    value
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_synthea_export_imports_once_and_exports_as_it_came_in() {
    if !Path::new(SYNTHEA).is_dir() {
        eprintln!("SKIPPED: {SYNTHEA} is not here");
        return;
    }
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let base_port = free_base_port();
    let mut dev = Dev::start(&data_dir, temp.path(), base_port);
    dev.wait_until_serving(base_port);

    let admin = admin_token(&dev, &data_dir, base_port);
    cli(
        &dev,
        base_port,
        Some(&admin),
        &["org", "create", "--ods", "A81001", "--name", "Test Surgery"],
    );
    let pas = principal_token(
        &dev,
        base_port,
        &admin,
        &[
            "--kind",
            "application",
            "--ods",
            "A81001",
            "--name",
            "Importer",
            "--scope",
            "patients.read",
            "--scope",
            "patients.write",
            "--scope",
            "records.read",
            "--scope",
            "records.write",
            "--scope",
            "consent.read",
            "--scope",
            "consent.write",
        ],
    );
    let id_map = temp.path().join("ids.tsv");
    let import = |extra: &[&str]| {
        cli(
            &dev,
            base_port,
            Some(&pas),
            &[&["import", SYNTHEA, "--ods", "A81001"], extra].concat(),
        )
    };
    let first = import(&["--id-map", id_map.to_str().expect("path")]);
    assert!(
        first.contains("imported 6974 resources and 13 patients"),
        "{first}"
    );
    for skipped in [
        "44  Location: not a patient record",
        "43  Organization: not a patient record",
        "43  Practitioner: not a patient record",
        "43  PractitionerRole: not a patient record",
        "4  not a FHIR resource (no resourceType)  (e.g. log.ndjson:1",
    ] {
        assert!(first.contains(skipped), "{skipped}:\n{first}");
    }
    let again = import(&[]);
    assert!(again.contains("imported 0 resources"), "{again}");
    assert!(
        again.contains("already imported before (not imported again): 6974"),
        "{again}"
    );

    // The first patient's record out, compared with what went in.
    let ids: HashMap<String, String> = std::fs::read_to_string(&id_map)
        .expect("id map")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(s, p)| (s.to_owned(), p.to_owned()))
        .collect();
    let source_patient = "129c6ac7-8d06-89de-ad63-0204a93e76c3";
    let patient = ids[&format!("Patient/{source_patient}")]
        .trim_start_matches("Patient/")
        .to_owned();
    let out = temp.path().join("export");
    let exported = cli(
        &dev,
        base_port,
        Some(&pas),
        &[
            "export",
            "--patient",
            &patient,
            "--out",
            out.to_str().expect("path"),
        ],
    );
    let mut went_in: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(SYNTHEA).expect("synthea dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "ndjson") {
            continue;
        }
        for line in lines(&path) {
            let value: Value = serde_json::from_str(&line).expect("json");
            let subject = ["subject", "patient"]
                .iter()
                .find_map(|k| value.get(k)?.get("reference")?.as_str().map(str::to_owned));
            if subject.is_some_and(|s| s.ends_with(source_patient))
                && value["resourceType"] != "Patient"
            {
                went_in.push(comparable(value).to_string());
            }
        }
    }
    let mut came_out: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&out).expect("export dir") {
        for line in lines(&entry.expect("entry").path()) {
            let value: Value = serde_json::from_str(&line).expect("json");
            assert!(value["meta"]["versionId"].is_string(), "{line}");
            came_out.push(comparable(value).to_string());
        }
    }
    went_in.sort();
    came_out.sort();
    assert!(!went_in.is_empty());
    assert_eq!(came_out.len(), went_in.len(), "{exported}");
    assert!(
        came_out == went_in,
        "the exported resources differ from the imported ones"
    );
    assert!(
        exported.contains(&format!("exported {} resources", went_in.len())),
        "{exported}"
    );

    // And it can be searched, read and versioned through the CLI.
    let found = cli(
        &dev,
        base_port,
        Some(&pas),
        &[
            "record",
            "search",
            "--patient",
            &patient,
            "--type",
            "Immunization",
            "--page-size",
            "3",
        ],
    );
    let first_id = found
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().next())
        .expect("a record")
        .to_owned();
    assert!(found.lines().any(|l| l.ends_with("record(s)")), "{found}");
    let read = cli(
        &dev,
        base_port,
        Some(&pas),
        &[
            "record",
            "get",
            "--patient",
            &patient,
            "--record",
            &first_id,
        ],
    );
    assert!(read.contains("version:       1"), "{read}");
    let json = read.lines().last().expect("the resource").to_owned();
    let file = temp.path().join("updated.json");
    std::fs::write(&file, json.replace("\"completed\"", "\"entered-in-error\"")).expect("write");
    let updated = cli(
        &dev,
        base_port,
        Some(&pas),
        &[
            "record",
            "update",
            "--patient",
            &patient,
            "--record",
            &first_id,
            "--file",
            file.to_str().expect("path"),
            "--if-match",
            "1",
        ],
    );
    assert!(
        updated.contains("version:       2") && updated.contains("entered-in-error"),
        "{updated}"
    );
    let history = cli(
        &dev,
        base_port,
        Some(&pas),
        &[
            "record",
            "history",
            "--patient",
            &patient,
            "--record",
            &first_id,
        ],
    );
    assert!(
        history.contains("version:       2") && history.contains("version:       1"),
        "{history}"
    );

    // An A&E clinician with no relationship breaks glass, with a reason; their
    // privacy officer lists it.
    cli(
        &dev,
        base_port,
        Some(&admin),
        &["org", "create", "--ods", "RR8", "--name", "Test Hospital"],
    );
    let staff = |role: &str| {
        principal_token(
            &dev,
            base_port,
            &admin,
            &[
                "--kind", "staff", "--ods", "RR8", "--name", role, "--role", role,
            ],
        )
    };
    let (clinician, officer) = (staff("R8000"), staff("privacy-officer"));
    let emergency = cli(
        &dev,
        base_port,
        Some(&clinician),
        &[
            "record",
            "get",
            "--patient",
            &patient,
            "--record",
            &first_id,
            "--break-glass",
            "unconscious, no history available",
        ],
    );
    assert!(emergency.contains("version:       2"), "{emergency}");
    let mut listed = String::new();
    for _ in 0..200 {
        listed = cli(&dev, base_port, Some(&officer), &["audit", "break-glass"]);
        if listed
            .lines()
            .filter(|l| l.contains("EMERGENCY ACCESS"))
            .count()
            >= 2
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(
        listed
            .lines()
            .filter(|l| l.contains("EMERGENCY ACCESS") && l.contains(&patient))
            .count()
            >= 2,
        "the grant and the read are listed for the privacy officer:\n{listed}"
    );

    // Re-wrapping beside the running service: with one key, nothing to do,
    // and every version is looked at.
    let rewrap = cli(
        &dev,
        base_port,
        None,
        &[
            "records",
            "rewrap",
            "--data-dir",
            data_dir.to_str().expect("path"),
        ],
    );
    assert!(
        rewrap.contains("re-wrapped 0 of 6975 stored versions"),
        "{rewrap}"
    );

    // Bad lines are reported with their file and line, and the rest goes on.
    let bad_dir = temp.path().join("bad");
    std::fs::create_dir_all(&bad_dir).expect("dir");
    let patient_line = lines(&Path::new(SYNTHEA).join("Patient.000.ndjson"))[0].clone();
    let nested = format!(
        r#"{{"resourceType":"Condition","id":"deep","subject":{{"reference":"Patient/{source_patient}"}},"note":{}1{}}}"#,
        "[".repeat(80),
        "]".repeat(80)
    );
    let good = format!(
        r#"{{"resourceType":"Condition","id":"fine","subject":{{"reference":"Patient/{source_patient}"}},"code":{{"text":"x"}}}}"#
    );
    std::fs::write(bad_dir.join("Patient.ndjson"), format!("{patient_line}\n")).expect("write");
    std::fs::write(
        bad_dir.join("Condition.ndjson"),
        format!("{good}\n{{not json\n{nested}\n"),
    )
    .expect("write");
    let reported = cli(
        &dev,
        base_port,
        Some(&pas),
        &["import", bad_dir.to_str().expect("path"), "--ods", "A81001"],
    );
    assert!(
        reported.contains("imported 1 resources and 1 patients"),
        "{reported}"
    );
    assert!(
        reported.contains("not valid JSON (syntax error)  (e.g. Condition.ndjson:2)"),
        "{reported}"
    );
    assert!(
        reported.contains("Condition: refused: INVALID_ARGUMENT: resource_json")
            && reported.contains("Condition.ndjson:3"),
        "{reported}"
    );
}
