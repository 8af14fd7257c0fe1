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

/// The reserved collection that holds a user's consent records inside every service with a
/// consent purpose (key = purpose), so that they move with that service's data.
pub const CONSENTS_COLLECTION: &str = "_consents";

/// Collection names the API uses as path segments under `/v1/users/{user}/`.
const RESERVED_NAMES: [&str; 3] = ["batch", "consents", "export"];

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
        "collection name {0} is reserved (names starting with `_`, and `batch`, `consents` and `export`, \
         which are API paths)"
    )]
    Reserved(CollectionName),
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
            if name.as_str().starts_with('_') || RESERVED_NAMES.contains(&name.as_str()) {
                return Err(SchemaError::Reserved(name.clone()));
            }
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

    /// A service's blob collections: a move imports their records only after their blobs.
    pub fn blob_collections_of(
        &self,
        service: &ServiceName,
    ) -> std::collections::BTreeSet<CollectionName> {
        self.collections_of(service)
            .filter(|(_, spec)| spec.kind == CollectionKind::Blobs)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The name of the reserved consents collection.
pub fn consents_collection() -> CollectionName {
    // A constant that satisfies the collection rule ([a-z0-9_-]).
    CollectionName::new(CONSENTS_COLLECTION)
        .unwrap_or_else(|_| unreachable!("{CONSENTS_COLLECTION} is a valid collection name"))
}

impl Schema {
    /// Whether `purpose` is the consent purpose of any collection.
    pub fn has_purpose(&self, purpose: &str) -> bool {
        self.collections
            .values()
            .any(|c| c.consent.as_deref() == Some(purpose))
    }

    /// The services with a collection of consent purpose `purpose`, in name order.
    pub fn services_of_purpose(&self, purpose: &str) -> Vec<ServiceName> {
        let mut services: Vec<ServiceName> = self
            .collections
            .values()
            .filter(|c| c.consent.as_deref() == Some(purpose))
            .map(|c| c.service.clone())
            .collect();
        services.sort();
        services.dedup();
        services
    }

    /// The collections of `service` with consent purpose `purpose`, in name order.
    pub fn collections_of_purpose(
        &self,
        service: &ServiceName,
        purpose: &str,
    ) -> Vec<(CollectionName, CollectionKind)> {
        self.collections_of(service)
            .filter(|(_, c)| c.consent.as_deref() == Some(purpose))
            .map(|(n, c)| (n.clone(), c.kind))
            .collect()
    }

    /// Whether `service` keeps consent records (it has a collection with a consent purpose).
    pub fn keeps_consents(&self, service: &ServiceName) -> bool {
        self.collections_of(service)
            .any(|(_, c)| c.consent.is_some())
    }

    /// Every collection that holds `service`'s data in a store: its declared collections and,
    /// if it keeps consent records, the reserved consents collection (records). Name order
    /// (the reserved name sorts first).
    pub fn stored_collections(
        &self,
        service: &ServiceName,
    ) -> Vec<(CollectionName, CollectionKind)> {
        let mut out = Vec::new();
        if self.keeps_consents(service) {
            out.push((consents_collection(), CollectionKind::Records));
        }
        out.extend(
            self.collections_of(service)
                .map(|(n, c)| (n.clone(), c.kind)),
        );
        out
    }

    /// Whether records of `collection` belong to `service` in a store (imports are checked
    /// by this): a declared collection of the service, or its consents collection.
    pub fn stores_in(&self, collection: &CollectionName, service: &ServiceName) -> bool {
        if collection.as_str() == CONSENTS_COLLECTION {
            return self.keeps_consents(service);
        }
        self.collection(collection)
            .is_some_and(|c| &c.service == service)
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
    fn consent_records_live_in_the_service_of_their_purpose() {
        let schema = crate::reference::schema();
        let cloud = ServiceName::new("cloud").unwrap();
        let shop = ServiceName::new("ecommerce").unwrap();
        assert!(schema.has_purpose("contacts-sync"));
        assert!(!schema.has_purpose("ads"));
        assert_eq!(
            schema.services_of_purpose("contacts-sync"),
            vec![cloud.clone()]
        );
        assert_eq!(
            schema.collections_of_purpose(&cloud, "contacts-sync"),
            [(
                CollectionName::new("contacts").unwrap(),
                CollectionKind::Records
            )]
        );
        let consents = consents_collection();
        assert!(schema.stores_in(&consents, &cloud));
        assert!(!schema.stores_in(&consents, &shop));
        assert_eq!(schema.stored_collections(&cloud)[0].0, consents);
        assert_eq!(schema.stored_collections(&cloud).len(), 4);
        assert_eq!(schema.stored_collections(&shop).len(), 2);
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
        for reserved in ["_consents", "batch", "consents", "export"] {
            let text = format!("[collections.{reserved}]\nservice = \"shop\"\n");
            assert!(
                matches!(Schema::from_toml(&text), Err(SchemaError::Reserved(_))),
                "{reserved}"
            );
        }
        let unknown = "[collections.orders]\nservice = \"shop\"\ncolour = 1\n";
        assert!(matches!(
            Schema::from_toml(unknown),
            Err(SchemaError::Parse(_))
        ));
    }
}
