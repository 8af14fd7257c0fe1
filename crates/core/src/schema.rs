//! The schema: which collections exist, which service each belongs to, and what they hold.

use crate::ids::{CollectionName, ServiceName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// What a collection stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CollectionKind {
    /// Small values (≤ the record limit), stored in the region's store.
    #[default]
    Records,
    /// Large objects streamed into the region's object store; the record holds their metadata.
    Blobs,
}

/// One collection's declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    pub service: ServiceName,
    #[serde(default)]
    pub kind: CollectionKind,
    /// Whether the collection holds personal data (all reference collections do).
    #[serde(default = "personal_default")]
    pub personal: bool,
    /// The consent purpose a user must have granted before anything is written here.
    #[serde(default)]
    pub consent: Option<String>,
}

fn personal_default() -> bool {
    true
}

/// The cluster's schema: collections by name. Parsed from TOML (`[collections.NAME]` tables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    pub collections: BTreeMap<CollectionName, CollectionSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemaError {
    #[error("schema is not valid TOML: {0}")]
    Parse(String),
    #[error("schema declares no collections")]
    Empty,
    #[error(
        "consent purpose {purpose:?} of collection {collection} must be 1-64 characters of [a-z0-9-]"
    )]
    ConsentPurpose {
        collection: CollectionName,
        purpose: String,
    },
}

impl Schema {
    pub fn from_toml(text: &str) -> Result<Self, SchemaError> {
        let schema: Schema = toml::from_str(text)
            .map_err(|e| SchemaError::Parse(crate::config::one_line(text, &e)))?;
        schema.validate()?;
        Ok(schema)
    }

    pub fn validate(&self) -> Result<(), SchemaError> {
        if self.collections.is_empty() {
            return Err(SchemaError::Empty);
        }
        for (name, spec) in &self.collections {
            if let Some(purpose) = &spec.consent
                && ServiceName::new(purpose.clone()).is_err()
            {
                return Err(SchemaError::ConsentPurpose {
                    collection: name.clone(),
                    purpose: purpose.clone(),
                });
            }
        }
        Ok(())
    }

    pub fn collection(&self, name: &CollectionName) -> Option<&CollectionSpec> {
        self.collections.get(name)
    }

    /// Every service, in name order.
    pub fn services(&self) -> Vec<ServiceName> {
        let mut services: Vec<ServiceName> = self
            .collections
            .values()
            .map(|c| c.service.clone())
            .collect();
        services.sort();
        services.dedup();
        services
    }

    /// The collections of `service`, in name order.
    pub fn collections_of<'a>(
        &'a self,
        service: &'a ServiceName,
    ) -> impl Iterator<Item = (&'a CollectionName, &'a CollectionSpec)> + 'a {
        self.collections
            .iter()
            .filter(move |(_, c)| &c.service == service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_schema_has_the_four_services() {
        let schema = crate::reference::schema();
        let services: Vec<String> = schema.services().iter().map(ToString::to_string).collect();
        assert_eq!(services, ["account", "cloud", "ecommerce", "messaging"]);
        let contacts = schema
            .collection(&CollectionName::new("contacts").unwrap())
            .unwrap();
        assert_eq!(contacts.consent.as_deref(), Some("contacts-sync"));
        let photos = schema
            .collection(&CollectionName::new("photos").unwrap())
            .unwrap();
        assert_eq!(photos.kind, CollectionKind::Blobs);
    }

    #[test]
    fn bad_schemas_are_refused_with_a_reason() {
        assert!(matches!(
            Schema::from_toml("collections = {}"),
            Err(SchemaError::Empty)
        ));
        let bad_name = "[collections.Orders]\nservice = \"shop\"\n";
        assert!(
            Schema::from_toml(bad_name)
                .unwrap_err()
                .to_string()
                .contains("collection")
        );
        let unknown = "[collections.orders]\nservice = \"shop\"\ncolour = 1\n";
        assert!(matches!(
            Schema::from_toml(unknown),
            Err(SchemaError::Parse(_))
        ));
    }
}
