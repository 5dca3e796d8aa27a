//! Matching over gRPC: TracePatient, RegisterPatient's find-or-create and
//! MarkNotSamePerson. The domain scores (`domain::matching`); this module
//! finds candidates, decides what each kind of caller may be shown, audits
//! what was shown and translates.

use std::collections::BTreeSet;

use sharedcare_kit::{
    Error,
    access::{Capability, Grant},
    auth::Principal as Caller,
};
use sharedcare_proto::{
    audit::v1::{Action, Outcome},
    common::v1::{PrincipalKind, Purpose},
    identity::v1 as pb,
};

use super::{
    IdentityGrpc, gender_from_pb, patient_access, patient_to_pb, required_id, two_patient_ids,
};
use crate::domain::{
    Demographics, NhsNumber, NotSamePerson, Patient,
    matching::{
        Agreement, Field, MatchScore, PairLevel, Person, PreparedPerson, Ranked, blocking_keys,
        rank, unique_match,
    },
    plain_text,
};
use crate::store::refusals;

/// Most candidates scored for one trace: blocking keys are narrow (a few
/// per name, date and place), so more than this means keys too common to
/// tell people apart, and the best are among the first anyway.
const MAX_CANDIDATES: usize = 1000;
/// Candidates returned when a trace does not say.
const DEFAULT_RESULTS: usize = 10;
/// The most a trace returns (staff).
const MAX_RESULTS: usize = 50;
const MAX_REASON_CHARS: usize = 200;

fn field_name(field: Field) -> &'static str {
    match field {
        Field::NhsNumber => "nhs_number",
        Field::GivenName => "given_name",
        Field::FamilyName => "family_name",
        Field::BirthDate => "birth_date",
        Field::Gender => "gender",
        Field::Postcode => "postcode",
    }
}

fn agreement_to_pb(agreement: Agreement) -> pb::FieldAgreement {
    match agreement {
        Agreement::Agree => pb::FieldAgreement::Agree,
        Agreement::Partial => pb::FieldAgreement::Partial,
        Agreement::Disagree => pb::FieldAgreement::Disagree,
        Agreement::NotCompared => pb::FieldAgreement::NotCompared,
    }
}

/// A candidate as found: the patient standing for it now, and the id of
/// the merged patient whose details matched, if that was one.
pub(super) type Candidate = (Patient, Option<String>);

/// A scored candidate as the caller sees it: score, level and every
/// field's part in it.
/// A restricted record's postcode comparison is withheld with its postcode.
fn scored_to_pb(
    (patient, resolved_from): Candidate,
    score: &MatchScore,
    caller: &Caller,
) -> pb::TraceMatch {
    let patient = patient_to_pb(patient, caller);
    let withheld = patient.details_withheld;
    pb::TraceMatch {
        resolved_from_patient_id: resolved_from.unwrap_or_default(),
        patient: Some(patient),
        score: score.score,
        level: match score.level() {
            PairLevel::Match => pb::MatchLevel::Match,
            PairLevel::Possible | PairLevel::NoMatch => pb::MatchLevel::Possible,
        } as i32,
        fields: score
            .fields
            .iter()
            .filter(|f| !(withheld && f.field == Field::Postcode))
            .map(|f| pb::FieldComparison {
                field: field_name(f.field).into(),
                agreement: agreement_to_pb(f.agreement) as i32,
                how: f.how.into(),
                weight: f.weight,
            })
            .collect(),
        caution: score.veto.unwrap_or_default().into(),
    }
}

/// The patient an NHS number traced alone found: exact on the number, the
/// only field compared.
fn exact_number_to_pb((patient, resolved_from): Candidate, caller: &Caller) -> pb::TraceMatch {
    pb::TraceMatch {
        resolved_from_patient_id: resolved_from.unwrap_or_default(),
        patient: Some(patient_to_pb(patient, caller)),
        score: 1.0,
        level: pb::MatchLevel::Match as i32,
        fields: vec![pb::FieldComparison {
            field: field_name(Field::NhsNumber).into(),
            agreement: pb::FieldAgreement::Agree as i32,
            how: "exact".into(),
            weight: 0.0,
        }],
        caution: String::new(),
    }
}

/// May this caller see candidates and choose among them: staff with the
/// `trace_patients` capability. Anyone else gets a unique match or none.
fn may_choose(caller: &Caller) -> bool {
    caller.kind == PrincipalKind::Staff && caller.has(Capability::TracePatients)
}

fn nhs_number_if_given(field: &str, input: &str) -> Result<Option<NhsNumber>, Error> {
    if input.trim().is_empty() {
        Ok(None)
    } else {
        NhsNumber::parse(field, input).map(Some)
    }
}

/// What a trace's `demographics` ask about.
fn query_person(
    d: &pb::Demographics,
    nhs_number: Option<NhsNumber>,
    today: chrono::NaiveDate,
) -> Result<Person, Error> {
    Person::parse_query(
        "demographics",
        &d.given_names,
        &d.family_name,
        &d.birth_date,
        gender_from_pb("demographics.gender", d.gender)?,
        &d.postcode,
        nhs_number,
        today,
    )
}

/// Whether a registered patient may be the person registering under a
/// new NHS number (a mistyped or borrowed one): a confident match with no
/// name or birth date disagreeing. A valid number of their own is strong
/// evidence of someone else, so anything less (a new surname, a twin) is
/// not held up for a person to look at.
fn may_be_under_another_number(candidate: &Ranked<Candidate>) -> bool {
    candidate.level() == PairLevel::Match
        && !candidate.score.fields.iter().any(|f| {
            matches!(
                f.field,
                Field::GivenName | Field::FamilyName | Field::BirthDate
            ) && f.agreement == Agreement::Disagree
        })
}

/// How RegisterPatient's find step came out.
pub(super) enum Found {
    /// The patient registered with this NHS number, details consistent
    /// (or the one it was merged into).
    ByNhsNumber(Patient),
    /// The one confident demographic match.
    ByDemographics(Ranked<Candidate>),
    /// For a person to choose among; nothing may be created automatically.
    Ambiguous(Vec<Ranked<Candidate>>),
    /// No one: create (the caller has an NHS number for them).
    New { apart: Vec<String> },
}

impl IdentityGrpc {
    /// The patients sharing a blocking key with `query`, ranked, each as the
    /// patient standing for it now (a merged patient's details still find
    /// the survivor, once), leaving out the ids in `exclude`.
    async fn ranked_candidates(
        &self,
        query: &PreparedPerson,
        exclude: &BTreeSet<String>,
    ) -> Result<Vec<Ranked<Candidate>>, Error> {
        let candidates = self
            .store
            .candidates(&blocking_keys(query), MAX_CANDIDATES)
            .await?;
        let ranked = rank(
            query,
            candidates.into_iter().map(|p| {
                let person = p.person();
                (p, person)
            }),
        );
        let current = self
            .current_of_each(ranked.iter().map(|r| r.item.clone()).collect())
            .await?;
        let mut seen = BTreeSet::new();
        Ok(ranked
            .into_iter()
            .zip(current)
            .filter(|(_, (p, _))| !exclude.contains(&p.id) && seen.insert(p.id.clone()))
            .map(|(r, candidate)| Ranked {
                item: candidate,
                score: r.score,
            })
            .collect())
    }

    /// Puts every patient shown in `matches` on their access report (SEARCH
    /// Patient), durable before the answer; UNAVAILABLE if it cannot be.
    async fn audit_shown(
        &self,
        caller: &Caller,
        purpose: Purpose,
        matches: &[pb::TraceMatch],
    ) -> Result<(), Error> {
        let events = matches.iter().filter_map(|m| m.patient.as_ref()).map(|p| {
            patient_access(caller, &p.patient_id, Action::Search, purpose).event(
                Outcome::Success,
                "",
                "",
            )
        });
        // Recorded together, so the outbox commits them as one group.
        futures::future::try_join_all(
            events.map(|e| async move { self.peers.outbox.record(&e).await }),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn trace(
        &self,
        grant: &Grant,
        req: pb::TracePatientRequest,
    ) -> Result<pb::TracePatientResponse, Error> {
        let caller = &grant.principal;
        let chooser = may_choose(caller);
        let max_results = match req.max_results {
            0 => DEFAULT_RESULTS,
            n @ 1..=50 => n as usize,
            _ => {
                return Err(Error::invalid(
                    "max_results",
                    format!("must be between 1 and {MAX_RESULTS} (0 for {DEFAULT_RESULTS})"),
                ));
            }
        };
        // An application acting alone sees one confident match at most.
        let max_results = if chooser { max_results } else { 1 };
        let purpose = caller.purpose_for("purpose", Purpose::Unspecified as i32)?;
        let today = chrono::Utc::now().date_naive();
        let nhs_number = nhs_number_if_given("nhs_number", &req.nhs_number)?;
        let duplicates_of = req.duplicates_of_patient_id.trim();
        let matches: Vec<pb::TraceMatch> = if !duplicates_of.is_empty() {
            if nhs_number.is_some() || req.demographics.is_some() {
                return Err(Error::invalid(
                    "duplicates_of_patient_id",
                    "is exclusive with nhs_number and demographics",
                ));
            }
            if !chooser {
                return Err(Error::permission_denied(
                    "duplicates_of_patient_id: finding duplicates is for staff with the \
                     trace_patients capability",
                )
                .with_reason("ACCESS_RULE"));
            }
            let id = required_id("duplicates_of_patient_id", duplicates_of)?;
            let patient = self
                .store
                .get_patient(&id)
                .await?
                .ok_or_else(|| refusals::unknown("duplicates_of_patient_id"))?;
            let mut exclude: BTreeSet<String> = self
                .store
                .not_same_person_links(&id)
                .await?
                .iter()
                .filter_map(|l| l.other(&id).map(str::to_owned))
                .collect();
            exclude.insert(id);
            // The duplicates of the patient standing for it now.
            let (patient, _) = self.current(patient).await?;
            exclude.insert(patient.id.clone());
            let query = PreparedPerson::new(patient.person());
            self.ranked_candidates(&query, &exclude)
                .await?
                .into_iter()
                .take(max_results)
                .map(|r| scored_to_pb(r.item, &r.score, caller))
                .collect()
        } else if let Some(d) = &req.demographics {
            let query = PreparedPerson::new(query_person(d, nhs_number, today)?);
            let ranked = self.ranked_candidates(&query, &BTreeSet::new()).await?;
            if chooser {
                ranked
                    .into_iter()
                    .take(max_results)
                    .map(|r| scored_to_pb(r.item, &r.score, caller))
                    .collect()
            } else {
                unique_match(&ranked)
                    .map(|r| scored_to_pb(r.item.clone(), &r.score, caller))
                    .into_iter()
                    .collect()
            }
        } else if let Some(nhs) = nhs_number {
            if !chooser {
                return Err(Error::invalid(
                    "demographics",
                    "is required with nhs_number unless staff with the trace_patients \
                     capability trace",
                ));
            }
            match self.store.find_patient_by_nhs_number(&nhs).await? {
                Some(p) => vec![exact_number_to_pb(self.current(p).await?, caller)],
                None => Vec::new(),
            }
        } else {
            return Err(Error::invalid(
                "demographics",
                "give nhs_number, demographics or duplicates_of_patient_id",
            ));
        };
        self.audit_shown(caller, purpose, &matches).await?;
        Ok(pb::TracePatientResponse { matches })
    }

    /// Whether details given with a registered NHS number are that
    /// patient's; if not, FAILED_PRECONDITION revealing nothing stored, and
    /// the attempt is on the patient's access report.
    pub(super) async fn check_registered_details(
        &self,
        caller: &Caller,
        purpose: Purpose,
        registered: &Patient,
        given: &Demographics,
    ) -> Result<(), Error> {
        if registered.demographics.matches(given) {
            return Ok(());
        }
        let access = patient_access(caller, &registered.id, Action::Read, purpose);
        Err(self
            .refuse(
                &access,
                Error::failed_precondition("this NHS number is registered with other details")
                    .with_reason("DETAILS_DO_NOT_MATCH"),
                "DETAILS_DO_NOT_MATCH",
                "",
            )
            .await)
    }

    /// RegisterPatient's find step. An NHS number on file decides by
    /// itself (consistent details, or FAILED_PRECONDITION); otherwise the
    /// demographics are matched without it: with a new NHS number someone
    /// the demographics confidently match on every name and the birth date
    /// may be this person under a mistyped number, so a person decides;
    /// without one a unique confident match is the patient and anything
    /// else is ambiguous.
    pub(super) async fn find_registered(
        &self,
        caller: &Caller,
        purpose: Purpose,
        nhs_number: Option<&NhsNumber>,
        given: &Demographics,
    ) -> Result<Found, Error> {
        if let Some(nhs) = nhs_number
            && let Some(existing) = self.store.find_patient_by_nhs_number(nhs).await?
        {
            self.check_registered_details(caller, purpose, &existing, given)
                .await?;
            return Ok(Found::ByNhsNumber(self.current(existing).await?.0));
        }
        let query = PreparedPerson::new(Person::from_demographics(given, None));
        let ranked = self.ranked_candidates(&query, &BTreeSet::new()).await?;
        if nhs_number.is_some() {
            if ranked.iter().any(may_be_under_another_number) {
                return Ok(Found::Ambiguous(ranked));
            }
            return Ok(Found::New { apart: Vec::new() });
        }
        if let Some(only) = unique_match(&ranked) {
            return Ok(Found::ByDemographics(only.clone()));
        }
        if ranked.is_empty() {
            return Err(Error::failed_precondition(
                "nhs_number: no registered patient matches these details, and a new patient \
                 needs an NHS number",
            )
            .with_reason("NO_MATCH"));
        }
        Ok(Found::Ambiguous(ranked))
    }

    /// The candidates an AMBIGUOUS answer shows (audited), or none for a
    /// caller who may not choose.
    pub(super) async fn show_candidates(
        &self,
        caller: &Caller,
        purpose: Purpose,
        ranked: Vec<Ranked<Candidate>>,
    ) -> Result<Vec<pb::TraceMatch>, Error> {
        if !may_choose(caller) {
            return Ok(Vec::new());
        }
        let shown: Vec<pb::TraceMatch> = ranked
            .into_iter()
            .take(MAX_RESULTS)
            .map(|r| scored_to_pb(r.item, &r.score, caller))
            .collect();
        self.audit_shown(caller, purpose, &shown).await?;
        Ok(shown)
    }

    /// A confident demographic match as RegisterPatient explains it.
    pub(super) fn explain(found: &Ranked<Candidate>, caller: &Caller) -> pb::TraceMatch {
        scored_to_pb(found.item.clone(), &found.score, caller)
    }

    /// Whether `confirm_new_patient` may be honoured for this caller.
    pub(super) fn check_may_confirm(caller: &Caller) -> Result<(), Error> {
        if may_choose(caller) {
            Ok(())
        } else {
            Err(Error::permission_denied(
                "confirm_new_patient: only staff with the trace_patients capability decide \
                 that candidates are other people",
            )
            .with_reason("ACCESS_RULE"))
        }
    }

    pub(super) async fn mark_not_same(
        &self,
        grant: &Grant,
        req: pb::MarkNotSamePersonRequest,
    ) -> Result<pb::MarkNotSamePersonResponse, Error> {
        let caller = &grant.principal;
        let (a, b) = two_patient_ids(
            ("patient_id", &req.patient_id),
            ("other_patient_id", &req.other_patient_id),
        )?;
        let reason = plain_text("reason", &req.reason, MAX_REASON_CHARS)?
            .ok_or_else(|| Error::invalid("reason", "is required"))?;
        for (field, id) in [("patient_id", &a), ("other_patient_id", &b)] {
            if self.store.get_patient(id).await?.is_none() {
                return Err(refusals::unknown(field));
            }
        }
        let purpose = caller.purpose_for("purpose", Purpose::Unspecified as i32)?;
        let audit = [&a, &b]
            .into_iter()
            .map(|id| {
                patient_access(caller, id, Action::Update, purpose).event(
                    Outcome::Success,
                    "NOT_SAME_PERSON",
                    "",
                )
            })
            .collect();
        let link = NotSamePerson::new(&a, &b, &reason, &caller.id, chrono::Utc::now());
        let created = self.store.mark_not_same_person(link, audit).await?;
        if created {
            self.peers.outbox.wake();
        }
        Ok(pb::MarkNotSamePersonResponse { created })
    }
}
