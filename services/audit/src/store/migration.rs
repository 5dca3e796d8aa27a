//! audit's schema, as migrations that run unchanged on SQLite and PostgreSQL.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001AuditEntries)]
    }

    // Services may share one PostgreSQL database: each keeps its own ledger.
    fn migration_table_name() -> DynIden {
        "audit_migrations".into_iden()
    }
}

struct M0001AuditEntries;

// Named explicitly: `DeriveMigrationName` takes the *module's* name, which
// every migration in this file would share.
impl MigrationName for M0001AuditEntries {
    fn name(&self) -> &str {
        "m0001_audit_entries"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0001AuditEntries {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("audit_entries")
                    .if_not_exists()
                    // Unique by being the key: the backstop against a forked chain.
                    .col(big_integer("sequence").primary_key())
                    .col(string_uniq("event_id"))
                    .col(string("patient_id"))
                    .col(big_integer("record_time_us"))
                    .col(blob("previous_hash"))
                    .col(blob("entry_hash"))
                    .col(blob("event"))
                    .to_owned(),
            )
            .await?;
        // A patient's entries in log order: Query and AccessReport pages.
        manager
            .create_index(
                Index::create()
                    .name("audit_entries_patient_sequence")
                    .table("audit_entries")
                    .col("patient_id")
                    .col("sequence")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}
