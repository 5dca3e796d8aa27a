//! The replica table on PostgreSQL: each replica's lease on its memory of
//! consent, and the last change it has acted on (see `changes`).
//!
//! Times are the database's (`now()`), so writers and replicas judge leases
//! by one clock.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::{prelude::*, schema::*};
use sharedcare_kit::Error;

pub const TABLE: &str = "consent_replicas";

fn signed(sequence: u64) -> i64 {
    <i64 as TryFrom<u64>>::try_from(sequence).unwrap_or(i64::MAX)
}

fn millis(d: Duration) -> i64 {
    <i64 as TryFrom<u128>>::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn run(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> Result<(), Error> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await
    .map(|_| ())
    .map_err(|e| Error::unavailable(format!("consent's replica table: {e}")))
}

/// Records `applied` and holds the lease for `lease` from the database's now.
pub async fn renew(
    db: &DatabaseConnection,
    replica: &str,
    applied: u64,
    lease: Duration,
) -> Result<(), Error> {
    run(
        db,
        "INSERT INTO consent_replicas (replica_id, applied_sequence, lease_until) \
         VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
         ON CONFLICT (replica_id) DO UPDATE SET \
         applied_sequence = GREATEST(consent_replicas.applied_sequence, EXCLUDED.applied_sequence), \
         lease_until = EXCLUDED.lease_until",
        vec![replica.into(), signed(applied).into(), millis(lease).into()],
    )
    .await
}

/// Records `applied` without touching the lease (so writers waiting on it
/// go on at once).
pub async fn applied(db: &DatabaseConnection, replica: &str, applied: u64) -> Result<(), Error> {
    run(
        db,
        "UPDATE consent_replicas SET applied_sequence = GREATEST(applied_sequence, $2) \
         WHERE replica_id = $1",
        vec![replica.into(), signed(applied).into()],
    )
    .await
}

/// Gives the replica up (at shutdown): writers stop waiting for it.
pub async fn remove(db: &DatabaseConnection, replica: &str) -> Result<(), Error> {
    run(
        db,
        "DELETE FROM consent_replicas WHERE replica_id = $1",
        vec![replica.into()],
    )
    .await
}

/// Whether a replica whose lease is running has not yet acted on `sequence`.
pub async fn lagging(db: &DatabaseConnection, sequence: u64) -> Result<bool, Error> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT EXISTS (SELECT 1 FROM consent_replicas \
             WHERE applied_sequence < $1 AND lease_until > now()) AS lagging",
            vec![signed(sequence).into()],
        ))
        .await
        .map_err(|e| Error::unavailable(format!("consent's replica table: {e}")))?;
    row.map_or(Ok(false), |row| {
        row.try_get::<bool>("", "lagging")
            .map_err(|e| Error::unavailable(format!("consent's replica table: {e}")))
    })
}

/// The replica table: leases and how far each replica has applied the log.
pub struct M0006Replicas;

impl MigrationName for M0006Replicas {
    fn name(&self) -> &str {
        "m0006_replicas"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0006Replicas {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .if_not_exists()
                    .col(string("replica_id").primary_key())
                    .col(big_integer("applied_sequence"))
                    .col(timestamp_with_time_zone("lease_until"))
                    .to_owned(),
            )
            .await
    }
}
