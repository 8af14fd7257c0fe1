//! `postgres://…` store specs: a libpq connection URL plus domicile's own `schema` parameter.

use super::schema;
use crate::error::StoreError;
use std::fmt;
use std::str::FromStr;

/// Where a region's tables live: a PostgreSQL connection URL and the schema to keep them in
/// (`?schema=NAME`, default `domicile`), so that several regions can share one database.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSpec {
    /// The URL as libpq reads it, without domicile's `schema` parameter.
    url: String,
    schema: String,
}

pub const DEFAULT_SCHEMA: &str = "domicile";

impl PostgresSpec {
    /// Parses `postgres://` or `postgresql://` URLs; checks them with the driver's own parser.
    pub fn parse(spec: &str) -> Result<Self, StoreError> {
        if !(spec.starts_with("postgres://") || spec.starts_with("postgresql://")) {
            return Err(StoreError::Spec(redact(spec)));
        }
        let (base, query) = match spec.split_once('?') {
            Some((base, query)) => (base, query),
            None => (spec, ""),
        };
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", name)) => schema = name.to_string(),
                _ => kept.push(pair),
            }
        }
        schema::check_name(&schema)?;
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let parsed = Self { url, schema };
        parsed.config()?;
        Ok(parsed)
    }

    /// The driver's connection settings.
    pub fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| StoreError::Spec(format!("{} ({e})", redact(&self.url))))?;
        if config.get_application_name().is_none() {
            config.application_name("domicile");
        }
        Ok(config)
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The same database with another schema.
    pub fn with_schema(&self, schema: &str) -> Result<Self, StoreError> {
        schema::check_name(schema)?;
        Ok(Self {
            url: self.url.clone(),
            schema: schema.to_string(),
        })
    }
}

/// The URL with any password replaced, for messages and logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl fmt::Debug for PostgresSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for PostgresSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        write!(f, "{}{sep}schema={}", redact(&self.url), self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_taken_out_of_the_url() {
        let s =
            PostgresSpec::parse("postgres://u@127.0.0.1:5433/db?schema=us_west&connect_timeout=5")
                .unwrap();
        assert_eq!(s.schema(), "us_west");
        assert_eq!(s.url, "postgres://u@127.0.0.1:5433/db?connect_timeout=5");
        let d = PostgresSpec::parse("postgresql://u@localhost/db").unwrap();
        assert_eq!(d.schema(), DEFAULT_SCHEMA);
    }

    #[test]
    fn bad_specs_are_refused_and_passwords_never_shown() {
        assert!(PostgresSpec::parse("mysql://x").is_err());
        assert!(PostgresSpec::parse("postgres://u@h/db?schema=Bad-Name").is_err());
        let e = PostgresSpec::parse("postgres://u:secret@h:notaport/db").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let shown = PostgresSpec::parse("postgres://u:secret@h/db")
            .unwrap()
            .to_string();
        assert_eq!(shown, "postgres://u:***@h/db?schema=domicile");
    }
}
