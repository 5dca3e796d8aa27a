//! What a staff role allows beyond its scopes: the role → capabilities map
//! from identity's configuration (`identity.roles`), carried in tokens.

use std::collections::{BTreeMap, BTreeSet};

use sharedcare_kit::access::Capability;

/// Role code → capabilities. Role codes are compared without regard to
/// case (configuration sources may lower-case map keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleMap {
    roles: BTreeMap<String, BTreeSet<Capability>>,
}

impl RoleMap {
    /// Parses capability names; an unknown name is refused as
    /// `(key, message)` with key `<prefix>.<role>`.
    pub fn parse(
        prefix: &str,
        config: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, (String, String)> {
        let mut roles: BTreeMap<String, BTreeSet<Capability>> = BTreeMap::new();
        for (role, names) in config {
            let key = format!("{prefix}.{role}");
            if role.trim().is_empty() {
                return Err((key, "a role code must not be empty".into()));
            }
            let mut caps = BTreeSet::new();
            for name in names {
                let cap = Capability::parse(name.trim()).ok_or_else(|| {
                    (
                        key.clone(),
                        format!(
                            "unknown capability `{name}` (known: {})",
                            Capability::ALL.map(Capability::as_str).join(", ")
                        ),
                    )
                })?;
                caps.insert(cap);
            }
            roles
                .entry(role.trim().to_lowercase())
                .or_default()
                .extend(caps);
        }
        Ok(RoleMap { roles })
    }

    /// Whether the map names `role` (staff may hold only roles it names).
    pub fn knows(&self, role: &str) -> bool {
        self.roles.contains_key(&role.trim().to_lowercase())
    }

    /// The capabilities of `role`; none for a role the map does not name.
    pub fn capabilities(&self, role: &str) -> BTreeSet<Capability> {
        self.roles
            .get(&role.trim().to_lowercase())
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(role, caps)| {
                (
                    (*role).to_owned(),
                    caps.iter().map(|c| (*c).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn roles_map_to_capabilities_whatever_the_case() {
        let roles = RoleMap::parse(
            "identity.roles",
            &map(&[("r8000", &["record_directives", "refer"]), ("R8008", &[])]),
        )
        .expect("valid");
        assert_eq!(
            roles.capabilities("R8000"),
            BTreeSet::from([Capability::RecordDirectives, Capability::Refer])
        );
        assert!(roles.capabilities("R8008").is_empty());
        assert!(roles.capabilities("R9999").is_empty());
    }

    #[test]
    fn an_unknown_capability_is_named_with_its_role() {
        let (key, message) =
            RoleMap::parse("identity.roles", &map(&[("R8000", &["refer", "root"])]))
                .expect_err("unknown");
        assert_eq!(key, "identity.roles.R8000");
        assert!(message.contains("root"), "{message}");
    }
}
