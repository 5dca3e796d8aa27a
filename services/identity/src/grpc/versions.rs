//! UpdateDemographics and ListPatientVersions: demographics as versions,
//! each change kept, a restricted record's withheld details left alone by
//! those who may not see them.

use sharedcare_kit::{
    Error,
    access::{Grant, Patients},
    auth::Principal as Caller,
};
use sharedcare_proto::{
    audit::v1::{Action, Outcome},
    common::v1::Purpose,
    identity::v1 as pb,
};

use super::{
    IdentityGrpc, check_registration_change, demographics_from_pb, may_change_registration,
    may_see_restricted, patient_access, patient_to_pb, required_id,
};
use crate::{
    domain::{Demographics, Patient},
    store::refusals,
};

/// Versions ListPatientVersions returns at most.
const MAX_VERSIONS: usize = 100;

/// What a caller who may not see a restricted record's details sends back
/// cannot hold them: those stay as they are.
fn keep_withheld(current: &Demographics, mut given: Demographics) -> Demographics {
    given.postcode = current.postcode.clone();
    given.address_lines = current.address_lines.clone();
    given.telecom = current.telecom.clone();
    given.gp_practice = current.gp_practice.clone();
    given
}

impl IdentityGrpc {
    pub(super) async fn update_demographics_for(
        &self,
        grant: &Grant,
        req: pb::UpdateDemographicsRequest,
    ) -> Result<pb::UpdateDemographicsResponse, Error> {
        let caller = &grant.principal;
        let id = required_id("patient_id", &req.patient_id)?;
        if req.if_match < 1 {
            return Err(Error::invalid(
                "if_match",
                "is required: the version being replaced (Patient.version)",
            ));
        }
        let d = req
            .demographics
            .ok_or_else(|| Error::invalid("demographics", "is required"))?;
        let now = chrono::Utc::now();
        let given = demographics_from_pb("demographics", &d, now.date_naive())?;
        let purpose = caller.purpose_for("purpose", Purpose::Unspecified as i32)?;
        let access = patient_access(caller, &id, Action::Update, purpose);
        // Consent before NOT_FOUND, as for a read.
        let decision_id = self.decide_read(grant, &access).await?;
        let Some(current) = self.store.get_patient(&id).await? else {
            self.audit(&access, Outcome::Failed, "NOT_FOUND", &decision_id)
                .await?;
            return Err(refusals::unknown("patient_id"));
        };
        let demographics = if current.demographics.restricted && !may_see_restricted(caller) {
            if !given.restricted {
                return Err(Error::failed_precondition(
                    "demographics.restricted: only a role with view_restricted lifts a \
                     restriction",
                ));
            }
            keep_withheld(&current.demographics, given)
        } else {
            given
        };
        if let Err(refused) = check_registration_change(
            caller,
            "demographics.gp_practice_ods_code",
            current.demographics.gp_practice.as_ref(),
            demographics.gp_practice.as_ref(),
        ) {
            return Err(self
                .refuse(&access, refused, "NOT_OWN_ORGANISATION", &decision_id)
                .await);
        }
        let updated = Patient {
            demographics,
            updated_at: now,
            version: req.if_match + 1,
            ..current
        };
        let event = access.event(Outcome::Success, "", &decision_id);
        let stored = self.store.update_patient(updated, event).await?;
        self.peers.outbox.wake();
        self.registrations.wake();
        Ok(pb::UpdateDemographicsResponse {
            patient: Some(patient_to_pb(stored, caller)),
        })
    }

    /// A practice registering a patient it found registers them with
    /// itself: when the request names the caller's own practice, the caller
    /// may make that registration, and the patient is registered elsewhere
    /// or nowhere, the found patient's next version carries the practice
    /// (audited as a change) and consent hears of it. Otherwise the patient
    /// is returned as found, as any find does.
    pub(super) async fn register_found_with_practice(
        &self,
        caller: &Caller,
        purpose: Purpose,
        found: Patient,
        given: &Demographics,
    ) -> Result<Patient, Error> {
        let Some(practice) = given.gp_practice.as_ref() else {
            return Ok(found);
        };
        // A change may race another: read again and retry, a few times.
        let mut found = found;
        for _ in 0..3 {
            let current = found.demographics.gp_practice.as_ref();
            if current == Some(practice)
                || (found.demographics.restricted && !may_see_restricted(caller))
                || !may_change_registration(caller, current, Some(practice))
            {
                return Ok(found);
            }
            let now = chrono::Utc::now();
            let registered = Patient {
                demographics: Demographics {
                    gp_practice: Some(practice.clone()),
                    ..found.demographics.clone()
                },
                updated_at: now,
                version: found.version + 1,
                ..found.clone()
            };
            let event = patient_access(caller, &found.id, Action::Update, purpose).event(
                Outcome::Success,
                "GP_REGISTRATION",
                "",
            );
            match self.store.update_patient(registered, event).await {
                Ok(stored) => {
                    self.peers.outbox.wake();
                    self.registrations.wake();
                    return Ok(stored);
                }
                Err(e) if e.code == sharedcare_kit::error::Code::FailedPrecondition => {
                    found = self
                        .store
                        .get_patient(&found.id)
                        .await?
                        .ok_or_else(|| refusals::unknown("patient_id"))?;
                    found = self.current(found).await?.0;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::unavailable(
            "the patient changed while being registered with the practice; try again",
        ))
    }

    pub(super) async fn list_versions_for(
        &self,
        grant: &Grant,
        req: pb::ListPatientVersionsRequest,
    ) -> Result<pb::ListPatientVersionsResponse, Error> {
        let caller = &grant.principal;
        let id = required_id("patient_id", &req.patient_id)?;
        let purpose = caller.purpose_for("purpose", Purpose::Unspecified as i32)?;
        let access = patient_access(caller, &id, Action::Read, purpose);
        let decision_id = match grant.patients {
            Patients::Own => {
                grant.check_own(&id)?;
                String::new()
            }
            _ => self.decide_read(grant, &access).await?,
        };
        let versions = self.store.patient_versions(&id, MAX_VERSIONS).await?;
        if versions.is_empty() {
            self.audit(&access, Outcome::Failed, "NOT_FOUND", &decision_id)
                .await?;
            return Err(refusals::unknown("patient_id"));
        }
        self.audit(&access, Outcome::Success, "", &decision_id)
            .await?;
        Ok(pb::ListPatientVersionsResponse {
            versions: versions
                .into_iter()
                .map(|p| patient_to_pb(p, caller))
                .collect(),
        })
    }
}
