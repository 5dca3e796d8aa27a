//! `sharedcare demo`: the whole chain against a running `sharedcare dev`,
//! step by step, the way the trust model has it. admin (who sees no
//! clinical data) sets up two GP practices, each with its patient
//! administration system (PAS) and a clinician. A81001's PAS registers a
//! patient and asserts that it is their registered GP; the clinician may
//! not assert a relationship, nor may B82002's system assert one for
//! A81001. The A81001 clinician writes and reads an Observation; B82002's
//! is refused. A Condition sent as general is classified as sexual health by
//! its code; the patient, signed in for themselves, refuses sexual-health
//! sharing with A81001, and the clinician's next read of it is refused. The
//! patient then reads their own access report. Any step that does not behave
//! as the platform promises ends the demo with an error.

pub(crate) mod nhs;

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use sharedcare_proto::{
    audit::v1::{AccessReportLine, Action, Outcome},
    common::v1::RecordCategory,
    records::v1::Record,
};

use crate::output::out;
use crate::{
    bootstrap::{self, ADMIN_CLIENT_ID},
    commands::{
        access_report, care,
        directive::{self, EffectArg},
        org,
        patient::{self, GenderArg, RegisterArgs},
        principal::{self, CreatePrincipalArgs, KindArg},
        record, token,
    },
    connect::Services,
    failure::status_code,
    labels::{self, CategoryArg},
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
/// Clinical Practitioner Access Role: may record directives on a patient's
/// behalf and refer, but not assert relationships (identity's role map).
const CLINICIAN_ROLE: &str = "R8000";
/// What a practice's PAS is created with: it registers patients and asserts
/// its own organisation's care relationships.
const PAS_SCOPES: [&str; 6] = [
    "patients.read",
    "patients.write",
    "records.read",
    "records.write",
    "consent.read",
    "consent.write",
];
const STEPS: usize = 13;

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

/// A principal created for this run, and services calling with its token.
struct Actor {
    ods: &'static str,
    principal_id: String,
    client_id: String,
    services: Services,
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
    say("admin administers organisations and principals; it reads no clinical data");

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

    n.step("admin adds each practice's PAS (an application with explicit scopes)");
    let mut systems = Vec::new();
    for (ods, _) in [HOME_PRACTICE, OTHER_PRACTICE] {
        let pas = create(
            services,
            &admin,
            ods,
            CreatePrincipalArgs {
                kind: KindArg::Application,
                ods: ods.to_owned(),
                role: String::new(),
                name: format!("Demo PAS ({ods})"),
                patient: String::new(),
                scopes: PAS_SCOPES.map(str::to_owned).to_vec(),
                purposes: vec![],
            },
        )
        .await
        .with_context(|| format!("creating the PAS at {ods}"))?;
        say(format!(
            "{ods}: PAS {} (client id {}; scopes {})",
            pas.principal_id,
            pas.client_id,
            PAS_SCOPES.join(" ")
        ));
        systems.push(pas);
    }
    let [home_pas, other_pas]: [Actor; 2] = systems
        .try_into()
        .map_err(|_| anyhow!("expected two systems"))?;

    n.step(&format!(
        "admin adds a clinician ({CLINICIAN_ROLE}) at each practice"
    ));
    let mut clinicians = Vec::new();
    for (ods, _) in [HOME_PRACTICE, OTHER_PRACTICE] {
        let clinician = create(
            services,
            &admin,
            ods,
            CreatePrincipalArgs {
                kind: KindArg::Staff,
                ods: ods.to_owned(),
                role: CLINICIAN_ROLE.to_owned(),
                name: format!("Dr Demo ({ods})"),
                patient: String::new(),
                scopes: vec![],
                purposes: vec![],
            },
        )
        .await
        .with_context(|| format!("creating a clinician at {ods}"))?;
        say(format!(
            "{ods}: clinician {} (client id {}, role {CLINICIAN_ROLE})",
            clinician.principal_id, clinician.client_id
        ));
        clinicians.push(clinician);
    }
    let [home, other]: [Actor; 2] = clinicians
        .try_into()
        .map_err(|_| anyhow!("expected two clinicians"))?;

    n.step(&format!(
        "{}'s PAS registers a patient (NHS number from the test range)",
        home_pas.ods
    ));
    let nhs_number = nhs::random_test_number();
    let registered = patient::register(
        &home_pas.services,
        RegisterArgs {
            nhs_number: nhs_number.clone(),
            given: vec!["Jane".into()],
            family: fresh_family_name(),
            birth_date: "1980-02-29".into(),
            gender: Some(GenderArg::Female),
            postcode: "LS1 4AP".into(),
            confirm_new: false,
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
        "{}'s PAS asserts that {} is the patient's registered GP practice",
        home_pas.ods, HOME_PRACTICE.0
    ));
    let assert_home = || care::CareRelationshipArgs {
        patient: patient_id.clone(),
        ods: HOME_PRACTICE.0.to_owned(),
        kind: care::KindArg::RegisteredGp,
        staff: String::new(),
        team: String::new(),
    };
    let relationship = care::record(&home_pas.services, assert_home())
        .await
        .context("recording the care relationship")?;
    say(format!(
        "relationship {} ({} ↔ patient, asserted by {})",
        relationship.relationship_id, relationship.organisation_ods_code, relationship.recorded_by
    ));

    n.step("nobody else may assert that relationship");
    let refused = expect_denied(
        care::record(&home.services, assert_home()).await,
        &format!("the {} clinician asserting a relationship", home.ods),
    )?;
    say(format!(
        "the {} clinician ({CLINICIAN_ROLE} cannot assert relationships): refused, as it should be: {refused}",
        home.ods
    ));
    let refused = expect_denied(
        care::record(&other_pas.services, assert_home()).await,
        &format!(
            "{}'s PAS asserting a relationship for {}",
            other_pas.ods, HOME_PRACTICE.0
        ),
    )?;
    say(format!(
        "{}'s PAS asserting one for {}: refused, as it should be: {refused}",
        other_pas.ods, HOME_PRACTICE.0
    ));

    n.step(&format!(
        "the {} clinician records a blood pressure Observation and reads it back",
        home.ods
    ));
    let token = home.services.token()?;
    let created = record::create(
        services,
        token,
        &patient_id,
        observation(&patient_id),
        None,
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
    let read = record::get(services, token, &patient_id, &created.record_id, None)
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
    let refused = expect_denied(
        record::get(
            services,
            other.services.token()?,
            &patient_id,
            &created.record_id,
            None,
        )
        .await,
        &format!("{} reading without a care relationship", other.ods),
    )?;
    say(format!("denied, as it should be: {refused}"));

    n.step(&format!(
        "the {} clinician records an HIV diagnosis, labelled general",
        home.ods
    ));
    let condition = record::create(
        services,
        token,
        &patient_id,
        hiv_condition(&patient_id),
        Some(CategoryArg::General),
        None,
        None,
    )
    .await
    .context("creating the Condition")?;
    if condition.category != RecordCategory::SexualHealth as i32 {
        bail!(
            "a Condition coded SNOMED CT 86406008 (HIV infection) should be stored as \
             SEXUAL_HEALTH whatever its label; it was stored as {}",
            labels::category(condition.category)
        );
    }
    say(format!(
        "stored Condition {} as {}: the classification map decides by its code \
         (SNOMED CT 86406008); a label may raise the category, never lower it",
        condition.record_id,
        labels::category(condition.category)
    ));

    n.step("admin creates a patient principal: the patient, signed in for themselves");
    let me = create(
        services,
        &admin,
        "-",
        CreatePrincipalArgs {
            kind: KindArg::Patient,
            ods: String::new(),
            role: String::new(),
            name: "Jane Demo".into(),
            patient: patient_id.clone(),
            scopes: vec![],
            purposes: vec![],
        },
    )
    .await
    .context("creating the patient principal")?;
    say(format!(
        "patient principal {} (client id {}), bound to patient {patient_id}",
        me.principal_id, me.client_id
    ));

    n.step(&format!(
        "the patient refuses sexual-health sharing with {}; the clinician's next read is refused",
        HOME_PRACTICE.0
    ));
    let recorded = directive::record(
        &me.services,
        directive::RecordArgs {
            patient: patient_id.clone(),
            effect: EffectArg::Deny,
            purposes: vec![],
            ods: HOME_PRACTICE.0.to_owned(),
            role: String::new(),
            categories: vec![CategoryArg::SexualHealth],
            note: "Demo: no sexual-health sharing with my GP practice".into(),
        },
    )
    .await
    .context("recording the patient's directive")?;
    say(format!(
        "directive {}: {} {} for {} (recorded by the {})",
        recorded.directive_id,
        labels::effect(recorded.effect),
        labels::categories(&recorded.categories),
        recorded.organisation_ods_code,
        labels::directive_source(recorded.source).to_lowercase()
    ));
    let refused = expect_code(
        record::get(services, token, &patient_id, &condition.record_id, None).await,
        tonic::Code::NotFound,
        &format!(
            "the {} clinician reading the Condition against the patient's directive",
            home.ods
        ),
    )?;
    say(format!(
        "the Condition: withheld, as it should be — to the clinician it looks exactly like a \
         record that does not exist ({refused}); the refusal and its reason are in the audit log"
    ));
    record::get(services, token, &patient_id, &created.record_id, None)
        .await
        .context("reading the Observation after the directive")?;
    say("the Observation (general) is still readable: the directive is that narrow");

    n.step("the patient reads their own access report (audit)");
    let expected = [
        (
            &home_pas,
            Action::Create,
            "CareRelationship",
            Outcome::Success,
        ),
        (
            &other_pas,
            Action::Create,
            "CareRelationship",
            Outcome::Denied,
        ),
        (&home, Action::Read, "Observation", Outcome::Success),
        (&other, Action::Read, "Observation", Outcome::Denied),
        (&home, Action::Read, "Condition", Outcome::Denied),
        (&me, Action::Create, "Directive", Outcome::Success),
    ];
    // records ships its events to audit through its outbox moments after
    // each access is answered: give the last of them a moment to arrive.
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = access_report::fetch(services, me.services.token()?, &patient_id, None)
            .await
            .context("fetching the access report")?;
        let complete = expected
            .iter()
            .all(|(who, action, resource_type, outcome)| {
                lines
                    .iter()
                    .any(|l| is_by(l, who, *action, resource_type, *outcome))
            });
        if complete {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    out!();
    access_report::print(&lines);
    out!();
    for (who, action, resource_type, outcome) in expected {
        if !lines
            .iter()
            .any(|l| is_by(l, who, action, resource_type, outcome))
        {
            bail!(
                "the access report has no {} {} {resource_type} by {} ({})",
                labels::outcome(outcome as i32),
                labels::action(action as i32),
                who.ods,
                who.client_id
            );
        }
    }
    say(format!(
        "the report names who asserted the relationship and {}'s refused attempt, the {} \
         reads, the {} denial, the directive and the denial it caused",
        other_pas.ods, home.ods, other.ods
    ));

    out!(
        "\ndemo complete: {}'s own system asserted its relationship; consent let {} read the \
         record, denied {}, and upheld the patient's directive; audit recorded it all for the \
         patient to see.",
        HOME_PRACTICE.0,
        home.ods,
        other.ods
    );
    let sharedcare = if base_port == crate::ports::DEFAULT_BASE_PORT {
        "sharedcare".to_owned()
    } else {
        format!("sharedcare --base-port {base_port}")
    };
    out!("Try it yourself (a new patient principal; admin has no access to the report):");
    out!(
        "  export SHAREDCARE_TOKEN=$({sharedcare} token --client-id {ADMIN_CLIENT_ID} --client-secret <admin secret>)"
    );
    out!(
        "  {sharedcare} principal create --kind patient --patient {patient_id} --name \"Jane Demo\""
    );
    out!(
        "  export SHAREDCARE_TOKEN=$({sharedcare} token --client-id <patient client id> --client-secret <patient secret>)"
    );
    out!("  {sharedcare} access-report --patient {patient_id}");
    Ok(())
}

/// Creates a principal as admin and gets it a token.
async fn create(
    services: &Services,
    admin: &Services,
    ods: &'static str,
    args: CreatePrincipalArgs,
) -> anyhow::Result<Actor> {
    let created = principal::create(admin, args).await?;
    let principal = created.principal.unwrap_or_default();
    let issued = token::issue(
        services,
        &principal.client_id,
        &created.client_secret,
        vec![],
        None,
    )
    .await
    .context("issuing its token")?;
    Ok(Actor {
        ods,
        principal_id: principal.principal_id,
        client_id: principal.client_id,
        services: services.with_token(issued.access_token),
    })
}

/// The message of an expected PERMISSION_DENIED; an error if the call
/// succeeded (`what` should have been refused) or failed otherwise.
fn expect_denied<T>(result: anyhow::Result<T>, what: &str) -> anyhow::Result<String> {
    expect_code(result, tonic::Code::PermissionDenied, what)
}

/// The message of an expected failure with `code`; an error if the call
/// succeeded or failed otherwise.
fn expect_code<T>(
    result: anyhow::Result<T>,
    code: tonic::Code,
    what: &str,
) -> anyhow::Result<String> {
    match result {
        Ok(_) => bail!("{what} succeeded: it should have been refused"),
        Err(e) if status_code(&e) == Some(code) => Ok(e.to_string()),
        Err(e) => Err(e.context(format!(
            "expected {} for {what}, got another error",
            crate::failure::code_name(code)
        ))),
    }
}

fn is_by(
    line: &AccessReportLine,
    who: &Actor,
    action: Action,
    resource_type: &str,
    outcome: Outcome,
) -> bool {
    let actor = line.actor.clone().unwrap_or_default();
    line.action == action as i32
        && line.resource_type == resource_type
        && line.outcome == outcome as i32
        && actor.principal_id == who.principal_id
}
fn show_record(record: &Record) {
    say(format!(
        "stored {} {} version {} (category {})",
        record.resource_type,
        record.record_id,
        record.version,
        labels::category(record.category)
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

/// An HIV diagnosis: sexual health by its SNOMED CT code, whatever its
/// writer labels it.
fn hiv_condition(patient_id: &str) -> String {
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

/// A made-up family name, new each run ("Kovatemi"): the demo's patient is
/// a new person every time, and a new NHS number alone would not make one,
/// as RegisterPatient leaves a confident demographic match under another
/// number for a person to decide (AMBIGUOUS).
pub fn fresh_family_name() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..8)
        .map(|i| {
            let letters: &[u8] = if i % 2 == 0 {
                b"bdfgklmnprstvz"
            } else {
                b"aeiou"
            };
            let c = char::from(letters[rng.gen_range(0..letters.len())]);
            if i == 0 { c.to_ascii_uppercase() } else { c }
        })
        .collect()
}
