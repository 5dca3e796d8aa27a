//! The real binary end to end: `sharedcare dev` on a temp data dir, then
//! `sharedcare demo` against it, then SIGTERM; then the same data dir as an
//! older version left it (a bootstrap file without the consent service's
//! client) started again, and the demo run once more. It picks four
//! consecutive free ports with `--base-port` (see `support`), so a
//! developer's own `sharedcare dev` on 50051–50054 is left alone.

mod support;

use std::{path::Path, process::Command};

use support::{BIN, CLIENT_VARS, Dev, admin_token, audit_verify, free_base_port, principal_token};

/// Runs `sharedcare demo` against dev; its standard output, after checking
/// that it succeeded.
fn run_demo(dev: &Dev, data_dir: &Path, base_port: u16) -> String {
    let mut demo = Command::new(BIN);
    demo.args(["--base-port", &base_port.to_string(), "demo", "--data-dir"])
        .arg(data_dir);
    for var in CLIENT_VARS {
        demo.env_remove(var);
    }
    let demo = demo.output().expect("run sharedcare demo");
    let stdout = String::from_utf8_lossy(&demo.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert!(
        demo.status.success(),
        "demo failed ({})\n--- demo stdout ---\n{stdout}\n--- demo stderr ---\n{stderr}\n{}",
        demo.status,
        dev.output()
    );
    stdout
}

/// The README's audit check: admin creates a platform auditor, who
/// verifies the log the demo wrote with the verifier key dev keeps, and
/// the demo patient's access report against it.
fn verify_the_audit_log(
    dev: &Dev,
    data_dir: &Path,
    base_port: u16,
    state: &Path,
    patient: &str,
) -> String {
    let admin = admin_token(dev, data_dir, base_port);
    let auditor = principal_token(dev, base_port, &admin, support::PLATFORM_AUDITOR);
    let verified = audit_verify(dev, data_dir, base_port, &auditor, state, &["--entry", "1"]);
    // The auditor checks the demo patient's report line by line against the log.
    let vkey = data_dir.join("audit-log.vkey");
    let report = support::cli(
        dev,
        base_port,
        Some(&auditor),
        &[
            "access-report",
            "--patient",
            patient,
            "--verify",
            "--public-key-file",
            vkey.to_str().expect("path"),
        ],
    );
    assert!(
        report.contains("verified: each of the") && report.contains("looked at an Observation"),
        "{report}"
    );
    verified
}

/// What the demo shows: the trust model at work, and the patient's own
/// access report recording it.
fn assert_demo_shows_the_trust_model(stdout: &str) {
    let refusals: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("PERMISSION_DENIED"))
        .collect();
    for (what, reason) in [
        (
            "a clinician without assert_relationships asserting a relationship",
            "assert_relationships",
        ),
        (
            "another practice's system asserting one for A81001",
            "NOT_OWN_ORGANISATION",
        ),
        (
            "B82002 reading without a relationship",
            "NO_CARE_RELATIONSHIP",
        ),
    ] {
        assert!(
            refusals.iter().any(|l| l.contains(reason)),
            "the demo shows {what} refused ({reason}):\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("the Condition: withheld") && l.contains("NOT_FOUND")),
        "the read against the patient's directive finds nothing, as if it were absent:\n{stdout}"
    );
    assert!(
        stdout.contains("as SEXUAL_HEALTH"),
        "the HIV Condition labelled general is stored as sexual health:\n{stdout}"
    );
    assert!(
        stdout.contains("the patient reads their own access report"),
        "the patient reads the access report:\n{stdout}"
    );
    // The patient's report, in words: who (name, role, organisation), what,
    // why and the outcome with its reason.
    let report_rows = |what: &str| -> Vec<&str> {
        stdout
            .lines()
            .filter(|l| l.contains(what) && l.starts_with("20"))
            .collect()
    };
    let reads = report_rows("looked at an Observation for the patient's care");
    assert!(
        reads
            .iter()
            .any(|l| l.contains(", Clinical Practitioner, at ")
                && l.contains("(A81001)")
                && l.contains("allowed: they are caring for the patient")),
        "the report has A81001's read in words:\n{stdout}"
    );
    assert!(
        report_rows("tried to look at an Observation")
            .iter()
            .any(|l| l.contains("(B82002)")
                && l.contains("refused: they are not caring for the patient")),
        "the report has B82002's denial:\n{stdout}"
    );
    assert!(
        report_rows("tried to look at a Condition")
            .iter()
            .any(|l| l.contains("refused: the patient has said no")),
        "the report has the denial the directive caused:\n{stdout}"
    );
    assert!(
        report_rows("added a CareRelationship")
            .iter()
            .any(|l| l.contains("(A81001)") && l.contains("allowed")),
        "the report names who asserted the relationship:\n{stdout}"
    );
    assert!(
        report_rows("You added a Directive")
            .iter()
            .any(|l| l.contains("allowed")),
        "the report has the patient's directive:\n{stdout}"
    );
}

/// The demo's patient, from the command it suggests at its end.
fn demo_patient(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().split("access-report --patient ").nth(1))
        .expect("the demo names its patient")
        .trim()
        .to_owned()
}

/// Rewrites the bootstrap file as an older `sharedcare dev` wrote it:
/// without the consent service's client. Returns its text.
fn make_bootstrap_file_older(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read bootstrap file");
    let consent = text
        .find("[[principals]]\nclient_id = \"consent\"")
        .expect("a consent principal");
    std::fs::write(path, &text[..consent]).expect("write bootstrap file");
    text[..consent].to_owned()
}

#[test]
fn dev_serves_the_demo_and_stops_on_sigterm() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let base_port = free_base_port();

    let mut dev = Dev::start(&data_dir, temp.path(), base_port);
    dev.wait_until_serving(base_port);

    let bootstrap = data_dir.join("bootstrap.toml");
    assert!(bootstrap.is_file(), "dev wrote {}", bootstrap.display());
    let written = std::fs::read_to_string(&bootstrap).expect("bootstrap file");
    for client_id in ["admin", "records", "consent"] {
        assert!(
            written.contains(&format!("client_id = \"{client_id}\"")),
            "the bootstrap file has the {client_id} client:\n{written}"
        );
    }

    let stdout = run_demo(&dev, &data_dir, base_port);
    assert_demo_shows_the_trust_model(&stdout);

    let state = temp.path().join("audit-verify.state");
    let verified = verify_the_audit_log(&dev, &data_dir, base_port, &state, &demo_patient(&stdout));
    assert!(verified.contains("audit log verified"), "{verified}");
    assert!(verified.contains("entry 1 is included"), "{verified}");
    assert!(
        verified.contains("no head was verified before"),
        "{verified}"
    );

    let banner = std::fs::read_to_string(temp.path().join("dev.stdout")).expect("dev stdout");
    assert!(
        banner.contains("all four services are serving")
            && banner.contains(&format!("http://127.0.0.1:{}", base_port + 3))
            && banner.contains("export SHAREDCARE_TOKEN=$("),
        "dev says where it listens and how to get a token\n{}",
        dev.output()
    );

    let status = dev.terminate();
    assert!(
        status.success(),
        "dev stops cleanly on SIGTERM ({status})\n{}",
        dev.output()
    );

    // The data dir as an older version left it: dev completes the
    // bootstrap file, starts, and the demo runs again (its organisations
    // now exist already).
    let older = make_bootstrap_file_older(&bootstrap);
    let mut dev = Dev::start(&data_dir, temp.path(), base_port);
    dev.wait_until_serving(base_port);
    let completed = std::fs::read_to_string(&bootstrap).expect("bootstrap file");
    assert!(
        completed.contains("client_id = \"consent\"") && completed.starts_with(&older),
        "the consent client is appended to the older file:\n{completed}"
    );
    let stdout = run_demo(&dev, &data_dir, base_port);
    assert!(
        stdout.contains("already exists (an earlier run)"),
        "{stdout}"
    );
    assert_demo_shows_the_trust_model(&stdout);
    // Across the restart the log kept growing from the head verified before.
    let verified = verify_the_audit_log(&dev, &data_dir, base_port, &state, &demo_patient(&stdout));
    assert!(
        verified.contains("it extends the head verified before"),
        "{verified}"
    );
    let banner = std::fs::read_to_string(temp.path().join("dev.stdout")).expect("dev stdout");
    assert!(
        banner.contains("added the consent client(s) it lacked"),
        "dev says it completed the bootstrap file\n{}",
        dev.output()
    );
    let status = dev.terminate();
    assert!(
        status.success(),
        "dev stops cleanly on SIGTERM ({status})\n{}",
        dev.output()
    );
}
