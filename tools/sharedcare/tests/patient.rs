//! `sharedcare patient register / trace / not-same` against a real
//! `sharedcare dev`: find-or-create's outcomes in words, a fuzzy trace by a
//! staff member in dev's `patient-tracer` role, an ambiguous registration
//! shown with its candidates and confirmed as a new patient, and the
//! "not the same person" link that confirmation recorded.

mod support;

use std::process::Command;

use support::{BIN, CLIENT_VARS, Dev, admin_token, cli, field, free_base_port, principal_token};

/// Runs the CLI expecting it to fail; its standard output and error.
fn cli_fails(dev: &Dev, base_port: u16, token: &str, args: &[&str]) -> (String, String) {
    let mut command = Command::new(BIN);
    command
        .args(["--base-port", &base_port.to_string()])
        .args(args)
        .env("SHAREDCARE_TOKEN", token);
    for var in CLIENT_VARS {
        if *var != "SHAREDCARE_TOKEN" {
            command.env_remove(var);
        }
    }
    let output = command.output().expect("run sharedcare");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "sharedcare {args:?} should fail\n{stdout}\n{stderr}\n{}",
        dev.output()
    );
    (stdout, stderr)
}

const KATHERINE: &[&str] = &[
    "--given",
    "Katherine",
    "--family",
    "Smith",
    "--birth-date",
    "1980-04-03",
    "--gender",
    "female",
];

#[test]
fn register_trace_and_not_same_against_dev() {
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
        &[
            "org",
            "create",
            "--ods",
            "T10001",
            "--name",
            "Trace Surgery",
        ],
    );
    let pas = principal_token(
        &dev,
        base_port,
        &admin,
        &[
            "--kind",
            "application",
            "--ods",
            "T10001",
            "--name",
            "Trace Surgery PAS",
            "--scope",
            "patients.read",
            "--scope",
            "patients.write",
        ],
    );
    let tracer = principal_token(
        &dev,
        base_port,
        &admin,
        &[
            "--kind",
            "staff",
            "--ods",
            "T10001",
            "--role",
            "patient-tracer",
            "--name",
            "A Tracer",
        ],
    );
    let register = |token: &str, extra: &[&str]| {
        cli(
            &dev,
            base_port,
            Some(token),
            &[&["patient", "register"], KATHERINE, extra].concat(),
        )
    };

    // Created; the same NHS number again; the same details without one.
    let created = register(
        &pas,
        &["--nhs-number", "943 476 5919", "--postcode", "LS1 4AP"],
    );
    assert_eq!(field(&created, "outcome:"), "created", "{created}");
    let katherine = field(&created, "patient_id:").to_owned();
    let again = register(
        &pas,
        &["--nhs-number", "9434765919", "--postcode", "LS1 4AP"],
    );
    assert_eq!(field(&again, "outcome:"), "matched by NHS number");
    assert_eq!(field(&again, "patient_id:"), katherine);
    let by_details = register(&pas, &["--postcode", "LS1 4AP"]);
    assert_eq!(
        field(&by_details, "outcome:"),
        "matched by demographics",
        "{by_details}"
    );
    assert_eq!(field(&by_details, "patient_id:"), katherine);
    assert!(
        field(&by_details, "fields:").contains("family="),
        "{by_details}"
    );

    // Heard as "Kate Smtih": found, with how each field compared.
    let traced = cli(
        &dev,
        base_port,
        Some(&tracer),
        &[
            "patient",
            "trace",
            "--given",
            "Kate",
            "--family",
            "Smtih",
            "--birth-date",
            "1980-04-03",
            "--max",
            "5",
        ],
    );
    let row = traced
        .lines()
        .find(|l| l.starts_with(&katherine))
        .unwrap_or_else(|| panic!("Katherine is a candidate:\n{traced}"));
    assert!(row.contains("given~") && row.contains("dob="), "{traced}");
    assert!(traced.starts_with("patient_id"), "a header: {traced}");

    // Another number, the same details: a person chooses.
    let (stdout, stderr) = cli_fails(
        &dev,
        base_port,
        &tracer,
        &[
            &["patient", "register"],
            KATHERINE,
            &["--nhs-number", "9990000018"],
        ]
        .concat(),
    );
    assert_eq!(field(&stdout, "outcome:"), "ambiguous", "{stdout}");
    assert!(
        stdout.contains(&katherine),
        "the candidate is shown: {stdout}"
    );
    assert!(stderr.contains("--confirm-new"), "{stderr}");
    let confirmed = register(&tracer, &["--nhs-number", "9990000018", "--confirm-new"]);
    assert_eq!(field(&confirmed, "outcome:"), "created", "{confirmed}");
    let other = field(&confirmed, "patient_id:").to_owned();

    // Confirming recorded that the two are not the same person: neither
    // is the other's possible duplicate, and marking it again adds nothing.
    let duplicates = cli(
        &dev,
        base_port,
        Some(&tracer),
        &["patient", "trace", "--duplicates-of", &other],
    );
    assert!(!duplicates.contains(&katherine), "{duplicates}");
    let marked = cli(
        &dev,
        base_port,
        Some(&tracer),
        &[
            "patient",
            "not-same",
            "--id",
            &katherine,
            "--other",
            &other,
            "--reason",
            "different NHS numbers, checked",
        ],
    );
    assert_eq!(field(&marked, "created:"), "false", "{marked}");

    let status = dev.terminate();
    assert!(status.success(), "dev stops cleanly ({status})");
}
