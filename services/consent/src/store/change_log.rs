//! The change log on SQL: its table (a migration of its own), its entity,
//! and how a write appends to it and WatchChanges reads it.
//!
//! The sequence must follow commit order: a watcher that has read up to n
//! must never later find a change below n. SQLite's writers take turns
//! anyway; on PostgreSQL, where replicas commit concurrently, each write
//! takes one advisory lock, held until commit, just before appending.

use chrono::Utc;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use sea_orm_migration::{prelude::*, schema::*};
use sharedcare_kit::Error;

use super::LoggedChange;
use crate::domain::PatientId;

pub const TABLE: &str = "consent_changes";

/// The advisory lock that orders change-log commits on PostgreSQL ("consent"
/// in ASCII, so it does not collide with records' or another service's).
const CHANGE_LOG_LOCK: i64 = 0x0063_6f6e_7365_6e74;

pub mod change {
    use sea_orm::entity::prelude::*;

    /// One row per write, numbered in commit order.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consent_changes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub sequence: i64,
        pub patient_id: String,
        pub committed_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Appends `patient`'s change in `txn`, last before commit (the lock is
/// held from here to commit); returns its sequence.
pub async fn append(
    txn: &DatabaseTransaction,
    context: &'static str,
    patient: &PatientId,
) -> Result<u64, Error> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CHANGE_LOG_LOCK})"))
            .await
            .map_err(|e| Error::internal(context, e))?;
    }
    let inserted = change::Entity::insert(change::ActiveModel {
        sequence: NotSet,
        patient_id: Set(patient.as_str().to_owned()),
        committed_at: Set(Utc::now()),
    })
    .exec(txn)
    .await
    .map_err(|e| Error::internal(context, e))?;
    <u64 as TryFrom<i64>>::try_from(inserted.last_insert_id)
        .map_err(|_| Error::internal(context, "a negative change sequence"))
}

fn stored(sequence: i64) -> Result<u64, Error> {
    <u64 as TryFrom<i64>>::try_from(sequence)
        .map_err(|_| Error::internal("reading the change log", "a negative sequence"))
}

pub async fn after(
    db: &DatabaseConnection,
    after: u64,
    limit: u32,
) -> Result<Vec<LoggedChange>, Error> {
    const CONTEXT: &str = "reading the change log";
    change::Entity::find()
        .filter(
            change::Column::Sequence.gt(<i64 as TryFrom<u64>>::try_from(after).unwrap_or(i64::MAX)),
        )
        .order_by_asc(change::Column::Sequence)
        .limit(u64::from(limit))
        .all(db)
        .await
        .map_err(|e| Error::internal(CONTEXT, e))?
        .into_iter()
        .map(|row| {
            Ok(LoggedChange {
                sequence: stored(row.sequence)?,
                patient_id: PatientId::parse("stored patient_id", &row.patient_id)
                    .map_err(|e| Error::internal(CONTEXT, e))?,
                committed_at: row.committed_at,
            })
        })
        .collect()
}

pub async fn latest(db: &DatabaseConnection) -> Result<u64, Error> {
    let latest: Option<Option<i64>> = change::Entity::find()
        .select_only()
        .column_as(change::Column::Sequence.max(), "latest")
        .into_tuple()
        .one(db)
        .await
        .map_err(|e| Error::internal("reading the change log", e))?;
    latest.flatten().map_or(Ok(0), stored)
}

/// The change log behind WatchChanges' resuming. Writes made before it are
/// not in it.
pub struct M0005ChangeLog;

impl MigrationName for M0005ChangeLog {
    fn name(&self) -> &str {
        "m0005_change_log"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0005ChangeLog {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .if_not_exists()
                    .col(big_integer("sequence").auto_increment().primary_key())
                    .col(string("patient_id"))
                    .col(timestamp_with_time_zone("committed_at"))
                    .to_owned(),
            )
            .await
    }
}
