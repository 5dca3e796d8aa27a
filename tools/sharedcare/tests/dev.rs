//! The real binary end to end: `sharedcare dev` on a temp data dir, then
//! `sharedcare demo` against it (the whole story, every step's outcome
//! checked in what it prints), then SIGTERM; then the same data dir as an
//! older version left it (a bootstrap file without the consent service's
//! client) started again, and the demo run once more. `sharedcare demo
//! --step` waits for Enter between steps. Each test picks four consecutive
//! free ports with `--base-port` (see `support`), so a developer's own
//! `sharedcare dev` on 50051–50054 is left alone.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use support::{BIN, CLIENT_VARS, Dev, admin_token, audit_verify, free_base_port, principal_token};

/// `sharedcare demo` against dev's ports and data dir, with none of the
/// developer's client variables.
fn demo_command(base_port: u16, data_dir: &Path) -> Command {
    let mut demo = Command::new(BIN);
    demo.args(["--base-port", &base_port.to_string(), "demo", "--data-dir"])
        .arg(data_dir);
    for var in CLIENT_VARS {
        demo.env_remove(var);
    }
    demo.env_remove("SHAREDCARE_ADMIN_SECRET")
        .env_remove("SHAREDCARE_AUDIT_VERIFIER_KEY");
    demo
}

/// Runs `sharedcare demo` against dev; its standard output, after checking
/// that it succeeded.
fn run_demo(dev: &Dev, data_dir: &Path, base_port: u16) -> String {
    let demo = demo_command(base_port, data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run sharedcare demo");
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

/// The story's steps, as the demo heads them.
const STEPS: [&str; 11] = [
    "The administrator sets the scene: five organisations and the people at them",
    "Jane registers once, at her GP practice",
    "At the hospital she is registered again, with a typo, and found: not a second Jane",
    "Her GP writes her record: one entry is sexual health",
    "The hospital asserts its episode of care and reads her record",
    "Jane objects to sharing sexual-health data with the hospital",
    "A care home sees only her general record and social care",
    "Jane opts out of research, and a researcher is refused",
    "An A&E clinician with no relationship breaks the glass, and is flagged",
    "Jane reads who has looked at her record, in plain words",
    "An auditor verifies the log's proofs",
];

/// What step `n` (from 1) printed: from its heading to the next one.
fn step(stdout: &str, n: usize) -> &str {
    let heading = format!("\nStep {n} — {}\n", STEPS[n - 1]);
    let start = stdout
        .find(&heading)
        .unwrap_or_else(|| panic!("the demo has step {n} ({heading:?}):\n{stdout}"));
    let rest = &stdout[start + heading.len()..];
    let end = rest.find("\nStep ").unwrap_or(rest.len());
    &rest[..end]
}

/// The answer printed right after the call line that contains `call`.
fn answer_to<'a>(section: &'a str, call: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = section.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0].trim_start().starts_with('→') && w[0].contains(call))
        .map(|w| w[1].trim())
        .collect()
}

/// What the demo tells: every step, in order, and the outcomes the story
/// turns on, refusals included.
fn assert_demo_tells_the_story(stdout: &str) {
    let mut at = 0;
    for (i, title) in STEPS.iter().enumerate() {
        let heading = format!("Step {} — {title}", i + 1);
        let found = stdout[at..]
            .find(&heading)
            .unwrap_or_else(|| panic!("step {} comes in order: {heading}\n{stdout}", i + 1));
        at += found + heading.len();
    }

    let registered = answer_to(step(stdout, 2), "identity.RegisterPatient");
    let patient = demo_patient(stdout);
    assert_eq!(
        registered,
        [format!("← created: patient {patient}")],
        "the GP practice registers a new patient:\n{stdout}"
    );
    assert!(
        answer_to(step(stdout, 2), "consent.ListCareRelationships")
            .iter()
            .any(|a| a.starts_with("← permitted: 1 relationship — A81001 REGISTERED_GP")),
        "the registration made the practice her registered GP in consent:\n{stdout}"
    );
    let found = answer_to(step(stdout, 3), "identity.RegisterPatient");
    assert!(
        found.len() == 1
            && found[0].starts_with(&format!(
                "← found: patient {patient}, the same person (MATCHED_DEMOGRAPHICS"
            ))
            && found[0].contains("given~similar"),
        "the hospital finds the same patient despite the typo:\n{stdout}"
    );
    assert!(
        step(stdout, 3).contains("Jnae"),
        "the narration says which typo:\n{stdout}"
    );
    let written = answer_to(step(stdout, 4), "records.CreateRecord");
    assert!(
        written.len() == 3
            && written[0].ends_with("category GENERAL")
            && written[1].ends_with("category SEXUAL_HEALTH")
            && written[2].ends_with("category SOCIAL_CARE"),
        "the GP's entries are filed by their codes, one as sexual health:\n{stdout}"
    );
    assert_eq!(
        answer_to(step(stdout, 5), "records.Search by Dr Tom Reid"),
        [
            "← permitted: 3 records — Observation (GENERAL), ServiceRequest (SOCIAL_CARE), \
          Condition (SEXUAL_HEALTH)"
        ],
        "the hospital with an episode reads the whole record:\n{stdout}"
    );

    let objection = step(stdout, 6);
    assert_eq!(
        answer_to(objection, "records.GetRecord by Dr Tom Reid"),
        ["← refused: NOT_FOUND — no such record for this patient"],
        "after her objection the hospital no longer sees the sexual-health record:\n{stdout}"
    );
    assert_eq!(
        answer_to(objection, "records.Search by Dr Tom Reid"),
        ["← permitted: 2 records — Observation (GENERAL), ServiceRequest (SOCIAL_CARE)"],
        "the rest of her record is still shared with the hospital:\n{stdout}"
    );
    assert_eq!(
        answer_to(objection, "records.GetRecord by Dr Asha Patel"),
        ["← permitted: Condition SEXUAL_HEALTH"],
        "her GP still reads it:\n{stdout}"
    );

    let care_home = step(stdout, 7);
    assert_eq!(
        answer_to(care_home, "records.Search by Nurse Grace Mensah"),
        ["← permitted: 2 records — Observation (GENERAL), ServiceRequest (SOCIAL_CARE)"],
        "the care home sees the general record and social care only:\n{stdout}"
    );
    assert_eq!(
        answer_to(care_home, "records.GetRecord by Nurse Grace Mensah"),
        ["← refused: NOT_FOUND — no such record for this patient"],
        "the care home is refused the sexual-health record:\n{stdout}"
    );

    let research = answer_to(
        step(stdout, 8),
        "records.Search by RES01's research platform",
    );
    assert!(
        research.len() == 2
            && research[0].starts_with("← permitted: 3 records")
            && research[1]
                .starts_with("← refused: PERMISSION_DENIED — consent denied: NATIONAL_OPT_OUT"),
        "the researcher reads with her consent, then is refused after her opt-out:\n{stdout}"
    );

    let emergency = answer_to(step(stdout, 9), "records.GetRecord by Dr Sam Lee");
    assert!(
        emergency.len() == 2
            && emergency[0].starts_with("← refused: PERMISSION_DENIED")
            && emergency[0].contains("NO_CARE_RELATIONSHIP")
            && emergency[1] == "← permitted (break-glass): Observation GENERAL",
        "A&E is refused without a relationship, then breaks the glass:\n{stdout}"
    );
    assert!(
        step(stdout, 9)
            .lines()
            .any(|l| l.contains("EMERGENCY ACCESS (break-glass): Dr Sam Lee")
                && l.contains("looked at an Observation")),
        "the break-glass read is flagged to the privacy officer:\n{stdout}"
    );

    // Her report, in words: who (name, role, organisation), what, why and
    // the outcome with its reason.
    let report: Vec<&str> = step(stdout, 10)
        .lines()
        .filter(|l| l.starts_with("20"))
        .collect();
    for (what, wanted) in [
        (
            "the hospital's refusal after her objection",
            &[
                "Dr Tom Reid, Clinical Practitioner, at ",
                "(RR8) tried to look at a Condition",
                "refused: the patient has said no",
            ][..],
        ),
        (
            "the care home's refusal",
            &[
                "(VCH01) tried to look at a Condition",
                "refused: their kind of care does not cover",
            ],
        ),
        (
            "the researcher's refusal",
            &[
                "(RES01) tried to search the record for research",
                "refused: the patient has registered a National Data Opt-out",
            ],
        ),
        (
            "A&E's break-glass read, flagged",
            &[
                "EMERGENCY ACCESS (break-glass): Dr Sam Lee",
                "looked at an Observation",
                "allowed: they used emergency access",
            ],
        ),
        (
            "the GP's writes",
            &[
                "Dr Asha Patel, Clinical Practitioner, at ",
                "(A81001) added a Condition",
                "allowed: they are caring for the patient",
            ],
        ),
        ("her own directive", &["You added a Directive — allowed"]),
    ] {
        assert!(
            report.iter().any(|l| wanted.iter().all(|w| l.contains(w))),
            "her access report has {what}:\n{stdout}"
        );
    }

    let audit = step(stdout, 11);
    assert!(
        audit.contains("← verified: the tree head of ")
            && audit.contains("every entry was re-hashed and the tree re-derived")
            && audit.contains("is in the signed tree (its inclusion proof checks out)")
            && audit.contains("← verified: each of the "),
        "the auditor verifies the log's proofs:\n{stdout}"
    );
    assert!(stdout.contains("\nThe end (11 steps)."), "{stdout}");
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
    assert_demo_tells_the_story(&stdout);

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
        stdout.contains("A81001 is there already (an earlier run)"),
        "{stdout}"
    );
    assert_demo_tells_the_story(&stdout);
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

/// The next line the demo prints, within `within`.
fn next_line(lines: &mpsc::Receiver<String>, within: Duration, seen: &str) -> String {
    lines
        .recv_timeout(within)
        .unwrap_or_else(|e| panic!("the demo printed no further line ({e}):\n{seen}"))
}

#[test]
fn demo_step_waits_for_enter_between_steps_and_a_wrong_secret_fails() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let base_port = free_base_port();
    let mut dev = Dev::start(&data_dir, temp.path(), base_port);
    dev.wait_until_serving(base_port);

    // A story that cannot start says why and fails.
    let failed = demo_command(base_port, &data_dir)
        .args(["--admin-secret", "not-the-admin-secret"])
        .stdin(Stdio::null())
        .output()
        .expect("run sharedcare demo");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success()
            && stderr
                .contains("error: the story went wrong: admin's token should have been permitted"),
        "a wrong admin secret ends the demo with an error ({}):\n{stderr}",
        failed.status
    );

    let mut demo = demo_command(base_port, &data_dir)
        .arg("--step")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sharedcare demo --step");
    let out = demo.stdout.take().expect("stdout");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let prompt = "(press Enter for step 2 of 11)";
    loop {
        let line = next_line(
            &lines,
            deadline.saturating_duration_since(Instant::now()),
            &seen,
        );
        seen.push_str(&line);
        seen.push('\n');
        if line == prompt {
            break;
        }
    }
    assert!(
        seen.contains("--step: the demo waits for Enter after each step.")
            && seen.contains(&format!("Step 1 — {}", STEPS[0])),
        "{seen}"
    );
    // It waits: nothing more until Enter.
    if let Ok(line) = lines.recv_timeout(Duration::from_millis(700)) {
        panic!("the demo went on without Enter, printing {line:?}:\n{seen}");
    }
    let mut stdin = demo.stdin.take().expect("stdin");
    writeln!(stdin).expect("press Enter");
    let line = next_line(&lines, Duration::from_secs(60), &seen);
    let line = if line.is_empty() {
        next_line(&lines, Duration::from_secs(60), &seen)
    } else {
        line
    };
    assert_eq!(line, format!("Step 2 — {}", STEPS[1]), "{seen}");
    seen.push_str(&line);
    seen.push('\n');
    // The rest: Enter for each step, then end of input.
    for _ in 2..STEPS.len() {
        writeln!(stdin).expect("press Enter");
    }
    drop(stdin);
    for line in lines.iter() {
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = demo.wait().expect("demo exits");
    let mut stderr = String::new();
    if let Some(mut err) = demo.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        status.success(),
        "demo --step failed ({status})\n{seen}\n--- stderr ---\n{stderr}\n{}",
        dev.output()
    );
    for n in 3..=STEPS.len() {
        assert!(
            seen.contains(&format!("(press Enter for step {n} of 11)")),
            "the demo pauses before step {n}:\n{seen}"
        );
    }
    assert_demo_tells_the_story(&seen);

    let status = dev.terminate();
    assert!(
        status.success(),
        "dev stops cleanly ({status})\n{}",
        dev.output()
    );
}

/// dev configured from the shell as any service is: `--database-url` puts
/// all four on PostgreSQL (one database, each service's own tables), and
/// the whole story runs on it; nothing is written to SQLite files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_the_demo_on_postgresql_from_a_database_url() {
    let Some(database) = sharedcare_kit::testing::TestDatabase::postgres("dev on PostgreSQL").await
    else {
        return;
    };
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let base_port = free_base_port();
    let mut dev = Dev::start_in(
        &data_dir,
        temp.path(),
        base_port,
        "warn",
        &["--database-url", database.url()],
        &[],
    );
    // dev's own health polling runs its own runtime.
    tokio::task::block_in_place(|| dev.wait_until_serving(base_port));
    let stdout = tokio::task::block_in_place(|| run_demo(&dev, &data_dir, base_port));
    assert_demo_tells_the_story(&stdout);
    let status = tokio::task::block_in_place(|| dev.terminate());
    assert!(status.success(), "{status}\n{}", dev.output());

    let stored: Vec<String> = std::fs::read_dir(&data_dir)
        .expect("data dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".db"))
        .collect();
    for service in ["identity", "consent", "records", "audit"] {
        assert!(
            !stored.contains(&format!("{service}.db")),
            "{service} wrote SQLite although told PostgreSQL: {stored:?}"
        );
    }
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(database.url())
        .await
        .expect("connect");
    for table in [
        "identity_patients",
        "consent_care_relationships",
        "records_resource_versions",
        "audit_entries",
    ] {
        let found = db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT count(*) AS n FROM {table}"),
            ))
            .await;
        assert!(found.is_ok(), "{table} in PostgreSQL: {found:?}");
    }
    db.close().await.ok();
    database.cleanup().await;
}
