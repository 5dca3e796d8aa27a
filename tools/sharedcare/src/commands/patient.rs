//! `sharedcare patient`: register a patient (find-or-create: by NHS number
//! or by a confident demographic match), read one back, trace patients
//! (by NHS number, by demographics with explained scores, or a patient's
//! possible duplicates) and record that two are not the same person.

use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use sharedcare_proto::identity::v1::{
    Demographics, FieldAgreement, FieldComparison, Gender, GetPatientRequest,
    MarkNotSamePersonRequest, MatchLevel, Patient, RegisterOutcome, RegisterPatientRequest,
    RegisterPatientResponse, TraceMatch, TracePatientRequest,
};

use crate::output::out;
use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
    labels,
};

#[derive(Debug, Subcommand)]
pub enum PatientCommand {
    /// Register a patient, or find them registered already: prints the
    /// outcome (created, matched by NHS number, matched by demographics
    /// with how, or ambiguous with the candidates) and the id.
    Register(RegisterArgs),
    /// Show a patient by id.
    Get {
        /// Patient id, as returned by `patient register`.
        #[arg(long)]
        id: String,
    },
    /// Find patients by NHS number, by demographics (scored and fuzzy), or
    /// a patient's possible duplicates: one line per candidate, best first
    /// (staff whose role has trace_patients; an application gets the one
    /// confident match or none).
    Trace(TraceArgs),
    /// Record that two patients are not the same person: later traces and
    /// registrations honour it (staff whose role has trace_patients).
    NotSame {
        /// One patient's id.
        #[arg(long)]
        id: String,
        /// The other's.
        #[arg(long)]
        other: String,
        /// Why, in a few words (kept with the link).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Exact trace by NHS number (an application gives demographics too).
    #[arg(long)]
    pub nhs_number: Option<String>,
    /// Family name (with --birth-date, for a demographic trace).
    #[arg(long)]
    pub family: Option<String>,
    /// Given name (repeat for several, in order).
    #[arg(long)]
    pub given: Vec<String>,
    /// Date of birth: YYYY-MM-DD, or just YYYY-MM or YYYY.
    #[arg(long)]
    pub birth_date: Option<String>,
    /// Administrative gender.
    #[arg(long, value_enum)]
    pub gender: Option<GenderArg>,
    /// Home postcode, e.g. "LS1 4AP".
    #[arg(long)]
    pub postcode: Option<String>,
    /// The possible duplicates of this registered patient, by id.
    #[arg(long, conflicts_with_all = ["nhs_number", "family", "given", "birth_date", "gender", "postcode"])]
    pub duplicates_of: Option<String>,
    /// Most candidates shown, 1 to 50 [default: 10].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=50))]
    pub max: Option<i32>,
}

impl TraceArgs {
    fn request(self) -> TracePatientRequest {
        let demographic = self.family.is_some()
            || !self.given.is_empty()
            || self.birth_date.is_some()
            || self.gender.is_some()
            || self.postcode.is_some();
        TracePatientRequest {
            nhs_number: self.nhs_number.unwrap_or_default(),
            demographics: demographic.then(|| Demographics {
                given_names: self.given,
                family_name: self.family.unwrap_or_default(),
                birth_date: self.birth_date.unwrap_or_default(),
                gender: self.gender.map_or(Gender::Unspecified, GenderArg::to_proto) as i32,
                postcode: self.postcode.unwrap_or_default(),
                ..Default::default()
            }),
            max_results: self.max.unwrap_or(0),
            duplicates_of_patient_id: self.duplicates_of.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RegisterArgs {
    /// NHS number; spaces are allowed ("943 476 5919"). Without one, the
    /// patient the demographics match confidently is found (a new patient
    /// needs one).
    #[arg(long, default_value = "")]
    pub nhs_number: String,
    /// Given name (repeat for several, in order).
    #[arg(long, required = true)]
    pub given: Vec<String>,
    /// Family name.
    #[arg(long)]
    pub family: String,
    /// Date of birth, YYYY-MM-DD.
    #[arg(long)]
    pub birth_date: String,
    /// Administrative gender.
    #[arg(long, value_enum)]
    pub gender: Option<GenderArg>,
    /// Home postcode, e.g. "LS1 4AP".
    #[arg(long, default_value = "")]
    pub postcode: String,
    /// ODS code of the GP practice the patient registers with: only that
    /// practice itself (its PAS, or staff whose role may assert
    /// relationships) may name it, and identity then opens the practice's
    /// registered-GP care relationship in consent.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub gp_practice: String,
    /// After an ambiguous answer, having looked: none of the candidates is
    /// this person, register a new patient (and record that they are not
    /// the candidates). Staff whose role has trace_patients.
    #[arg(long)]
    pub confirm_new: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenderArg {
    Male,
    Female,
    Other,
    Unknown,
}

impl GenderArg {
    fn to_proto(self) -> Gender {
        match self {
            GenderArg::Male => Gender::Male,
            GenderArg::Female => Gender::Female,
            GenderArg::Other => Gender::Other,
            GenderArg::Unknown => Gender::Unknown,
        }
    }
}

/// Calls RegisterPatient.
pub async fn register(
    services: &Services,
    args: RegisterArgs,
) -> anyhow::Result<RegisterPatientResponse> {
    services
        .identity()?
        .register_patient(bearer(
            RegisterPatientRequest {
                confirm_new_patient: args.confirm_new,
                nhs_number: args.nhs_number,
                demographics: Some(Demographics {
                    given_names: args.given,
                    family_name: args.family,
                    birth_date: args.birth_date,
                    gender: args.gender.map_or(Gender::Unspecified, GenderArg::to_proto) as i32,
                    postcode: args.postcode,
                    gp_practice_ods_code: args.gp_practice,
                    ..Default::default()
                }),
            },
            services.token()?,
        )?)
        .await
        .grpc()
}

pub async fn run(services: &Services, command: PatientCommand) -> anyhow::Result<()> {
    match command {
        PatientCommand::Register(args) => print_registered(register(services, args).await?)?,
        PatientCommand::Trace(args) => {
            let matches = services
                .identity()?
                .trace_patient(bearer(args.request(), services.token()?)?)
                .await
                .grpc()?
                .matches;
            if matches.is_empty() {
                eprintln!("No candidates.");
            } else {
                for line in candidate_table(&matches) {
                    out!("{line}");
                }
            }
        }
        PatientCommand::NotSame { id, other, reason } => {
            let marked = services
                .identity()?
                .mark_not_same_person(bearer(
                    MarkNotSamePersonRequest {
                        patient_id: id,
                        other_patient_id: other,
                        reason,
                    },
                    services.token()?,
                )?)
                .await
                .grpc()?;
            out!("created: {}", marked.created);
            if !marked.created {
                eprintln!("These two were already recorded as not the same person.");
            }
        }
        PatientCommand::Get { id } => {
            let patient = services
                .identity()?
                .get_patient(bearer(
                    GetPatientRequest { patient_id: id },
                    services.token()?,
                )?)
                .await
                .grpc()?
                .patient
                .unwrap_or_default();
            print_patient(&patient);
        }
    }
    Ok(())
}

/// RegisterPatient's answer: the outcome in words, the patient, and how a
/// demographic match was made; an ambiguous answer prints its candidates
/// and fails, as nothing was registered.
fn print_registered(registered: RegisterPatientResponse) -> anyhow::Result<()> {
    let outcome = registered.outcome();
    out!(
        "outcome:    {}",
        match outcome {
            RegisterOutcome::Created => "created",
            RegisterOutcome::MatchedNhsNumber => "matched by NHS number",
            RegisterOutcome::MatchedDemographics => "matched by demographics",
            RegisterOutcome::Ambiguous => "ambiguous",
            RegisterOutcome::Unspecified => "unspecified",
        }
    );
    if outcome == RegisterOutcome::Ambiguous {
        if registered.candidates.is_empty() {
            bail!(
                "these details match more than one patient, or one only possibly: nothing was \
                 registered (staff whose role has trace_patients are shown the candidates)"
            );
        }
        for line in candidate_table(&registered.candidates) {
            out!("{line}");
        }
        bail!(
            "these details match the candidates above, so nothing was registered: if none of \
             them is this person, register again with --confirm-new"
        );
    }
    let patient = registered.patient.unwrap_or_default();
    out!("patient_id: {}", patient.patient_id);
    out!("created:    {}", registered.created);
    if outcome == RegisterOutcome::MatchedDemographics
        && let Some(found) = registered.candidates.first()
    {
        out!("score:      {:.3} ({})", found.score, level(found.level));
        out!("fields:     {}", fields(&found.fields));
    }
    match outcome {
        RegisterOutcome::MatchedNhsNumber => {
            eprintln!("This NHS number was already registered: that patient is returned.");
        }
        RegisterOutcome::MatchedDemographics => {
            eprintln!("These details confidently match one registered patient: they are returned.");
        }
        _ => {}
    }
    Ok(())
}

pub(crate) fn level(value: i32) -> &'static str {
    match MatchLevel::try_from(value) {
        Ok(MatchLevel::Match) => "match",
        Ok(MatchLevel::Possible) => "possible",
        _ => "?",
    }
}

/// A field as a few letters, and how it compared: `=` agreed, `~` agreed
/// in part (and how), `≠` disagreed, `?` not compared.
pub(crate) fn fields(fields: &[FieldComparison]) -> String {
    fields
        .iter()
        .map(|f| {
            let name = match f.field.as_str() {
                "nhs_number" => "nhs",
                "given_name" => "given",
                "family_name" => "family",
                "birth_date" => "dob",
                other => other,
            };
            match FieldAgreement::try_from(f.agreement) {
                Ok(FieldAgreement::Agree) => format!("{name}="),
                Ok(FieldAgreement::Partial) => format!("{name}~{}", f.how),
                Ok(FieldAgreement::Disagree) => format!("{name}≠"),
                _ => format!("{name}?"),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line per candidate, best first: id, score, level, the fields and
/// any caution.
fn candidate_table(matches: &[TraceMatch]) -> Vec<String> {
    let width = matches
        .iter()
        .filter_map(|m| m.patient.as_ref().map(|p| p.patient_id.len()))
        .max()
        .unwrap_or(0)
        .max("patient_id".len());
    let mut lines = vec![format!(
        "{:<width$}  {:>5}  {:<8}  fields  (caution)",
        "patient_id", "score", "level"
    )];
    for m in matches {
        let id = m.patient.as_ref().map_or("", |p| p.patient_id.as_str());
        let mut caution = if m.caution.is_empty() {
            String::new()
        } else {
            format!("  ({})", m.caution)
        };
        if !m.resolved_from_patient_id.is_empty() {
            caution.push_str(&format!("  [merged from {}]", m.resolved_from_patient_id));
        }
        lines.push(format!(
            "{id:<width$}  {:>5.3}  {:<8}  {}{caution}",
            m.score,
            level(m.level),
            fields(&m.fields)
        ));
    }
    lines
}

fn print_patient(patient: &Patient) {
    let d = patient.demographics.clone().unwrap_or_default();
    out!("patient_id:  {}", patient.patient_id);
    out!("nhs_number:  {}", patient.nhs_number);
    out!("given:       {}", d.given_names.join(" "));
    out!("family:      {}", d.family_name);
    out!("birth_date:  {}", d.birth_date);
    out!("gender:      {}", labels::gender(d.gender));
    if !d.postcode.is_empty() {
        out!("postcode:    {}", d.postcode);
    }
    out!(
        "created:     {}",
        labels::time(patient.create_time.as_ref())
    );
    out!(
        "updated:     {}",
        labels::time(patient.update_time.as_ref())
    );
    if !patient.superseded_by.is_empty() {
        out!("superseded_by: {}", patient.superseded_by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparison(field: &str, agreement: FieldAgreement, how: &str) -> FieldComparison {
        FieldComparison {
            field: field.into(),
            agreement: agreement as i32,
            how: how.into(),
            weight: 1.0,
        }
    }

    #[test]
    fn a_candidate_is_one_line_with_its_fields_in_short() {
        let lines = candidate_table(&[TraceMatch {
            patient: Some(Patient {
                patient_id: "p-1".into(),
                ..Patient::default()
            }),
            score: 0.8761,
            level: MatchLevel::Possible as i32,
            fields: vec![
                comparison("given_name", FieldAgreement::Partial, "nickname"),
                comparison("family_name", FieldAgreement::Agree, "exact"),
                comparison("birth_date", FieldAgreement::Disagree, ""),
                comparison("postcode", FieldAgreement::NotCompared, ""),
            ],
            caution: "given names differ".into(),
            ..Default::default()
        }]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[1],
            "p-1         0.876  possible  given~nickname family= dob≠ postcode?  \
             (given names differ)"
        );
    }

    #[test]
    fn a_trace_sends_demographics_only_when_some_are_given() {
        let by_number = TraceArgs {
            nhs_number: Some("9434765919".into()),
            family: None,
            given: vec![],
            birth_date: None,
            gender: None,
            postcode: None,
            duplicates_of: None,
            max: None,
        };
        let request = by_number.clone().request();
        assert!(request.demographics.is_none());
        assert_eq!(request.max_results, 0);
        let request = TraceArgs {
            nhs_number: None,
            family: Some("Smith".into()),
            birth_date: Some("1980".into()),
            gender: Some(GenderArg::Female),
            max: Some(5),
            ..by_number
        }
        .request();
        let d = request.demographics.expect("demographics");
        assert_eq!(d.family_name, "Smith");
        assert_eq!(d.gender, Gender::Female as i32);
        assert_eq!(request.max_results, 5);
    }
}
