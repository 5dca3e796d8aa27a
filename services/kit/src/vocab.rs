//! The codes the platform records, in words a patient can read: role codes
//! and the reason codes of decisions and refusals. Access reports use them;
//! a code with no words here is shown as itself.

/// The national RBAC roles identity's default role map names, and the
/// platform's own roles. A deployment's other roles are shown by code.
pub fn role_name(code: &str) -> Option<&'static str> {
    Some(match code.to_ascii_uppercase().as_str() {
        "R8000" => "Clinical Practitioner",
        "R8001" => "Nurse",
        "R8003" => "Health Professional",
        "R8004" => "Healthcare Student",
        "R8008" => "Admin and Clinical Support",
        "PRIVACY-OFFICER" => "Privacy Officer",
        "PLATFORM-AUDITOR" => "Platform Auditor",
        "ADMIN" => "Platform Administrator",
        "SERVICE" => "Platform Service",
        _ => return None,
    })
}

/// Why an access was allowed or refused, as a clause: "… allowed: <words>".
pub fn reason_text(code: &str) -> Option<&'static str> {
    Some(match code {
        // consent's decisions
        "PATIENT_OWN_RECORD" => "it is the patient's own record",
        "NOT_THE_PATIENT" => "only the patient may see it for patient access",
        "PATIENT_DIRECTIVE_DENY" => "the patient has said no",
        "PATIENT_DIRECTIVE_PERMIT" => "the patient has said yes",
        "CARE_RELATIONSHIP" => "they are caring for the patient",
        "NO_CARE_RELATIONSHIP" => "they are not caring for the patient",
        "NO_LAWFUL_BASIS" => "there is no lawful basis for this purpose",
        "BREAK_GLASS_UNAVAILABLE" => "emergency access is not available to them",
        "BREAK_GLASS" => "they used emergency access (break-glass) and gave a reason",
        "BREAK_GLASS_GRANT" => "they had used emergency access (break-glass) and it had not lapsed",
        "BREAK_GLASS_REFUSED" => "emergency access does not override the patient's wishes",
        "RELATIONSHIP_SCOPE" => "their kind of care does not cover that part of the record",
        "NATIONAL_OPT_OUT" => "the patient has registered a National Data Opt-out",
        // refusals before consent is asked
        "ACCESS_RULE" | "NO_ACCESS_RULE" => "their role does not allow it",
        "MISSING_SCOPE" => "their access token does not allow it",
        "NOT_OWN_ORGANISATION" => "it belongs to another organisation",
        "NOT_OWN_PATIENT" => "it is another patient's record",
        "NO_ORGANISATION" => "they act for no organisation",
        "PURPOSE_NOT_PERMITTED" => "they may not act for that purpose",
        "DETAILS_DO_NOT_MATCH" => "the details given did not match",
        "NOT_FOUND" => "there was nothing to find",
        // changes to consent records
        "ENDED" => "the care relationship was ended",
        "REVOKED" => "the directive was withdrawn",
        "LISTED" => "the list was read",
        "patient" => "recorded by the patient",
        "clinician" => "recorded by a clinician on the patient's behalf",
        "OPT_OUT_CHANGED" => "the patient's National Data Opt-out was changed",
        // the patient index
        "NOT_SAME_PERSON" => "they recorded that another patient is not the same person",
        "MERGED" => "two records of the patient were merged into one",
        "UNMERGED" => "a merge of two records made in error was undone",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_words_and_unknown_codes_have_none() {
        assert_eq!(role_name("r8000"), Some("Clinical Practitioner"));
        assert_eq!(role_name("R9999"), None);
        assert_eq!(
            reason_text("CARE_RELATIONSHIP"),
            Some("they are caring for the patient")
        );
        assert_eq!(reason_text("SOMETHING_NEW"), None);
    }
}
