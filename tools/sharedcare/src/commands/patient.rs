//! `sharedcare patient`: register a patient (or find the one already
//! registered with that NHS number) and read one back.

use clap::{Subcommand, ValueEnum};
use sharedcare_proto::identity::v1::{
    Demographics, Gender, GetPatientRequest, Patient, RegisterPatientRequest,
    RegisterPatientResponse,
};

use crate::output::out;
use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
    labels,
};

#[derive(Debug, Subcommand)]
pub enum PatientCommand {
    /// Register a patient; prints the id and whether it was created.
    Register(RegisterArgs),
    /// Show a patient by id.
    Get {
        /// Patient id, as returned by `patient register`.
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RegisterArgs {
    /// NHS number; spaces are allowed ("943 476 5919").
    #[arg(long)]
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
                confirm_new_patient: false,
                nhs_number: args.nhs_number,
                demographics: Some(Demographics {
                    given_names: args.given,
                    family_name: args.family,
                    birth_date: args.birth_date,
                    gender: args.gender.map_or(Gender::Unspecified, GenderArg::to_proto) as i32,
                    postcode: args.postcode,
                }),
            },
            services.token()?,
        )?)
        .await
        .grpc()
}

pub async fn run(services: &Services, command: PatientCommand) -> anyhow::Result<()> {
    match command {
        PatientCommand::Register(args) => {
            let registered = register(services, args).await?;
            let patient = registered.patient.unwrap_or_default();
            out!("patient_id: {}", patient.patient_id);
            out!("created:    {}", registered.created);
            if !registered.created {
                eprintln!("This NHS number was already registered: that patient is returned.");
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
