//! consent's schema, as migrations that run unchanged on SQLite and PostgreSQL.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(M0002Provenance),
            Box::new(M0003AuditOutbox),
            Box::new(M0004StaffAndKinds),
            Box::new(super::change_log::M0005ChangeLog),
            Box::new(super::replicas::M0006Replicas),
        ]
    }

    // Services may share one PostgreSQL database: each keeps its own ledger.
    fn migration_table_name() -> DynIden {
        "consent_migrations".into_iden()
    }
}

struct M0001Initial;

// Named explicitly: `DeriveMigrationName` names a migration after its file,
// so every migration in this file would share one ledger entry.
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
                    .table("consent_care_relationships")
                    .if_not_exists()
                    .col(string("relationship_id").primary_key())
                    .col(string("patient_id"))
                    .col(string("organisation_ods_code"))
                    .col(string("kind"))
                    .col(timestamp_with_time_zone("start_time"))
                    .col(timestamp_with_time_zone_null("end_time"))
                    .col(string("recorded_by"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("consent_care_relationships_patient_id")
                    .table("consent_care_relationships")
                    .col("patient_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("consent_directives")
                    .if_not_exists()
                    .col(string("directive_id").primary_key())
                    .col(string("patient_id"))
                    .col(string("effect"))
                    .col(text("purposes"))
                    .col(string_null("organisation_ods_code"))
                    .col(string_null("staff_role"))
                    .col(text("categories"))
                    .col(timestamp_with_time_zone("start_time"))
                    .col(timestamp_with_time_zone_null("end_time"))
                    .col(text("note"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("revoked_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("consent_directives_patient_id")
                    .table("consent_directives")
                    .col("patient_id")
                    .to_owned(),
            )
            .await
    }
}

/// Who recorded, referred, ended and revoked: provenance for the trust model.
struct M0002Provenance;

impl MigrationName for M0002Provenance {
    fn name(&self) -> &str {
        "m0002_provenance"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0002Provenance {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite adds columns one at a time.
        let columns = [
            (
                "consent_care_relationships",
                string("recorded_by_ods_code").default("").to_owned(),
            ),
            ("consent_care_relationships", string_null("ended_by")),
            (
                "consent_directives",
                string("recorded_by").default("").to_owned(),
            ),
            ("consent_directives", string_null("recorded_by_ods_code")),
            (
                "consent_directives",
                string("source").default("patient").to_owned(),
            ),
            ("consent_directives", string_null("revoked_by")),
        ];
        for (table, mut column) in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The audit outbox (kit::outbox): each change's event, in its transaction.
struct M0003AuditOutbox;

impl MigrationName for M0003AuditOutbox {
    fn name(&self) -> &str {
        "m0003_audit_outbox"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0003AuditOutbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(sharedcare_kit::outbox::create_table(super::OUTBOX_TABLE))
            .await
    }
}

/// Relationships and directives naming a staff member, relationship teams
/// and break-glass reasons, and directive kinds (the National Data Opt-out).
struct M0004StaffAndKinds;

impl MigrationName for M0004StaffAndKinds {
    fn name(&self) -> &str {
        "m0004_staff_and_kinds"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0004StaffAndKinds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            ("consent_care_relationships", string_null("staff_member")),
            ("consent_care_relationships", string_null("team")),
            ("consent_care_relationships", string_null("reason")),
            ("consent_directives", string_null("staff_member")),
            (
                "consent_directives",
                string("kind").default("patient").to_owned(),
            ),
        ];
        for (table, mut column) in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
