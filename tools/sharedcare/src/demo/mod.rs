//! `sharedcare demo`: the whole chain against a running `sharedcare dev`,
//! step by step. Two GP practices, a clinician at each, one patient
//! registered at the first; the first practice's clinician writes and reads
//! an Observation, the second's is refused by consent, and the patient's
//! access report shows both. Any step that does not behave as the platform
//! promises ends the demo with an error.

mod nhs;

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use sharedcare_proto::{
    audit::v1::{AccessReportLine, Action, Outcome},
    records::v1::Record,
};

use crate::output::out;
use crate::{
    bootstrap::{self, ADMIN_CLIENT_ID},
    commands::{
        access_report, care, org,
        patient::{self, GenderArg, RegisterArgs},
        principal::{self, CreatePrincipalArgs, KindArg},
        record, token,
    },
    connect::Services,
    failure::status_code,
};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The data dir `sharedcare dev` was started with (for bootstrap.toml).
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
}

/// The GP practice the patient is registered at.
const HOME_PRACTICE: (&str, &str) = ("A81001", "Demo Surgery (patient's GP practice)");
/// A practice with no relationship to the patient.
const OTHER_PRACTICE: (&str, &str) = ("B82002", "Other Demo Practice");
/// Clinical Practitioner Access Role.
const CLINICIAN_ROLE: &str = "R8000";
const STEPS: usize = 10;

/// Numbered narration.
struct Narrator(usize);

impl Narrator {
    fn step(&mut self, what: &str) {
        self.0 += 1;
        out!("\n[{}/{STEPS}] {what}", self.0);
    }
}

fn say(line: impl AsRef<str>) {
    out!("      {}", line.as_ref());
}

/// A clinician created for this run, with a token.
struct Clinician {
    ods: &'static str,
    principal_id: String,
    client_id: String,
    token: String,
}

pub async fn run(services: &Services, args: DemoArgs, base_port: u16) -> anyhow::Result<()> {
    let mut n = Narrator(0);
    let credentials = bootstrap::read(&args.data_dir.join(bootstrap::FILE_NAME))?;

    n.step("admin gets a token with the platform's admin client");
    let admin_token = token::issue(
        services,
        ADMIN_CLIENT_ID,
        &credentials.admin_secret,
        vec![],
        None,
    )
    .await
    .context("issuing the admin token")?
    .access_token;
    let admin = services.with_token(admin_token.clone());
    say(format!(
        "client id {ADMIN_CLIENT_ID} (secret from {})",
        credentials.path.display()
    ));
    say(format!("token {}…", preview(&admin_token)));

    n.step("admin adds two GP practices");
    for (ods, name) in [HOME_PRACTICE, OTHER_PRACTICE] {
        match org::create(&admin, ods, name).await {
            Ok(created) => say(format!("created {} \"{}\"", created.ods_code, created.name)),
            Err(e) if status_code(&e) == Some(tonic::Code::AlreadyExists) => {
                say(format!("{ods} already exists (an earlier run): skipped"));
            }
            Err(e) => return Err(e.context(format!("creating organisation {ods}"))),
        }
    }

    n.step("admin adds a clinician at each practice");
    let mut clinicians = Vec::new();
    for (ods, _) in [HOME_PRACTICE, OTHER_PRACTICE] {
        let created = principal::create(
            &admin,
            CreatePrincipalArgs {
                kind: KindArg::Staff,
                ods: ods.to_owned(),
                role: CLINICIAN_ROLE.to_owned(),
                name: format!("Dr Demo ({ods})"),
                scopes: vec![],
            },
        )
        .await
        .with_context(|| format!("creating a clinician at {ods}"))?;
        let principal = created.principal.unwrap_or_default();
        say(format!(
            "{ods}: principal {} (client id {}, role {CLINICIAN_ROLE})",
            principal.principal_id, principal.client_id
        ));
        clinicians.push((ods, principal, created.client_secret));
    }

    n.step("each clinician gets a token with their own credentials");
    let mut tokens = Vec::new();
    for (ods, principal, secret) in clinicians {
        let issued = token::issue(services, &principal.client_id, &secret, vec![], None)
            .await
            .with_context(|| format!("issuing a token for the clinician at {ods}"))?;
        say(format!("{ods}: token {}…", preview(&issued.access_token)));
        tokens.push(Clinician {
            ods,
            principal_id: principal.principal_id,
            client_id: principal.client_id,
            token: issued.access_token,
        });
    }
    let [home, other]: [Clinician; 2] = tokens
        .try_into()
        .map_err(|_| anyhow!("expected two clinicians"))?;

    n.step("admin registers a patient (NHS number from the test range)");
    let nhs_number = nhs::random_test_number();
    let registered = patient::register(
        &admin,
        RegisterArgs {
            nhs_number: nhs_number.clone(),
            given: vec!["Jane".into()],
            family: "Demo".into(),
            birth_date: "1980-02-29".into(),
            gender: Some(GenderArg::Female),
            postcode: "LS1 4AP".into(),
        },
    )
    .await
    .context("registering the patient")?;
    let patient_id = registered.patient.unwrap_or_default().patient_id;
    say(format!(
        "NHS number {nhs_number} → patient {patient_id} (created: {})",
        registered.created
    ));

    n.step(&format!(
        "consent records {} as the patient's registered GP practice",
        HOME_PRACTICE.0
    ));
    let relationship = care::record(
        &admin,
        care::CareRelationshipArgs {
            patient: patient_id.clone(),
            ods: HOME_PRACTICE.0.to_owned(),
            kind: care::KindArg::RegisteredGp,
        },
    )
    .await
    .context("recording the care relationship")?;
    say(format!(
        "relationship {} ({} ↔ patient)",
        relationship.relationship_id, relationship.organisation_ods_code
    ));

    n.step(&format!(
        "the {} clinician records a blood pressure Observation",
        home.ods
    ));
    let created = record::create(
        services,
        &home.token,
        &patient_id,
        observation(&patient_id),
        None,
        None,
    )
    .await
    .context("creating the Observation")?;
    if created.version != 1 || created.record_id.is_empty() {
        bail!(
            "a new record should be version 1 with an id; got version {} id {:?}",
            created.version,
            created.record_id
        );
    }
    show_record(&created);

    n.step(&format!("the {} clinician reads it back", home.ods));
    let read = record::get(services, &home.token, &patient_id, &created.record_id, None)
        .await
        .context("reading the Observation back")?;
    if read.record_id != created.record_id || read.resource_json != created.resource_json {
        bail!("the record read back is not the one stored");
    }
    say(format!(
        "read record {} version {}: same as stored",
        read.record_id, read.version
    ));

    n.step(&format!(
        "the {} clinician (no care relationship) tries to read it",
        other.ods
    ));
    match record::get(
        services,
        &other.token,
        &patient_id,
        &created.record_id,
        None,
    )
    .await
    {
        Ok(_) => bail!(
            "{} read the record without a care relationship: consent should have denied it",
            other.ods
        ),
        Err(e) if status_code(&e) == Some(tonic::Code::PermissionDenied) => {
            say(format!("denied, as it should be: {e}"));
        }
        Err(e) => {
            return Err(e.context(format!(
                "expected PERMISSION_DENIED for {}, got another error",
                other.ods
            )));
        }
    }

    n.step("admin reads the patient's access report (audit)");
    let lines = access_report::fetch(services, &admin_token, &patient_id)
        .await
        .context("fetching the access report")?;
    out!();
    access_report::print(&lines);
    out!();
    for (who, outcome) in [(&home, Outcome::Success), (&other, Outcome::Denied)] {
        if !lines.iter().any(|l| is_read_by(l, who, outcome)) {
            bail!(
                "the access report has no {} READ by the {} clinician ({})",
                crate::labels::outcome(outcome as i32),
                who.ods,
                who.client_id
            );
        }
    }
    say(format!(
        "the access report shows the {} read and the {} denial",
        home.ods, other.ods
    ));

    out!(
        "\ndemo complete: consent let {} read the record and denied {}; audit recorded both.",
        home.ods,
        other.ods
    );
    let sharedcare = if base_port == crate::ports::DEFAULT_BASE_PORT {
        "sharedcare".to_owned()
    } else {
        format!("sharedcare --base-port {base_port}")
    };
    out!("Try it yourself:");
    out!(
        "  export SHAREDCARE_TOKEN=$({sharedcare} token --client-id {ADMIN_CLIENT_ID} --client-secret <admin secret>)"
    );
    out!("  {sharedcare} access-report --patient {patient_id}");
    Ok(())
}

fn is_read_by(line: &AccessReportLine, who: &Clinician, outcome: Outcome) -> bool {
    let actor = line.actor.clone().unwrap_or_default();
    line.action == Action::Read as i32
        && line.outcome == outcome as i32
        && actor.principal_id == who.principal_id
        && actor.organisation_ods_code == who.ods
}

fn show_record(record: &Record) {
    say(format!(
        "stored {} {} version {} (category {})",
        record.resource_type,
        record.record_id,
        record.version,
        crate::labels::category(record.category)
    ));
    for line in record::pretty_json(&record.resource_json).lines() {
        say(line);
    }
}

/// The start of a token: enough to see it is there, not enough to use it.
fn preview(token: &str) -> &str {
    token.get(..16).unwrap_or(token)
}

/// A systolic blood pressure reading about the patient.
fn observation(patient_id: &str) -> String {
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
