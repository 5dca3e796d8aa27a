//! `sharedcare demo`: the platform's story, told against a running platform
//! (`sharedcare dev`, or a cluster through the global URL flags), one step
//! at a time. Each step says in plain words what happens, shows each call
//! made (the RPC, who calls, the key fields) and its answer, refusals
//! included and explained:
//!
//! 1. the administrator sets up five organisations and the people at them;
//! 2. Jane registers once, at her GP practice, which becomes her registered
//!    GP in consent through identity;
//! 3. the hospital registers her again, with a typo in her given name, and
//!    finds the same person;
//! 4. her GP writes her record, one entry of it sexual health by its code;
//! 5. the hospital, asserting its episode of care, reads it all;
//! 6. Jane objects to sharing sexual-health data with the hospital, which no
//!    longer sees that record (her GP still does);
//! 7. a care home sees only the general record and social care;
//! 8. Jane opts out of research, and a researcher she had agreed to is
//!    refused;
//! 9. an A&E clinician with no relationship is refused, breaks the glass,
//!    and is flagged to their privacy officer;
//! 10. Jane reads her access report in plain words;
//! 11. a platform auditor verifies the log's signed head and proofs.
//!
//! Each run makes a new patient (a made-up family name and a test-range
//! NHS number), so the demo runs again against the same platform. Any call
//! that does not answer as the platform promises ends the demo with an
//! error.

mod fhir;
mod narrate;
pub(crate) mod nhs;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use sharedcare_audit::domain::checkpoint::LogVerifierKey;
use sharedcare_proto::{
    audit::v1::{AccessReportLine, Action, Outcome},
    common::v1::RecordCategory,
    consent::v1::CareRelationshipKind,
    identity::v1::RegisterOutcome,
    records::v1::{GetRecordRequest, Record, SearchRequest},
};

use crate::output::out;
use crate::{
    bootstrap::{self, ADMIN_CLIENT_ID, PLATFORM_ODS_CODE},
    commands::{
        access_report,
        audit::{self as audit_cmd, Auditor, VerifierKeyArg},
        care,
        directive::{self, EffectArg},
        org,
        patient::{self, GenderArg, RegisterArgs},
        principal::{self, CreatePrincipalArgs, KindArg},
        record, token,
    },
    connect::Services,
    failure::status_code,
    labels::{self, CategoryArg, PurposeArg},
};
use narrate::{Narrator, answer, call, permitted, refused, say, why};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The data dir `sharedcare dev` was started with: the admin secret
    /// comes from its bootstrap.toml and the audit log's verifier key from
    /// its audit-log.vkey, unless given below.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// The admin client's secret, for a platform `sharedcare dev` did not
    /// start here (a cluster) [default: from <data-dir>/bootstrap.toml].
    #[arg(long, env = "SHAREDCARE_ADMIN_SECRET", hide_env_values = true)]
    pub admin_secret: Option<String>,
    #[command(flatten)]
    pub key: VerifierKeyArg,
    /// Pause after each step until Enter is pressed (end of input goes on).
    #[arg(long)]
    pub step: bool,
}

/// An organisation in the story.
#[derive(Clone, Copy)]
struct Org {
    ods: &'static str,
    name: &'static str,
}

const GP_PRACTICE: Org = Org {
    ods: "A81001",
    name: "Demo Surgery",
};
const HOSPITAL: Org = Org {
    ods: "RR8",
    name: "Leeds General Infirmary (demo)",
};
const CARE_HOME: Org = Org {
    ods: "VCH01",
    name: "Meadowview Care Home (demo)",
};
const RESEARCH: Org = Org {
    ods: "RES01",
    name: "Leeds Research Unit (demo)",
};
const EMERGENCY: Org = Org {
    ods: "RAE",
    name: "Bradford Royal Infirmary A&E (demo)",
};

/// Clinical Practitioner Access Role: may break glass, refer and record
/// directives, but not assert relationships (identity's role map).
const CLINICIAN: &str = "R8000";
/// Nurse Access Role.
const NURSE: &str = "R8001";
const PRIVACY_OFFICER: &str = "privacy-officer";
const PLATFORM_AUDITOR: &str = "platform-auditor";
/// What an organisation's own system (a PAS) is created with: it registers
/// patients and asserts its own organisation's care relationships.
const SYSTEM_SCOPES: [&str; 6] = [
    "patients.read",
    "patients.write",
    "records.read",
    "records.write",
    "consent.read",
    "consent.write",
];
const STEPS: usize = 11;
/// How long the demo waits for what the platform does in the background
/// (identity's relay to consent, records' and consent's outboxes to audit).
const SETTLE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

/// The demo patient: made-up details, a new person each run.
const GIVEN: &str = "Jane";
/// The given name as the hospital types it: two letters swapped.
const GIVEN_TYPO: &str = "Jnae";
const BIRTH_DATE: &str = "1980-02-29";
const POSTCODE: &str = "LS1 4AP";

/// A principal created for this run, calling with its own token.
struct Actor {
    /// Who it is, for the narration: "Dr Asha Patel (GP, A81001)".
    who: String,
    principal_id: String,
    services: Services,
}

impl Actor {
    fn token(&self) -> anyhow::Result<&str> {
        self.services.token()
    }
}

/// Everyone in the story but Jane (whose login needs her patient id).
struct Cast {
    gp_system: Actor,
    gp: Actor,
    hospital_system: Actor,
    hospital_doctor: Actor,
    care_home_system: Actor,
    carer: Actor,
    researcher: Actor,
    emergency_doctor: Actor,
    privacy_officer: Actor,
    auditor: Actor,
}

/// A line Jane's access report must hold.
struct Expected<'a> {
    what: &'static str,
    who: &'a Actor,
    /// Any action when unset.
    action: Option<Action>,
    /// Any resource type when empty.
    resource_type: &'static str,
    outcome: Outcome,
    break_glass: bool,
}

impl Expected<'_> {
    fn found_in(&self, l: &AccessReportLine) -> bool {
        l.actor.as_ref().map(|a| a.principal_id.as_str()) == Some(self.who.principal_id.as_str())
            && self.action.is_none_or(|a| l.action == a as i32)
            && (self.resource_type.is_empty() || l.resource_type == self.resource_type)
            && l.outcome == self.outcome as i32
            && (!self.break_glass || l.break_glass)
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} {} by {}, {})",
            self.what,
            self.action
                .map_or("any action".to_owned(), |a| labels::action(a as i32)),
            if self.resource_type.is_empty() {
                "of any record"
            } else {
                self.resource_type
            },
            self.who.who,
            labels::outcome(self.outcome as i32)
        )
    }
}

/// The three entries the GP writes.
struct Written {
    observation: Record,
    condition: Record,
    referral: Record,
}

pub async fn run(services: &Services, args: DemoArgs, base_port: u16) -> anyhow::Result<()> {
    let mut n = Narrator::new(STEPS, args.step);
    let (admin_secret, secret_from) = admin_secret(&args)?;
    let key = verifier_key(&args)?;
    out!("sharedcare demo: one patient's story across identity, consent, records and audit.");
    out!("Each call is shown as `→ RPC by whom: what`, its answer as `← ...`; refusals are");
    out!(
        "part of the story. Calling identity at {}.",
        services.identity_url
    );
    if args.step {
        out!("--step: the demo waits for Enter after each step.");
    }

    n.step("The administrator sets the scene: five organisations and the people at them")
        .await?;
    call(
        "identity.IssueToken",
        "admin",
        format!("client id {ADMIN_CLIENT_ID}, secret from {secret_from}"),
    );
    let admin = services.with_token(
        permitted(
            token::issue(services, ADMIN_CLIENT_ID, &admin_secret, vec![], None).await,
            "admin's token",
        )?
        .access_token,
    );
    answer(
        "permitted: a short-lived token (admin manages organisations and principals; it reads no clinical data)",
    );
    for org in [GP_PRACTICE, HOSPITAL, CARE_HOME, RESEARCH, EMERGENCY] {
        call(
            "identity.CreateOrganisation",
            "admin",
            format!("{} \"{}\"", org.ods, org.name),
        );
        match org::create(&admin, org.ods, org.name).await {
            Ok(created) => answer(format!("created {}", created.ods_code)),
            Err(e) if status_code(&e) == Some(tonic::Code::AlreadyExists) => {
                answer(format!("{} is there already (an earlier run)", org.ods));
            }
            Err(e) => return Err(e.context(format!("creating organisation {}", org.ods))),
        }
    }
    let cast = cast(services, &admin).await?;
    say("Each of them signs in with its own client credentials (identity.IssueToken) and");
    say("calls with its own token from now on.");

    n.step("Jane registers once, at her GP practice").await?;
    let nhs_number = nhs::random_test_number();
    let family = fresh_family_name();
    say(format!(
        "The practice's patient administration system (PAS) registers Jane {family}, naming \
         itself as her GP practice."
    ));
    call(
        "identity.RegisterPatient",
        &cast.gp_system.who,
        format!(
            "NHS number {nhs_number}, {GIVEN} {family}, born {BIRTH_DATE}, GP practice {}",
            GP_PRACTICE.ods
        ),
    );
    let registered = permitted(
        patient::register(
            &cast.gp_system.services,
            jane(&nhs_number, GIVEN, &family, GP_PRACTICE.ods),
        )
        .await,
        "registering Jane at her GP practice",
    )?;
    if registered.outcome() != RegisterOutcome::Created {
        bail!(
            "the story went wrong: a new NHS number should register a new patient, but the \
             outcome was {}",
            registered.outcome().as_str_name()
        );
    }
    let patient_id = registered.patient.unwrap_or_default().patient_id;
    answer(format!("created: patient {patient_id}"));
    why("Naming its own practice, the PAS also makes it her registered GP in consent:");
    why("identity passes the registration on to consent (RecordGpRegistration) in the background.");
    say("Jane signs in for herself (the admin creates her login, standing in for NHS login).");
    let jane_login = create(
        services,
        &admin,
        format!("Jane {family} (signed in for herself)"),
        CreatePrincipalArgs {
            kind: KindArg::Patient,
            ods: String::new(),
            role: String::new(),
            name: format!("{GIVEN} {family}"),
            patient: patient_id.clone(),
            scopes: vec![],
            purposes: vec![],
        },
    )
    .await?;
    call(
        "consent.ListCareRelationships",
        &jane_login.who,
        "her own care relationships",
    );
    let (relationships, asked) = eventually(async || {
        let relationships = care::list(&jane_login.services, &patient_id).await?;
        let registered_gp = relationships.iter().any(|r| {
            r.organisation_ods_code == GP_PRACTICE.ods
                && r.kind == CareRelationshipKind::RegisteredGp as i32
        });
        Ok(registered_gp.then_some(relationships))
    })
    .await
    .context("waiting for the registered-GP relationship identity passes to consent")?;
    answer(format!(
        "permitted: {} — {}",
        count(relationships.len(), "relationship"),
        relationships
            .iter()
            .map(|r| format!(
                "{} {}",
                r.organisation_ods_code,
                labels::relationship_kind(r.kind)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    why(format!(
        "recorded by identity, not typed in by anyone{}",
        if asked > 1 {
            format!(" (there after {asked} asks: it travels in the background)")
        } else {
            String::new()
        }
    ));

    n.step("At the hospital she is registered again, with a typo, and found: not a second Jane")
        .await?;
    say(format!(
        "The hospital's PAS has no NHS number for her and types her given name as \"{GIVEN_TYPO}\"."
    ));
    call(
        "identity.RegisterPatient",
        &cast.hospital_system.who,
        format!("no NHS number, {GIVEN_TYPO} {family}, born {BIRTH_DATE}"),
    );
    let found = permitted(
        patient::register(
            &cast.hospital_system.services,
            jane("", GIVEN_TYPO, &family, ""),
        )
        .await,
        "the hospital registering Jane again",
    )?;
    let found_id = found
        .patient
        .as_ref()
        .map(|p| p.patient_id.clone())
        .unwrap_or_default();
    if found.outcome() != RegisterOutcome::MatchedDemographics || found_id != patient_id {
        bail!(
            "the story went wrong: the hospital's registration should have found Jane ({patient_id}) \
             by her details, but the outcome was {} (patient {found_id:?})",
            found.outcome().as_str_name()
        );
    }
    let how = found
        .candidates
        .first()
        .map(|m| {
            format!(
                "score {:.3}, {}: {}",
                m.score,
                patient::level(m.level),
                patient::fields(&m.fields)
            )
        })
        .unwrap_or_default();
    answer(format!(
        "found: patient {found_id}, the same person (MATCHED_DEMOGRAPHICS; {how})"
    ));
    why("Two letters swapped in a four-letter given name count as similar, and her family");
    why("name, date of birth, gender and postcode agree: one confident match, so nothing new");
    why("was created. (With her NHS number, the number finds her whatever the given name, as");
    why("long as family name and date of birth agree.)");

    n.step("Her GP writes her record: one entry is sexual health")
        .await?;
    let written = gp_writes(&cast.gp, &patient_id).await?;

    n.step("The hospital asserts its episode of care and reads her record")
        .await?;
    call(
        "consent.RecordCareRelationship",
        &cast.hospital_system.who,
        format!(
            "{} HOSPITAL_EPISODE, for its own organisation",
            HOSPITAL.ods
        ),
    );
    let episode = permitted(
        care::record(
            &cast.hospital_system.services,
            relationship(&patient_id, HOSPITAL.ods, care::KindArg::HospitalEpisode),
        )
        .await,
        "the hospital asserting its episode",
    )?;
    answer(format!(
        "recorded: relationship {}",
        episode.relationship_id
    ));
    let seen = search(
        &cast.hospital_doctor,
        &patient_id,
        None,
        "the hospital's search",
    )
    .await?;
    expect_records(&seen, &written, &[true, true, true], "the hospital")?;
    why("A hospital episode sees every category of her record (consent rule R7).");

    n.step("Jane objects to sharing sexual-health data with the hospital")
        .await?;
    call(
        "consent.RecordDirective",
        &jane_login.who,
        format!(
            "DENY, category SEXUAL_HEALTH, organisation {}",
            HOSPITAL.ods
        ),
    );
    let objection = permitted(
        directive::record(
            &jane_login.services,
            directive::RecordArgs {
                patient: patient_id.clone(),
                effect: EffectArg::Deny,
                purposes: vec![],
                ods: HOSPITAL.ods.to_owned(),
                role: String::new(),
                categories: vec![CategoryArg::SexualHealth],
                note: "Demo: no sexual-health sharing with the hospital".into(),
            },
        )
        .await,
        "Jane's objection",
    )?;
    answer(format!("recorded: directive {}", objection.directive_id));
    call(
        "records.GetRecord",
        &cast.hospital_doctor.who,
        format!("the Condition {}", written.condition.record_id),
    );
    refused(
        record::get(
            services,
            cast.hospital_doctor.token()?,
            &patient_id,
            &written.condition.record_id,
            None,
        )
        .await,
        tonic::Code::NotFound,
        None,
        "the hospital reading the sexual-health record after Jane's objection",
    )?;
    why("Her objection beats the hospital's care relationship (R8, PATIENT_DIRECTIVE_DENY). To");
    why("the hospital the record looks exactly like one that does not exist: even that it exists");
    why("is hers to share. The refusal and its reason are in the audit log (step 10).");
    let seen = search(
        &cast.hospital_doctor,
        &patient_id,
        None,
        "the hospital's search",
    )
    .await?;
    expect_records(&seen, &written, &[true, false, true], "the hospital")?;
    why("The rest of her record is still shared with the hospital: the objection is that narrow.");
    call(
        "records.GetRecord",
        &cast.gp.who,
        format!("the Condition {}", written.condition.record_id),
    );
    let read = permitted(
        record::get(
            services,
            cast.gp.token()?,
            &patient_id,
            &written.condition.record_id,
            None,
        )
        .await,
        "her GP reading the sexual-health record",
    )?;
    answer(format!(
        "permitted: {} {}",
        read.resource_type,
        labels::category(read.category)
    ));
    why("Her GP, whom the objection does not name, still reads it.");

    n.step("A care home sees only her general record and social care")
        .await?;
    call(
        "consent.RecordCareRelationship",
        &cast.care_home_system.who,
        format!(
            "{} CARE_HOME_PLACEMENT, for its own organisation",
            CARE_HOME.ods
        ),
    );
    let placement = permitted(
        care::record(
            &cast.care_home_system.services,
            relationship(&patient_id, CARE_HOME.ods, care::KindArg::CareHomePlacement),
        )
        .await,
        "the care home asserting its placement",
    )?;
    answer(format!(
        "recorded: relationship {}",
        placement.relationship_id
    ));
    let seen = search(&cast.carer, &patient_id, None, "the care home's search").await?;
    expect_records(&seen, &written, &[true, false, true], "the care home")?;
    call(
        "records.GetRecord",
        &cast.carer.who,
        format!("the Condition {}", written.condition.record_id),
    );
    refused(
        record::get(
            services,
            cast.carer.token()?,
            &patient_id,
            &written.condition.record_id,
            None,
        )
        .await,
        tonic::Code::NotFound,
        None,
        "the care home reading the sexual-health record",
    )?;
    why("A care-home placement covers the general record and social care only (R7,");
    why("RELATIONSHIP_SCOPE): the sexual-health record is withheld, as if absent.");

    n.step("Jane opts out of research, and a researcher is refused")
        .await?;
    say("Jane had agreed to research: a PERMIT directive for the research purpose.");
    call(
        "consent.RecordDirective",
        &jane_login.who,
        "PERMIT, purpose RESEARCH",
    );
    let consent_to_research = permitted(
        directive::record(
            &jane_login.services,
            directive::RecordArgs {
                patient: patient_id.clone(),
                effect: EffectArg::Permit,
                purposes: vec![PurposeArg::Research],
                ods: String::new(),
                role: String::new(),
                categories: vec![],
                note: "Demo: I agree to my record being used for research".into(),
            },
        )
        .await,
        "Jane's consent to research",
    )?;
    answer(format!(
        "recorded: directive {}",
        consent_to_research.directive_id
    ));
    let seen = search(
        &cast.researcher,
        &patient_id,
        Some(PurposeArg::Research),
        "the researcher's search with Jane's consent",
    )
    .await?;
    if seen.is_empty() {
        bail!("the story went wrong: with Jane's consent the researcher should see her record");
    }
    why("Research is not her care: it rests on her explicit consent (R14).");
    say("Then Jane registers the National Data Opt-out.");
    call("consent.SetNationalOptOut", &jane_login.who, "opted out");
    let opt_out = permitted(
        directive::set_national_opt_out(&jane_login.services, patient_id.clone(), true).await,
        "Jane's National Data Opt-out",
    )?;
    if !opt_out.opted_out {
        bail!("the story went wrong: the opt-out was not registered");
    }
    answer("recorded: National Data Opt-out registered");
    call(
        "records.Search",
        &cast.researcher.who,
        "purpose RESEARCH, every record",
    );
    refused(
        record::search(
            services,
            cast.researcher.token()?,
            search_request(&patient_id, Some(PurposeArg::Research)),
        )
        .await,
        tonic::Code::PermissionDenied,
        Some("NATIONAL_OPT_OUT"),
        "the researcher's search after Jane's opt-out",
    )?;
    why("The opt-out refuses research and planning even with her general consent (R22); it");
    why("never touches her care: the hospital and her GP read on as before.");

    n.step("An A&E clinician with no relationship breaks the glass, and is flagged")
        .await?;
    call(
        "records.GetRecord",
        &cast.emergency_doctor.who,
        format!("the Observation {}", written.observation.record_id),
    );
    refused(
        record::get(
            services,
            cast.emergency_doctor.token()?,
            &patient_id,
            &written.observation.record_id,
            None,
        )
        .await,
        tonic::Code::PermissionDenied,
        Some("NO_CARE_RELATIONSHIP"),
        "A&E reading without a care relationship",
    )?;
    why(format!(
        "{} is not caring for her: no relationship, no access (R4).",
        EMERGENCY.ods
    ));
    let reason = "Unconscious on arrival; need her recent observations";
    call(
        "records.GetRecord",
        &cast.emergency_doctor.who,
        format!(
            "the Observation {}, break-glass reason \"{reason}\"",
            written.observation.record_id
        ),
    );
    let read = permitted(
        record::get_request(
            services,
            cast.emergency_doctor.token()?,
            GetRecordRequest {
                patient_id: patient_id.clone(),
                record_id: written.observation.record_id.clone(),
                purpose: 0,
                break_glass_reason: reason.into(),
            },
        )
        .await,
        "A&E breaking the glass",
    )?;
    answer(format!(
        "permitted (break-glass): {} {}",
        read.resource_type,
        labels::category(read.category)
    ));
    why(format!(
        "{CLINICIAN} may break glass (identity's role map): consent grants emergency access for a \
         limited time (R16) and obliges records to flag it and tell the privacy officer."
    ));
    call(
        "audit.ListBreakGlassAccesses",
        &cast.privacy_officer.who,
        format!("{}'s own staff", EMERGENCY.ods),
    );
    let (flagged, _) = eventually(async || {
        let accesses = audit_cmd::list_break_glass(&cast.privacy_officer.services, "").await?;
        let hers: Vec<AccessReportLine> = accesses
            .into_iter()
            .filter(|a| a.patient_id == patient_id)
            .filter_map(|a| a.line)
            .filter(|l| {
                l.break_glass
                    && l.actor.as_ref().map(|a| a.principal_id.as_str())
                        == Some(cast.emergency_doctor.principal_id.as_str())
            })
            .collect();
        let read = hers.iter().any(|l| l.resource_type == "Observation");
        Ok(read.then_some(hers))
    })
    .await
    .context("waiting for the break-glass access to reach the privacy officer's list")?;
    answer(format!(
        "permitted: {} for this patient, flagged:",
        count(flagged.len(), "break-glass access")
    ));
    for line in &flagged {
        why(&line.summary);
    }

    n.step("Jane reads who has looked at her record, in plain words")
        .await?;
    call("audit.AccessReport", &jane_login.who, "her own record");
    let expected = [
        Expected {
            what: "the hospital refused the sexual-health record",
            who: &cast.hospital_doctor,
            action: Some(Action::Read),
            resource_type: "Condition",
            outcome: Outcome::Denied,
            break_glass: false,
        },
        Expected {
            what: "the care home refused it",
            who: &cast.carer,
            action: Some(Action::Read),
            resource_type: "Condition",
            outcome: Outcome::Denied,
            break_glass: false,
        },
        Expected {
            what: "the researcher refused",
            who: &cast.researcher,
            action: None,
            resource_type: "",
            outcome: Outcome::Denied,
            break_glass: false,
        },
        Expected {
            what: "A&E's break-glass read, flagged",
            who: &cast.emergency_doctor,
            action: Some(Action::Read),
            resource_type: "Observation",
            outcome: Outcome::Success,
            break_glass: true,
        },
        Expected {
            what: "the care home's read of the referral",
            who: &cast.carer,
            action: None,
            resource_type: "ServiceRequest",
            outcome: Outcome::Success,
            break_glass: false,
        },
    ];
    let matches = |l: &AccessReportLine, e: &Expected<'_>| e.found_in(l);
    let report = eventually(async || {
        let lines = access_report::fetch(services, jane_login.token()?, &patient_id, None).await?;
        let complete = expected.iter().all(|e| lines.iter().any(|l| matches(l, e)));
        Ok(complete.then_some(lines))
    })
    .await;
    let lines = match report {
        Ok((lines, _)) => lines,
        Err(e) => {
            let lines = access_report::fetch(services, jane_login.token()?, &patient_id, None)
                .await
                .unwrap_or_default();
            access_report::print(&lines);
            let missing: Vec<String> = expected
                .iter()
                .filter(|e| !lines.iter().any(|l| matches(l, e)))
                .map(Expected::describe)
                .collect();
            return Err(e.context(format!(
                "the story went wrong: Jane's access report lacks {}",
                missing.join("; ")
            )));
        }
    };
    answer(format!("permitted: {}", count(lines.len(), "line")));
    out!();
    access_report::print(&lines);
    out!();
    why("Every line is one access, in words: who (name, role, organisation), what, why, and");
    why("whether it was allowed. Among them: the hospital's and the care home's refusals, the");
    why("researcher's refusal, and A&E's break-glass read, flagged.");
    let break_glass_entry = lines
        .iter()
        .find(|l| matches(l, &expected[3]))
        .map_or(0, |l| l.sequence);

    n.step("An auditor verifies the log's proofs").await?;
    say("A platform auditor, outside the services, checks the audit log through its public API");
    say("with the log's verifier key (given out of band; dev keeps it in its data dir).");
    call(
        "audit.SignedTreeHead + ListEntries + InclusionProof",
        &cast.auditor.who,
        format!(
            "fresh signed head; inclusion of entry {break_glass_entry} (A&E's break-glass read)"
        ),
    );
    let mut auditor = Auditor {
        client: services.audit()?,
        token: cast.auditor.token()?.to_owned(),
    };
    let verified = auditor
        .verify(&key, None, &[break_glass_entry])
        .await
        .map_err(|e| match e.downcast_ref::<audit_cmd::Failure>() {
            Some(failure) => {
                anyhow!("the story went wrong: the audit log does NOT verify: {failure}")
            }
            None => e.context("verifying the audit log"),
        })?;
    answer(format!(
        "verified: the tree head of {} entries is signed by the log's key ({})",
        verified.head.size, verified.head.origin
    ));
    why("every entry was re-hashed and the tree re-derived to the signed root: none was");
    why("altered, removed, inserted or reordered");
    for sequence in &verified.proved {
        why(format!(
            "entry {sequence} is in the signed tree (its inclusion proof checks out)"
        ));
    }
    call(
        "audit.AccessReport",
        &cast.auditor.who,
        "Jane's report, with proofs",
    );
    let proved = permitted(
        access_report::fetch(services, cast.auditor.token()?, &patient_id, Some(&key)).await,
        "the auditor checking Jane's report against the log",
    )?;
    answer(format!(
        "verified: each of the {} lines is an entry of the log, in a tree head signed by its key",
        proved.len()
    ));

    out!(
        "\nThe end ({} steps). Jane gave her details once; each organisation saw what its care \
         of her allows and what she allows; her wishes were upheld; an emergency was served and \
         flagged; and every access is in a log anyone with the key can check.",
        n.steps_told()
    );
    let sharedcare = if base_port == crate::ports::DEFAULT_BASE_PORT {
        "sharedcare".to_owned()
    } else {
        format!("sharedcare --base-port {base_port}")
    };
    out!("Try it yourself: with a patient token for her (admin creates the principal),");
    out!("  {sharedcare} access-report --patient {patient_id}");
    Ok(())
}

/// The admin secret given, or the one in the data dir's bootstrap file;
/// and where it came from, for the narration.
fn admin_secret(args: &DemoArgs) -> anyhow::Result<(String, String)> {
    if let Some(secret) = args.admin_secret.as_ref().filter(|s| !s.trim().is_empty()) {
        return Ok((secret.trim().to_owned(), "--admin-secret".into()));
    }
    let path = args.data_dir.join(bootstrap::FILE_NAME);
    let credentials = bootstrap::read(&path).with_context(|| {
        format!(
            "no admin secret: `sharedcare dev --data-dir {}` writes it to {}; against a cluster, \
             give --admin-secret",
            args.data_dir.display(),
            path.display()
        )
    })?;
    Ok((credentials.admin_secret, path.display().to_string()))
}

/// The verifier key given, or the one `sharedcare dev` keeps in its data
/// dir.
fn verifier_key(args: &DemoArgs) -> anyhow::Result<LogVerifierKey> {
    if args.key.public_key.is_some() || args.key.public_key_file.is_some() {
        return args.key.load();
    }
    let path = args.data_dir.join("audit-log.vkey");
    VerifierKeyArg {
        public_key: None,
        public_key_file: Some(path.clone()),
    }
    .load()
    .with_context(|| {
        format!(
            "no verifier key for the audit log: `sharedcare dev` keeps it in {}; against a \
             cluster, give --public-key or --public-key-file",
            path.display()
        )
    })
}

/// The admin creates everyone in the story but Jane.
async fn cast(services: &Services, admin: &Services) -> anyhow::Result<Cast> {
    let system = |org: Org| CreatePrincipalArgs {
        kind: KindArg::Application,
        ods: org.ods.to_owned(),
        role: String::new(),
        name: format!("{} PAS", org.name),
        patient: String::new(),
        scopes: SYSTEM_SCOPES.map(str::to_owned).to_vec(),
        purposes: vec![],
    };
    let staff = |org: Org, role: &str, name: &str| CreatePrincipalArgs {
        kind: KindArg::Staff,
        ods: org.ods.to_owned(),
        role: role.to_owned(),
        name: name.to_owned(),
        patient: String::new(),
        scopes: vec![],
        purposes: vec![],
    };
    let gp_system = create(
        services,
        admin,
        format!("{}'s PAS", GP_PRACTICE.ods),
        system(GP_PRACTICE),
    )
    .await?;
    let gp = create(
        services,
        admin,
        format!("Dr Asha Patel (GP, {})", GP_PRACTICE.ods),
        staff(GP_PRACTICE, CLINICIAN, "Dr Asha Patel"),
    )
    .await?;
    let hospital_system = create(
        services,
        admin,
        format!("{}'s PAS", HOSPITAL.ods),
        system(HOSPITAL),
    )
    .await?;
    let hospital_doctor = create(
        services,
        admin,
        format!("Dr Tom Reid (hospital, {})", HOSPITAL.ods),
        staff(HOSPITAL, CLINICIAN, "Dr Tom Reid"),
    )
    .await?;
    let care_home_system = create(
        services,
        admin,
        format!("{}'s care system", CARE_HOME.ods),
        system(CARE_HOME),
    )
    .await?;
    let carer = create(
        services,
        admin,
        format!("Nurse Grace Mensah (care home, {})", CARE_HOME.ods),
        staff(CARE_HOME, NURSE, "Grace Mensah"),
    )
    .await?;
    let researcher = create(
        services,
        admin,
        format!("{}'s research platform", RESEARCH.ods),
        CreatePrincipalArgs {
            kind: KindArg::Application,
            ods: RESEARCH.ods.to_owned(),
            role: String::new(),
            name: "Research platform".into(),
            patient: String::new(),
            scopes: vec![],
            purposes: vec![PurposeArg::Research],
        },
    )
    .await?;
    let emergency_doctor = create(
        services,
        admin,
        format!("Dr Sam Lee (A&E, {})", EMERGENCY.ods),
        staff(EMERGENCY, CLINICIAN, "Dr Sam Lee"),
    )
    .await?;
    let privacy_officer = create(
        services,
        admin,
        format!("Priya Shah (privacy officer, {})", EMERGENCY.ods),
        staff(EMERGENCY, PRIVACY_OFFICER, "Priya Shah"),
    )
    .await?;
    let auditor = create(
        services,
        admin,
        format!("the platform auditor ({PLATFORM_ODS_CODE})"),
        staff(
            Org {
                ods: PLATFORM_ODS_CODE,
                name: "",
            },
            PLATFORM_AUDITOR,
            "Platform auditor",
        ),
    )
    .await?;
    Ok(Cast {
        gp_system,
        gp,
        hospital_system,
        hospital_doctor,
        care_home_system,
        carer,
        researcher,
        emergency_doctor,
        privacy_officer,
        auditor,
    })
}

/// The admin creates a principal (narrated), which then gets its token.
async fn create(
    services: &Services,
    admin: &Services,
    who: String,
    args: CreatePrincipalArgs,
) -> anyhow::Result<Actor> {
    let what = match args.kind {
        KindArg::Patient => "a patient, bound to her patient id".to_owned(),
        KindArg::Application if !args.purposes.is_empty() => format!(
            "application at {}, purposes {}",
            args.ods,
            args.purposes
                .iter()
                .map(|p| labels::purpose(p.to_proto() as i32))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        KindArg::Application => format!(
            "application at {}, scopes {}",
            args.ods,
            args.scopes.join(" ")
        ),
        _ => format!("staff at {}, role {}", args.ods, args.role),
    };
    call(
        "identity.CreatePrincipal",
        "admin",
        format!("{who}: {what}"),
    );
    let created = permitted(
        principal::create(admin, args).await,
        &format!("creating {who}"),
    )?;
    let principal = created.principal.unwrap_or_default();
    answer(format!(
        "created: principal {} (client id {})",
        principal.principal_id, principal.client_id
    ));
    let issued = token::issue(
        services,
        &principal.client_id,
        &created.client_secret,
        vec![],
        None,
    )
    .await
    .with_context(|| format!("issuing a token for {who}"))?;
    Ok(Actor {
        who,
        principal_id: principal.principal_id,
        services: services.with_token(issued.access_token),
    })
}

/// Jane's details as a registration gives them.
fn jane(nhs_number: &str, given: &str, family: &str, gp_practice: &str) -> RegisterArgs {
    RegisterArgs {
        nhs_number: nhs_number.to_owned(),
        given: vec![given.to_owned()],
        family: family.to_owned(),
        birth_date: BIRTH_DATE.into(),
        gender: Some(GenderArg::Female),
        postcode: POSTCODE.into(),
        gp_practice: gp_practice.to_owned(),
        confirm_new: false,
    }
}

fn relationship(patient_id: &str, ods: &str, kind: care::KindArg) -> care::CareRelationshipArgs {
    care::CareRelationshipArgs {
        patient: patient_id.to_owned(),
        ods: ods.to_owned(),
        kind,
        staff: String::new(),
        team: String::new(),
    }
}

/// The GP writes three entries; records files each by its codes.
async fn gp_writes(gp: &Actor, patient_id: &str) -> anyhow::Result<Written> {
    let entries = [
        (
            "an Observation (systolic blood pressure)",
            fhir::blood_pressure(patient_id),
            None,
            RecordCategory::General,
        ),
        (
            "a Condition (HIV infection, SNOMED CT 86406008), labelled GENERAL",
            fhir::hiv_diagnosis(patient_id),
            Some(CategoryArg::General),
            RecordCategory::SexualHealth,
        ),
        (
            "a ServiceRequest (referral to social services, SNOMED CT 306238000)",
            fhir::social_services_referral(patient_id),
            None,
            RecordCategory::SocialCare,
        ),
    ];
    let mut written = Vec::new();
    for (what, json, label, expected) in entries {
        call("records.CreateRecord", &gp.who, what);
        let stored = permitted(
            record::create(
                &gp.services,
                gp.token()?,
                patient_id,
                json,
                label,
                None,
                None,
            )
            .await,
            &format!("the GP writing {what}"),
        )?;
        if stored.category != expected as i32 {
            bail!(
                "the story went wrong: {what} should be stored as {}, but was stored as {}",
                labels::category(expected as i32),
                labels::category(stored.category)
            );
        }
        answer(format!(
            "permitted: stored {} {} version {}, category {}",
            stored.resource_type,
            stored.record_id,
            stored.version,
            labels::category(stored.category)
        ));
        written.push(stored);
    }
    why("The category comes from the codes, through records' classification map: the HIV");
    why("diagnosis is sexual health whatever its writer labelled it (a label may raise a");
    why("category, never lower it).");
    let [observation, condition, referral]: [Record; 3] = written
        .try_into()
        .map_err(|_| anyhow!("expected three records"))?;
    Ok(Written {
        observation,
        condition,
        referral,
    })
}

fn search_request(patient_id: &str, purpose: Option<PurposeArg>) -> SearchRequest {
    SearchRequest {
        patient_id: patient_id.to_owned(),
        page_size: 100,
        purpose: labels::purpose_or_unspecified(purpose),
        ..SearchRequest::default()
    }
}

/// A search of her whole record by `who`, expected permitted; narrated.
async fn search(
    who: &Actor,
    patient_id: &str,
    purpose: Option<PurposeArg>,
    what: &str,
) -> anyhow::Result<Vec<Record>> {
    let purpose_words = purpose.map_or("DIRECT_CARE".to_owned(), |p| {
        labels::purpose(p.to_proto() as i32)
    });
    call(
        "records.Search",
        &who.who,
        format!("purpose {purpose_words}, every record"),
    );
    let found = permitted(
        record::search(
            &who.services,
            who.token()?,
            search_request(patient_id, purpose),
        )
        .await,
        what,
    )?;
    answer(format!(
        "permitted: {}{}",
        count(found.len(), "record"),
        if found.is_empty() {
            String::new()
        } else {
            format!(
                " — {}",
                found
                    .iter()
                    .map(|r| format!("{} ({})", r.resource_type, labels::category(r.category)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    Ok(found)
}

/// Checks that `seen` holds exactly the written entries flagged (in the
/// order observation, condition, referral).
fn expect_records(
    seen: &[Record],
    written: &Written,
    expected: &[bool; 3],
    who: &str,
) -> anyhow::Result<()> {
    let entries = [&written.observation, &written.condition, &written.referral];
    for (entry, should_see) in entries.iter().zip(expected) {
        let sees = seen.iter().any(|r| r.record_id == entry.record_id);
        if sees != *should_see {
            bail!(
                "the story went wrong: {who} should {}see the {} ({}), but {}",
                if *should_see { "" } else { "not " },
                entry.resource_type,
                labels::category(entry.category),
                if sees { "did" } else { "did not" }
            );
        }
    }
    if seen.len() != expected.iter().filter(|e| **e).count() {
        bail!(
            "the story went wrong: {who} saw {} records, not the {} the GP wrote that it may see",
            seen.len(),
            expected.iter().filter(|e| **e).count()
        );
    }
    Ok(())
}

/// Asks until `attempt` gives `Some` (what the platform does in the
/// background has arrived), for up to [`SETTLE`]; the answer and how many
/// times it asked.
async fn eventually<T, F>(mut attempt: F) -> anyhow::Result<(T, usize)>
where
    F: AsyncFnMut() -> anyhow::Result<Option<T>>,
{
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut asked = 0;
    loop {
        asked += 1;
        if let Some(found) = attempt().await? {
            return Ok((found, asked));
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("not there after {} s ({asked} asks)", SETTLE.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn count(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        _ if what.ends_with('s') => format!("{n} {what}es"),
        _ => format!("{n} {what}s"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_plural_but_for_one() {
        assert_eq!(count(1, "record"), "1 record");
        assert_eq!(count(0, "record"), "0 records");
        assert_eq!(count(3, "line"), "3 lines");
        assert_eq!(count(2, "access"), "2 accesses");
    }
}
