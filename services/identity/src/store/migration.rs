//! identity's schema, as migrations that run unchanged on SQLite and PostgreSQL.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(M0002PatientPrincipals),
            Box::new(M0003AuditOutbox),
            Box::new(M0004Matching),
            Box::new(M0005Tokens),
            Box::new(M0006Merges),
            Box::new(M0007PatientVersions),
            Box::new(M0008GpRegistrations),
        ]
    }

    // Services may share one PostgreSQL database: each keeps its own ledger.
    fn migration_table_name() -> DynIden {
        "identity_migrations".into_iden()
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
                    .table("identity_patients")
                    .if_not_exists()
                    .col(string("patient_id").primary_key())
                    .col(string_uniq("nhs_index"))
                    .col(blob("sealed"))
                    .col(string_null("superseded_by"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("identity_organisations")
                    .if_not_exists()
                    .col(string("ods_code").primary_key())
                    .col(string("name"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("identity_principals")
                    .if_not_exists()
                    .col(string("principal_id").primary_key())
                    .col(string_uniq("client_id"))
                    .col(string("kind"))
                    .col(string("display_name"))
                    .col(string("ods_code"))
                    .col(string("role"))
                    .col(text("scopes"))
                    .col(blob("secret_hash"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await
    }
}

/// Patient principals and permitted purposes. One ALTER per column: SQLite
/// adds one column at a time.
struct M0002PatientPrincipals;

impl MigrationName for M0002PatientPrincipals {
    fn name(&self) -> &str {
        "m0002_patient_principals"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0002PatientPrincipals {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("identity_principals")
                    .add_column(string_null("patient_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("identity_principals")
                    .add_column(text_null("purposes"))
                    .to_owned(),
            )
            .await
    }
}

/// The audit outbox (kit::outbox): demographic reads and registrations.
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

/// Matching: each patient's blocking keys as blind indexes (candidates by
/// index, never a scan) and "not the same person" links. Patients
/// registered before have their keys added when the store opens (the keys
/// need the index key, which migrations do not have).
struct M0004Matching;

impl MigrationName for M0004Matching {
    fn name(&self) -> &str {
        "m0004_matching"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0004Matching {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("identity_patient_keys")
                    .if_not_exists()
                    .col(string("key_index"))
                    .col(string("patient_id"))
                    .primary_key(Index::create().col("key_index").col("patient_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("identity_patient_keys_by_patient")
                    .table("identity_patient_keys")
                    .col("patient_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("identity_not_same_person")
                    .if_not_exists()
                    .col(string("patient_a"))
                    .col(string("patient_b"))
                    .col(blob("sealed_reason"))
                    .col(string("recorded_by"))
                    .col(timestamp_with_time_zone("created_at"))
                    .primary_key(Index::create().col("patient_a").col("patient_b"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("identity_not_same_person_by_b")
                    .table("identity_not_same_person")
                    .col("patient_b")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// The merge log: merges and unmerges in commit order, for
/// WatchPatientMerges. (M0005 is the tokens' migration.)
struct M0006Merges;

impl MigrationName for M0006Merges {
    fn name(&self) -> &str {
        "m0006_merges"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0006Merges {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("identity_patient_merges")
                    .if_not_exists()
                    .col(big_integer("sequence").auto_increment().primary_key())
                    .col(string("kind"))
                    .col(string("superseded_patient_id"))
                    .col(string("surviving_patient_id"))
                    .col(string("recorded_by"))
                    .col(timestamp_with_time_zone("recorded_at"))
                    .to_owned(),
            )
            .await
    }
}

/// Rotated token signing keys and revoked principals.
struct M0005Tokens;

impl MigrationName for M0005Tokens {
    fn name(&self) -> &str {
        "m0005_tokens"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0005Tokens {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("identity_signing_keys")
                    .if_not_exists()
                    .col(string("kid").primary_key())
                    .col(blob("sealed"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("identity_revocations")
                    .if_not_exists()
                    .col(string("principal_id").primary_key())
                    .col(timestamp_with_time_zone("revoked_at"))
                    .to_owned(),
            )
            .await
    }
}

/// Versioned demographics: the current version on the patient, every
/// version (sealed) beside it. Patients from before are at version 1.
struct M0007PatientVersions;

impl MigrationName for M0007PatientVersions {
    fn name(&self) -> &str {
        "m0007_patient_versions"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0007PatientVersions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("identity_patients")
                    .add_column(big_integer("version").default(1))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("identity_patient_versions")
                    .if_not_exists()
                    .col(string("patient_id"))
                    .col(big_integer("version"))
                    .col(blob("sealed"))
                    .col(string_null("superseded_by"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .primary_key(Index::create().col("patient_id").col("version"))
                    .to_owned(),
            )
            .await
    }
}

/// Patients whose registered GP practice changed and consent has yet to
/// hear of: one row per patient, the version that changed it, leased to
/// the replica delivering it.
struct M0008GpRegistrations;

impl MigrationName for M0008GpRegistrations {
    fn name(&self) -> &str {
        "m0008_gp_registrations"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0008GpRegistrations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(super::REGISTRATIONS_TABLE)
                    .if_not_exists()
                    .col(string("patient_id").primary_key())
                    .col(big_integer("version"))
                    .col(timestamp_with_time_zone("queued_at"))
                    .col(timestamp_with_time_zone_null("leased_until"))
                    .to_owned(),
            )
            .await
    }
}
