//! The PostgreSQL engine's tables, created and upgraded by versioned migrations on start.
//!
//! Records are keyed by the same bytes as the embedded engine (`crate::keys`): `bytea` compares
//! byte-wise, so both engines order records identically, whatever the database's collation,
//! and a scope's buckets are key ranges. Versions are `u64`s stored in `bigint` with the sign bit
//! flipped, which keeps their order (so `ORDER BY version` and comparisons stay correct).

use crate::error::StoreError;
use domicile_core::Version;

/// Migrations in order; a database records the ones applied in `schema_migrations`.
/// `{s}` is replaced by the quoted schema name. Never edit a shipped migration: add one.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "records, change log, metadata and log position",
    "CREATE TABLE {s}.records (
         key bytea PRIMARY KEY,
         version bigint NOT NULL,
         value bytea
     ) WITH (fillfactor = 90);
     CREATE TABLE {s}.changes (
         lsn bigint PRIMARY KEY,
         op smallint NOT NULL,
         version bigint NOT NULL,
         key bytea NOT NULL
     );
     CREATE TABLE {s}.meta (
         name text PRIMARY KEY,
         value bytea NOT NULL
     );
     CREATE TABLE {s}.log_position (
         only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
         last_lsn bigint NOT NULL,
         last_version bigint NOT NULL
     );
     INSERT INTO {s}.log_position (last_lsn, last_version) VALUES (0, -9223372036854775808);",
)];

/// The newest schema version this build knows.
pub const LATEST: i32 = MIGRATIONS.len() as i32;

/// A schema name as the spec gives it: a plain lower-case SQL identifier, so it needs no
/// escaping beyond double quotes.
pub fn check_name(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 {
        Ok(())
    } else {
        Err(StoreError::Spec(format!(
            "schema={schema} (a schema is 1-63 characters of [a-z0-9_], not starting with a digit)"
        )))
    }
}

/// Brings the schema to [`LATEST`]; the caller holds the store's advisory lock.
pub async fn migrate(client: &mut tokio_postgres::Client, schema: &str) -> Result<(), StoreError> {
    let s = format!("\"{schema}\"");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
                 version integer PRIMARY KEY,
                 description text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(super::pg_error)?;
    let applied: i32 = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {s}.schema_migrations"),
            &[],
        )
        .await
        .map_err(super::pg_error)?
        .get(0);
    if applied > LATEST {
        return Err(StoreError::Engine(format!(
            "schema {schema} is at version {applied}, newer than this build knows ({LATEST}); \
             run a newer domicile"
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().skip(applied as usize) {
        let tx = client.transaction().await.map_err(super::pg_error)?;
        tx.batch_execute(&sql.replace("{s}", &s))
            .await
            .map_err(super::pg_error)?;
        tx.execute(
            &format!("INSERT INTO {s}.schema_migrations (version, description) VALUES ($1, $2)"),
            &[version, description],
        )
        .await
        .map_err(super::pg_error)?;
        tx.commit().await.map_err(super::pg_error)?;
        tracing::info!(schema, version, description, "applied a store migration");
    }
    Ok(())
}

/// `u64` → `bigint`, order-preserving.
pub fn version_to_sql(v: Version) -> i64 {
    (v.0 ^ (1 << 63)) as i64
}

pub fn version_from_sql(v: i64) -> Version {
    Version((v as u64) ^ (1 << 63))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_name("domicile").is_ok());
        assert!(check_name("region_us_west2").is_ok());
        for bad in ["", "9a", "Upper", "a-b", "a\"b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
    }

    proptest! {
        #[test]
        fn version_encoding_keeps_order(a: u64, b: u64) {
            let (x, y) = (version_to_sql(Version(a)), version_to_sql(Version(b)));
            prop_assert_eq!(a.cmp(&b), x.cmp(&y));
            prop_assert_eq!(version_from_sql(x), Version(a));
        }
    }
}
