//! records' schema, as migrations that run unchanged on SQLite and PostgreSQL.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(M0002ParkedEvents),
            Box::new(M0003VersionsAndSearch),
            Box::new(M0004Changes),
            Box::new(M0005SearchByType),
        ]
    }

    // Services may share one PostgreSQL database: each keeps its own ledger.
    fn migration_table_name() -> DynIden {
        "records_migrations".into_iden()
    }
}

struct M0001Initial;

// Named explicitly: the derive would name it after this file.
impl MigrationName for M0001Initial {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("records_resource_versions")
                    .if_not_exists()
                    .col(string("record_id"))
                    .col(big_integer("version"))
                    .col(string("patient_id"))
                    .col(string("resource_type"))
                    .col(string("category"))
                    .col(blob("resource_sealed"))
                    .col(timestamp_with_time_zone("last_updated"))
                    .primary_key(Index::create().col("record_id").col("version"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("records_resource_versions_patient")
                    .table("records_resource_versions")
                    .col("patient_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("records_audit_outbox")
                    .if_not_exists()
                    .col(big_integer("sequence").auto_increment().primary_key())
                    .col(string_uniq("event_id"))
                    .col(blob("payload"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("delivered_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("records_audit_outbox_pending")
                    .table("records_audit_outbox")
                    .col("delivered_at")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// The kit's outbox parks events audit refuses as bad, and prunes the rest.
struct M0002ParkedEvents;

impl MigrationName for M0002ParkedEvents {
    fn name(&self) -> &str {
        "m0002_parked_events"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0002ParkedEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("records_audit_outbox")
                    .add_column(text_null("parked_reason"))
                    .to_owned(),
            )
            .await
    }
}

/// Tombstones, the search index and idempotency keys. Records stored before
/// this migration have no index rows: they are read by id, not found by
/// search.
struct M0003VersionsAndSearch;

impl MigrationName for M0003VersionsAndSearch {
    fn name(&self) -> &str {
        "m0003_versions_and_search"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0003VersionsAndSearch {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("records_resource_versions")
                    .add_column(boolean("deleted").default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("records_index")
                    .if_not_exists()
                    .col(string("record_id").primary_key())
                    .col(string("patient_id"))
                    .col(string("resource_type"))
                    .col(string("category"))
                    .col(big_integer("version"))
                    .col(big_integer("sort_at"))
                    .col(big_integer_null("date_start"))
                    .col(big_integer_null("date_end"))
                    .col(big_integer("updated_at"))
                    .to_owned(),
            )
            .await?;
        // Every search names its patient and walks the result order.
        manager
            .create_index(
                Index::create()
                    .name("records_index_patient_order")
                    .table("records_index")
                    .col("patient_id")
                    .col("sort_at")
                    .col("record_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("records_index_tokens")
                    .if_not_exists()
                    .col(string("record_id"))
                    .col(string("param"))
                    .col(string("system"))
                    .col(string("code"))
                    .primary_key(
                        Index::create()
                            .col("record_id")
                            .col("param")
                            .col("system")
                            .col("code"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("records_index_tokens_code")
                    .table("records_index_tokens")
                    .col("param")
                    .col("code")
                    .col("system")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("records_idempotency")
                    .if_not_exists()
                    .col(string("key").primary_key())
                    .col(string("request_hash"))
                    .col(string("record_id"))
                    .col(big_integer("version"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await
    }
}

/// The change log behind WatchRecords. Versions stored before it are not in
/// it.
struct M0004Changes;

impl MigrationName for M0004Changes {
    fn name(&self) -> &str {
        "m0004_changes"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0004Changes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("records_changes")
                    .if_not_exists()
                    .col(big_integer("sequence").auto_increment().primary_key())
                    .col(string("record_id"))
                    .col(big_integer("version"))
                    .col(string("patient_id"))
                    .col(string("resource_type"))
                    .col(string("category"))
                    .col(boolean("deleted"))
                    .col(timestamp_with_time_zone("last_updated"))
                    .to_owned(),
            )
            .await
    }
}

/// A search for one resource type walks that type's records in result
/// order. Without it the walk went through every record of the patient's
/// newest first until enough of the type turned up: a patient with many
/// Observations made a Condition search read them all (found by the soak,
/// where it slowed records to a tenth of its rate within half an hour).
struct M0005SearchByType;

impl MigrationName for M0005SearchByType {
    fn name(&self) -> &str {
        "m0005_search_by_type"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0005SearchByType {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(SEARCH_BY_TYPE_INDEX)
                    .table("records_index")
                    .col("patient_id")
                    .col("resource_type")
                    .col("sort_at")
                    .col("record_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// The index a search for one resource type walks.
pub const SEARCH_BY_TYPE_INDEX: &str = "records_index_patient_type_order";
