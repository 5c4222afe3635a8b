//! Who may do what: the predefined roles and the DMTF privilege registry
//! (`Redfish_1.8.0_PrivilegeRegistry.json`, shipped with the service),
//! which maps each resource type and HTTP method to the privilege sets any
//! one of which suffices.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;

pub const PRIVILEGE_REGISTRY_JSON: &str =
    include_str!("../../redfish/Redfish_1.8.0_PrivilegeRegistry.json");

/// The predefined roles; not modifiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Administrator,
    Operator,
    ReadOnly,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Administrator, Role::Operator, Role::ReadOnly];

    pub fn id(self) -> &'static str {
        match self {
            Role::Administrator => "Administrator",
            Role::Operator => "Operator",
            Role::ReadOnly => "ReadOnly",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.id() == id)
    }

    /// The Redfish-defined privileges each predefined role carries.
    pub fn privileges(self) -> &'static [&'static str] {
        match self {
            Role::Administrator => &[
                "Login",
                "ConfigureManager",
                "ConfigureUsers",
                "ConfigureSelf",
                "ConfigureComponents",
            ],
            Role::Operator => &["Login", "ConfigureSelf", "ConfigureComponents"],
            Role::ReadOnly => &["Login", "ConfigureSelf"],
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegistryFile {
    mappings: Vec<Mapping>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Mapping {
    entity: String,
    operation_map: HashMap<String, Vec<PrivilegeSet>>,
    #[serde(default)]
    property_overrides: Vec<PropertyOverride>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PrivilegeSet {
    privilege: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PropertyOverride {
    targets: Vec<String>,
    operation_map: HashMap<String, Vec<PrivilegeSet>>,
}

type Alternatives = Vec<Vec<String>>;

struct Table {
    /// (entity, method) -> alternatives, each a set of privileges all needed.
    operations: HashMap<(String, String), Alternatives>,
    /// (entity, property, method) -> alternatives.
    properties: HashMap<(String, String, String), Alternatives>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let file: RegistryFile = serde_json::from_str(PRIVILEGE_REGISTRY_JSON)
            .expect("the shipped privilege registry parses");
        let mut operations = HashMap::new();
        let mut properties = HashMap::new();
        let flatten = |sets: Vec<PrivilegeSet>| -> Alternatives {
            sets.into_iter().map(|s| s.privilege).collect()
        };
        for mapping in file.mappings {
            for override_ in mapping.property_overrides {
                for (method, sets) in override_.operation_map {
                    let alternatives = flatten(sets);
                    for target in &override_.targets {
                        properties.insert(
                            (mapping.entity.clone(), target.clone(), method.clone()),
                            alternatives.clone(),
                        );
                    }
                }
            }
            for (method, sets) in mapping.operation_map {
                operations.insert((mapping.entity.clone(), method), flatten(sets));
            }
        }
        Table {
            operations,
            properties,
        }
    })
}

fn satisfied(alternatives: &Alternatives, held: &HashSet<&str>, is_self: bool) -> bool {
    alternatives.iter().any(|set| {
        set.iter().all(|privilege| match privilege.as_str() {
            "NoAuth" => true,
            // ConfigureSelf covers only the caller's own account or session.
            "ConfigureSelf" => is_self && held.contains("ConfigureSelf"),
            other => held.contains(other),
        })
    })
}

/// Whether `role` may perform `method` on a resource of type `entity`
/// (`is_self`: the resource is the caller's own account or session).
/// Entities missing from the registry are refused.
pub fn allows(role: Role, entity: &str, method: &str, is_self: bool) -> bool {
    let held: HashSet<&str> = role.privileges().iter().copied().collect();
    table()
        .operations
        .get(&(entity.to_string(), method.to_string()))
        .is_some_and(|alternatives| satisfied(alternatives, &held, is_self))
}

/// Whether `role` may write `property` of `entity` with `method`, where
/// the registry overrides the resource's rule for that property.
pub fn allows_property(
    role: Role,
    entity: &str,
    property: &str,
    method: &str,
    is_self: bool,
) -> bool {
    let held: HashSet<&str> = role.privileges().iter().copied().collect();
    match table()
        .properties
        .get(&(entity.to_string(), property.to_string(), method.to_string()))
    {
        Some(alternatives) => satisfied(alternatives, &held, is_self),
        None => allows(role, entity, method, is_self),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_rules_apply_to_the_predefined_roles() {
        assert!(allows(Role::ReadOnly, "ComputerSystem", "GET", false));
        assert!(!allows(Role::ReadOnly, "ComputerSystem", "PATCH", false));
        assert!(allows(Role::Operator, "ComputerSystem", "PATCH", false));
        assert!(allows(Role::Administrator, "ManagerAccount", "POST", false));
        assert!(!allows(Role::Operator, "ManagerAccount", "POST", false));
        // Own account: readable and password-changeable through ConfigureSelf.
        assert!(allows(Role::ReadOnly, "ManagerAccount", "GET", true));
        assert!(!allows(Role::ReadOnly, "ManagerAccount", "GET", false));
        assert!(allows_property(
            Role::ReadOnly,
            "ManagerAccount",
            "Password",
            "PATCH",
            true
        ));
        assert!(!allows_property(
            Role::ReadOnly,
            "ManagerAccount",
            "Password",
            "PATCH",
            false
        ));
        assert!(!allows(Role::Administrator, "NoSuchThing", "GET", false));
    }
}
