//! What each kind of care relationship lets its organisation see, by record
//! category: configuration, not code. A care-home placement or a council's
//! social-care team sees social care (and what the map gives it), not mental
//! or sexual health — unless the patient permits it with a directive.

use std::collections::{BTreeMap, HashMap};

use super::{CareRelationshipKind, RecordCategory};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationshipScopes {
    covers: HashMap<CareRelationshipKind, Vec<RecordCategory>>,
}

impl Default for RelationshipScopes {
    /// Clinical relationships see every category; a care home sees the
    /// general record and social care; a social-care team social care and
    /// safeguarding.
    fn default() -> Self {
        use CareRelationshipKind as K;
        use RecordCategory as C;
        let all = vec![
            C::General,
            C::SexualHealth,
            C::MentalHealth,
            C::Safeguarding,
            C::SocialCare,
        ];
        RelationshipScopes {
            covers: HashMap::from([
                (K::RegisteredGp, all.clone()),
                (K::HospitalEpisode, all.clone()),
                (K::Referral, all.clone()),
                (K::CommunityCare, all),
                (K::CareHomePlacement, vec![C::General, C::SocialCare]),
                (K::SocialCareTeam, vec![C::SocialCare, C::Safeguarding]),
            ]),
        }
    }
}

impl RelationshipScopes {
    /// The defaults with each kind named in `overrides` (by its stored name,
    /// e.g. `care_home_placement`) given exactly the categories listed. The
    /// error names the key that is wrong.
    pub fn with_overrides(overrides: &BTreeMap<String, Vec<String>>) -> Result<Self, String> {
        let mut scopes = RelationshipScopes::default();
        for (kind, categories) in overrides {
            let parsed = CareRelationshipKind::from_stored(kind).ok_or_else(|| {
                let known: Vec<&str> = CareRelationshipKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect();
                format!(
                    "{kind}: not a relationship kind (known: {})",
                    known.join(", ")
                )
            })?;
            let categories = categories
                .iter()
                .map(|c| {
                    RecordCategory::from_stored(c)
                        .ok_or_else(|| format!("{kind}: `{c}` is not a record category"))
                })
                .collect::<Result<Vec<_>, String>>()?;
            scopes.covers.insert(parsed, categories);
        }
        Ok(scopes)
    }

    /// Whether a relationship of `kind` lets its organisation see `category`.
    pub fn covers(&self, kind: CareRelationshipKind, category: RecordCategory) -> bool {
        self.covers
            .get(&kind)
            .is_some_and(|categories| categories.contains(&category))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_care_home_sees_social_care_not_mental_health_and_config_can_change_it() {
        let scopes = RelationshipScopes::default();
        use CareRelationshipKind as K;
        use RecordCategory as C;
        assert!(scopes.covers(K::CareHomePlacement, C::SocialCare));
        assert!(!scopes.covers(K::CareHomePlacement, C::MentalHealth));
        assert!(!scopes.covers(K::SocialCareTeam, C::SexualHealth));
        assert!(scopes.covers(K::RegisteredGp, C::SexualHealth));
        let changed = RelationshipScopes::with_overrides(&BTreeMap::from([(
            "care_home_placement".to_owned(),
            vec!["social_care".to_owned(), "mental_health".to_owned()],
        )]))
        .expect("valid");
        assert!(changed.covers(K::CareHomePlacement, C::MentalHealth));
        assert!(!changed.covers(K::CareHomePlacement, C::General));
        for (key, bad) in [("care_home", "general"), ("care_home_placement", "secret")] {
            let err = RelationshipScopes::with_overrides(&BTreeMap::from([(
                key.to_owned(),
                vec![bad.to_owned()],
            )]))
            .expect_err("bad");
            assert!(err.starts_with(key), "{err}");
        }
    }
}
