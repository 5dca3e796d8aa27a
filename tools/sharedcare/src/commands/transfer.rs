//! `sharedcare import DIR` and `sharedcare export --patient ID`: a FHIR
//! bulk export (NDJSON, one resource per line) in and out through the
//! public APIs, with the caller's token — so everything imported is
//! consent-checked and audited like any other write.
//!
//! Import: patients go to identity (each given an NHS number from the 999
//! test range, derived from its source id so a re-run finds the same
//! patient), the importing organisation's care relationship goes to consent,
//! and every patient-linked resource goes to records with its references to
//! imported resources rewritten to the platform's ids. Each resource is sent
//! with an idempotency key derived from its source type and id, so a re-run
//! imports nothing twice. The resource text is otherwise kept as it was in
//! the file (references are rewritten in place, never re-serialised).

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, IsTerminal, Write as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sharedcare_cli::ndjson::{self, LineOutcome, ResourceLine, rewrite_references};
use sharedcare_proto::{
    consent::v1::{ListCareRelationshipsRequest, RecordCareRelationshipRequest},
    identity::v1::{Demographics, Gender, RegisterPatientRequest},
    records::v1::{CreateRecordRequest, ExportPatientRequest},
};
use sharedcare_records::domain::SUPPORTED_RESOURCE_TYPES;

use crate::{
    commands::care::KindArg,
    connect::{Services, bearer},
    failure::GrpcResult,
    labels::{PurposeArg, purpose_or_unspecified},
    output::out,
};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A directory of FHIR R4 NDJSON files (a bulk export), e.g.
    /// ../shared/data/synthea-10-patients.
    pub dir: PathBuf,
    /// ODS code of the importing organisation: the caller's own. It is
    /// recorded as caring for each imported patient.
    #[arg(long)]
    pub ods: String,
    /// The kind of care relationship recorded.
    #[arg(long, value_enum, default_value_t = KindArg::RegisteredGp)]
    pub kind: KindArg,
    /// Write each imported resource's source reference and platform
    /// reference (e.g. `Patient/<source id>` → `Patient/<platform id>`) to
    /// this file, tab-separated.
    #[arg(long)]
    pub id_map: Option<PathBuf>,
    /// Resources in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The patient whose record is exported.
    #[arg(long)]
    pub patient: String,
    /// Directory for the NDJSON files, one per resource type (created if
    /// missing; files there are replaced).
    #[arg(long, default_value = "export")]
    pub out: PathBuf,
    /// Purpose of use [default: the token's].
    #[arg(long, value_enum)]
    pub purpose: Option<PurposeArg>,
}

/// Types that are not patient records: they belong to a provider directory.
const DIRECTORY_TYPES: &[&str] = &[
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
];

/// Records' resources in the order they are imported: those others refer to
/// first (an Encounter before what happened in it), so references resolve.
const ORDER: &[&str] = &["Encounter", "Condition", "Observation", "Procedure"];

/// One resource line from the export.
struct Line {
    place: String,
    resource_type: String,
    source_id: String,
    text: String,
    patient: Option<String>,
}

/// A resource sent to records: its platform id and whether it was stored
/// before this run (a retry answered with the first result), or `None` when
/// its patient is not in the export.
type Sent = anyhow::Result<Option<(String, bool)>>;

/// What happened, for the summary.
#[derive(Default)]
struct Tally {
    imported: u64,
    already: u64,
    /// reason → (count, first few places)
    skipped: BTreeMap<String, (u64, Vec<String>)>,
}

impl Tally {
    /// A line that is wrong (not JSON, refused by the platform, ...): said
    /// at once, with its file and line, and counted.
    fn bad(&mut self, reason: impl Into<String>, place: &str) {
        let reason = reason.into();
        eprintln!("{place}: {reason}");
        self.skip(reason, place);
    }

    fn skip(&mut self, reason: impl Into<String>, place: &str) {
        let entry = self.skipped.entry(reason.into()).or_default();
        entry.0 += 1;
        if entry.1.len() < 5 {
            entry.1.push(place.to_owned());
        }
    }
}

/// An NHS number in the 999 test range (never issued to a real person),
/// from the source id and an attempt number, with a valid check digit.
pub fn test_nhs_number(source_id: &str, attempt: u32) -> String {
    let mut n = attempt;
    loop {
        let digest = Sha256::digest(format!("{source_id}/{n}").as_bytes());
        let value = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 1_000_000;
        let mut digits = [9u8; 9];
        for (i, digit) in digits.iter_mut().enumerate().skip(3) {
            *digit = ((value / 10u32.pow(8 - i as u32)) % 10) as u8;
        }
        match crate::demo::nhs::check_digit(&digits) {
            // No check digit exists (or one repeated digit): derive another.
            Some(check) if !digits.iter().all(|d| *d == check) => {
                return digits
                    .iter()
                    .chain(std::iter::once(&check))
                    .map(|d| char::from(b'0' + d))
                    .collect();
            }
            _ => n += 1_000,
        }
    }
}

fn demographics(patient: &Value) -> Option<Demographics> {
    let names = patient.get("name")?.as_array()?;
    let name = names
        .iter()
        .find(|n| n.get("use").and_then(Value::as_str) == Some("official"))
        .or_else(|| names.first())?;
    let given_names = name
        .get("given")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let gender = match patient.get("gender").and_then(Value::as_str) {
        Some("male") => Gender::Male,
        Some("female") => Gender::Female,
        Some("other") => Gender::Other,
        _ => Gender::Unknown,
    };
    Some(Demographics {
        given_names,
        family_name: name.get("family")?.as_str()?.to_owned(),
        birth_date: patient.get("birthDate")?.as_str()?.to_owned(),
        gender: gender as i32,
        // The export's addresses are not UK postcodes.
        postcode: String::new(),
        ..Default::default()
    })
}

fn read_lines(dir: &Path, tally: &mut Tally) -> anyhow::Result<Vec<Line>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("{} has no .ndjson files", dir.display());
    }
    let mut lines = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let reader = std::io::BufReader::new(
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?,
        );
        for (n, text) in reader.split(b'\n').enumerate() {
            let place = format!("{name}:{}", n + 1);
            let text = text.with_context(|| format!("reading {place}"))?;
            match ndjson::parse_line(&text) {
                LineOutcome::Blank => {}
                LineOutcome::Bad(reason) => tally.bad(reason, &place),
                LineOutcome::Skipped(reason) => tally.skip(reason, &place),
                LineOutcome::Resource(ResourceLine {
                    resource_type,
                    source_id,
                    text,
                    patient,
                }) => lines.push(Line {
                    place,
                    resource_type,
                    source_id,
                    text,
                    patient,
                }),
            }
        }
    }
    Ok(lines)
}

/// A progress line on standard error: a bar on a terminal, every tenth
/// otherwise.
struct Progress {
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    terminal: bool,
    reported_tenth: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            last: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            reported_tenth: 0,
        }
    }

    fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    fn tick(&mut self) {
        self.done += 1;
        let tenth = self.done * 10 / self.total.max(1);
        let finished = self.done == self.total;
        if self.terminal {
            if finished || self.last.elapsed() >= Duration::from_millis(100) {
                self.last = Instant::now();
                let filled = (self.done * 30 / self.total.max(1)) as usize;
                eprint!(
                    "\r[{}{}] {}/{} resources, {:.0}/s ",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    self.done,
                    self.total,
                    self.rate()
                );
                if finished {
                    eprintln!();
                }
                let _ = std::io::stderr().flush();
            }
        } else if tenth > self.reported_tenth {
            self.reported_tenth = tenth;
            eprintln!(
                "{}/{} resources ({}%), {:.0}/s",
                self.done,
                self.total,
                tenth * 10,
                self.rate()
            );
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy)]
pub struct Imported {
    pub resources: u64,
    pub seconds: f64,
}

/// The (resourceType, line) of every resource an import would send to
/// records: the bench's raw insert loop stores the same rows.
pub fn record_lines(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut tally = Tally::default();
    let lines = read_lines(dir, &mut tally)?;
    let patients: std::collections::HashSet<&str> = lines
        .iter()
        .filter(|l| l.resource_type == "Patient")
        .map(|l| l.source_id.as_str())
        .collect();
    Ok(lines
        .iter()
        .filter(|l| SUPPORTED_RESOURCE_TYPES.contains(&l.resource_type.as_str()))
        .filter(|l| l.patient.as_deref().is_some_and(|p| patients.contains(p)))
        .map(|l| (l.resource_type.clone(), l.text.clone()))
        .collect())
}

pub async fn import(services: &Services, args: ImportArgs) -> anyhow::Result<Imported> {
    let token = services.token()?.to_owned();
    let mut tally = Tally::default();
    let lines = read_lines(&args.dir, &mut tally)?;
    let started = Instant::now();
    let began = chrono::Utc::now();
    let mut progress = Progress::new(lines.len() as u64);

    // Patients first: identity, then the importing organisation's care.
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut identity = services.identity()?;
    let mut consent = services.consent()?;
    let mut patients = 0;
    for line in lines.iter().filter(|l| l.resource_type == "Patient") {
        progress.tick();
        let value: Value = serde_json::from_str(&line.text)?;
        let Some(demographics) = demographics(&value) else {
            tally.skip(
                "Patient without a name, family name or birth date",
                &line.place,
            );
            continue;
        };
        let mut registered = None;
        for attempt in 0..5 {
            let request = RegisterPatientRequest {
                confirm_new_patient: false,
                nhs_number: test_nhs_number(&line.source_id, attempt),
                demographics: Some(demographics.clone()),
            };
            match identity.register_patient(bearer(request, &token)?).await {
                Ok(r) => {
                    registered = r.into_inner().patient;
                    break;
                }
                // Another person has this number: derive the next one.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => continue,
                Err(s) => {
                    return Err(crate::failure::GrpcError(s))
                        .with_context(|| format!("registering the patient of {}", line.place));
                }
            }
        }
        let Some(patient) = registered else {
            tally.skip("Patient whose test NHS numbers were all taken", &line.place);
            continue;
        };
        // Listing is allowed only to those caring for the patient already.
        let listed = consent
            .list_care_relationships(bearer(
                ListCareRelationshipsRequest {
                    patient_id: patient.patient_id.clone(),
                    page_size: 100,
                    ..Default::default()
                },
                &token,
            )?)
            .await;
        let cares = match listed {
            Ok(r) => r
                .into_inner()
                .relationships
                .iter()
                .any(|r| r.organisation_ods_code == args.ods && r.end_time.is_none()),
            Err(s) if s.code() == tonic::Code::PermissionDenied => false,
            Err(s) => {
                return Err(crate::failure::GrpcError(s))
                    .with_context(|| format!("listing the care relationships of {}", line.place));
            }
        };
        if !cares {
            consent
                .record_care_relationship(bearer(
                    RecordCareRelationshipRequest {
                        patient_id: patient.patient_id.clone(),
                        organisation_ods_code: args.ods.clone(),
                        kind: args.kind.to_proto() as i32,
                        start_time: None,
                        end_time: None,
                        ..Default::default()
                    },
                    &token,
                )?)
                .await
                .grpc()
                .with_context(|| format!("recording {}'s care of {}", args.ods, line.place))?;
        }
        patients += 1;
        for form in ["Patient/", "urn:uuid:"] {
            ids.insert(
                format!("{form}{}", line.source_id),
                format!("Patient/{}", patient.patient_id),
            );
        }
    }

    // Then records, in an order that lets references resolve.
    let mut phases: BTreeMap<usize, Vec<&Line>> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.resource_type != "Patient") {
        if DIRECTORY_TYPES.contains(&line.resource_type.as_str()) {
            progress.tick();
            tally.skip(
                format!(
                    "{}: not a patient record (a provider directory holds it)",
                    line.resource_type
                ),
                &line.place,
            );
            continue;
        }
        if !SUPPORTED_RESOURCE_TYPES.contains(&line.resource_type.as_str()) {
            progress.tick();
            tally.skip(
                format!("{}: not a type records holds", line.resource_type),
                &line.place,
            );
            continue;
        }
        let phase = ORDER
            .iter()
            .position(|t| *t == line.resource_type)
            .unwrap_or(ORDER.len());
        phases.entry(phase).or_default().push(line);
    }
    let records = services.records()?;
    let progress = Arc::new(Mutex::new(progress));
    let tally = Arc::new(Mutex::new(tally));
    for (_, phase) in phases {
        let results: Vec<(&Line, Sent)> = futures::stream::iter(phase)
            .map(|line| {
                let mut records = records.clone();
                let ids = &ids;
                let token = &token;
                async move {
                    let result = async {
                        let Some(patient) = line
                            .patient
                            .as_ref()
                            .and_then(|p| ids.get(&format!("Patient/{p}")))
                        else {
                            return Ok(None);
                        };
                        let patient_id = patient.trim_start_matches("Patient/").to_owned();
                        let request = CreateRecordRequest {
                            patient_id,
                            resource_json: rewrite_references(&line.text, ids),
                            category: 0,
                            purpose: 0,
                            idempotency_key: format!(
                                "import/{}/{}",
                                line.resource_type, line.source_id
                            ),
                        };
                        let record = records
                            .create_record(bearer(request, token)?)
                            .await
                            .grpc()?
                            .record
                            .unwrap_or_default();
                        // A retry is answered with the first result: it
                        // was stored before this import began.
                        let earlier = record.last_updated.as_ref().is_some_and(|t| {
                            (t.seconds, t.nanos)
                                < (began.timestamp(), began.timestamp_subsec_nanos() as i32)
                        });
                        Ok(Some((record.record_id, earlier)))
                    }
                    .await;
                    (line, result)
                }
            })
            .buffer_unordered(usize::from(args.concurrency))
            .inspect(|_| {
                if let Ok(mut p) = progress.lock() {
                    p.tick();
                }
            })
            .collect()
            .await;
        let Ok(mut tally) = tally.lock() else {
            anyhow::bail!("the import's tally was poisoned");
        };
        for (line, result) in results {
            match result {
                Ok(Some((record_id, earlier))) => {
                    if earlier {
                        tally.already += 1;
                    } else {
                        tally.imported += 1;
                    }
                    for form in [format!("{}/", line.resource_type), "urn:uuid:".to_owned()] {
                        ids.insert(
                            format!("{form}{}", line.source_id),
                            format!("{}/{record_id}", line.resource_type),
                        );
                    }
                }
                Ok(None) => tally.skip(
                    format!("{}: its patient is not in this export", line.resource_type),
                    &line.place,
                ),
                Err(e) => {
                    // The server's words: they name the field, never content.
                    let reason = format!("{}: refused: {e:#}", line.resource_type);
                    let reason: String = reason.chars().take(160).collect();
                    tally.bad(reason, &line.place);
                }
            }
        }
    }
    if let Some(path) = &args.id_map {
        let mut map: Vec<(&String, &String)> = ids
            .iter()
            .filter(|(source, _)| !source.starts_with("urn:uuid:"))
            .collect();
        map.sort();
        let text: String = map.iter().map(|(s, p)| format!("{s}\t{p}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let Ok(tally) = tally.lock() else {
        anyhow::bail!("the import's tally was poisoned");
    };
    out!(
        "imported {} resources and {patients} patients from {} in {elapsed:.1} s: {:.0} resources/s",
        tally.imported,
        args.dir.display(),
        tally.imported as f64 / elapsed
    );
    if tally.already > 0 {
        out!(
            "already imported before (not imported again): {}",
            tally.already
        );
    }
    let skipped: u64 = tally.skipped.values().map(|(n, _)| n).sum();
    if skipped > 0 {
        out!("skipped {skipped}:");
        for (reason, (count, places)) in &tally.skipped {
            out!("  {count:>5}  {reason}  (e.g. {})", places.join(", "));
        }
    }
    Ok(Imported {
        resources: tally.imported,
        seconds: elapsed,
    })
}

pub async fn export(services: &Services, args: ExportArgs) -> anyhow::Result<()> {
    let token = services.token()?;
    let mut stream = services
        .records()?
        .export_patient(bearer(
            ExportPatientRequest {
                patient_id: args.patient.clone(),
                purpose: purpose_or_unspecified(args.purpose),
            },
            token,
        )?)
        .await
        .grpc()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut files: BTreeMap<String, (std::io::BufWriter<std::fs::File>, u64)> = BTreeMap::new();
    while let Some(line) = stream.message().await.map_err(crate::failure::GrpcError)? {
        if !line.resource_type.bytes().all(|b| b.is_ascii_alphabetic()) {
            anyhow::bail!("records sent a resource type that is not a name");
        }
        let (file, count) = match files.entry(line.resource_type.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let path = args.out.join(format!("{}.ndjson", line.resource_type));
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                e.insert((std::io::BufWriter::new(file), 0))
            }
        };
        file.write_all(line.resource_json.as_bytes())?;
        file.write_all(b"\n")?;
        *count += 1;
    }
    let mut total = 0;
    for (resource_type, (mut file, count)) in files {
        file.flush()?;
        total += count;
        out!(
            "{count:>6}  {}",
            args.out.join(format!("{resource_type}.ndjson")).display()
        );
    }
    out!("exported {total} resources of patient {}", args.patient);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_nhs_numbers_are_valid_and_in_the_999_range() {
        for id in ["a", "b", "129c6ac7-8d06-89de-ad63-0204a93e76c3"] {
            for attempt in 0..3 {
                let n = test_nhs_number(id, attempt);
                assert_eq!(n.len(), 10);
                assert!(n.starts_with("999"));
                let sum: u32 = n[..9]
                    .bytes()
                    .zip((2..=10).rev())
                    .map(|(b, w)| u32::from(b - b'0') * w)
                    .sum();
                let check = (11 - sum % 11) % 11;
                assert_eq!(u32::from(n.as_bytes()[9] - b'0'), check, "{n}");
            }
        }
        assert_eq!(test_nhs_number("a", 0), test_nhs_number("a", 0));
        assert_ne!(test_nhs_number("a", 0), test_nhs_number("a", 1));
    }
}
