//! audit's schema, as migrations that run unchanged on SQLite and PostgreSQL.

use sea_orm_migration::{
    prelude::*,
    schema::*,
    sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect},
};

use super::entities::{entry, node};
use crate::domain::{Hash, leaf_hash, merkle::Frontier};

/// Entries read at a time while building the tree of an existing log.
const BACKFILL_BATCH: u64 = 1000;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001AuditEntries),
            Box::new(M0002MerkleTree),
            Box::new(M0003BreakGlassBy),
        ]
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

struct M0002MerkleTree;

impl MigrationName for M0002MerkleTree {
    fn name(&self) -> &str {
        "m0002_merkle_tree"
    }
}

/// The Merkle tree replaces the hash chain: its nodes get a table, a log
/// written before gets its tree built here from the stored entries, and
/// the chain's two hash columns go.
#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0002MerkleTree {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("audit_nodes")
                    .if_not_exists()
                    .col(small_integer("level"))
                    .col(big_integer("idx"))
                    .col(blob("hash"))
                    // Each node written once: a second writer's insert fails.
                    .primary_key(Index::create().col("level").col("idx"))
                    .to_owned(),
            )
            .await?;
        backfill(manager.get_connection()).await?;
        for column in ["previous_hash", "entry_hash"] {
            if manager.has_column("audit_entries", column).await? {
                manager
                    .alter_table(
                        Table::alter()
                            .table("audit_entries")
                            .drop_column(column)
                            .to_owned(),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

struct M0003BreakGlassBy;

impl MigrationName for M0003BreakGlassBy {
    fn name(&self) -> &str {
        "m0003_break_glass_by"
    }
}

/// Break-glass entries get the acting organisation copied out into an
/// indexed column, for privacy officers' feed. Rows already in the log are
/// left NULL: nothing before this could break glass, so none is flagged.
#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for M0003BreakGlassBy {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager
            .has_column("audit_entries", "break_glass_by")
            .await?
        {
            manager
                .alter_table(
                    Table::alter()
                        .table("audit_entries")
                        .add_column(string_null("break_glass_by"))
                        .to_owned(),
                )
                .await?;
        }
        // An organisation's break-glass entries in log order: a feed page is
        // one range scan.
        manager
            .create_index(
                Index::create()
                    .name("audit_entries_break_glass_sequence")
                    .table("audit_entries")
                    .col("break_glass_by")
                    .col("sequence")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Forms the nodes of every entry already in the log, in order.
async fn backfill<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let mut frontier = Frontier::empty();
    loop {
        let rows: Vec<(i64, i64, Vec<u8>)> = entry::Entity::find()
            .select_only()
            .column(entry::Column::Sequence)
            .column(entry::Column::RecordTimeUs)
            .column(entry::Column::Event)
            .filter(entry::Column::Sequence.gt(to_i64(frontier.size())))
            .order_by_asc(entry::Column::Sequence)
            .limit(BACKFILL_BATCH)
            .into_tuple()
            .all(db)
            .await?;
        let Some(&(last, _, _)) = rows.last() else {
            return Ok(());
        };
        let first = to_i64(frontier.size()) + 1;
        if rows[0].0 != first || last != first + rows.len() as i64 - 1 {
            return Err(DbErr::Migration(format!(
                "audit_entries has a gap after entry {}: the tree cannot be built",
                frontier.size()
            )));
        }
        let leaves: Vec<Hash> = rows
            .iter()
            .map(|(_, time, event)| leaf_hash(*time, event))
            .collect();
        let formed = frontier
            .extend(&leaves)
            .map_err(|e| DbErr::Migration(e.to_string()))?;
        for chunk in formed.chunks(500) {
            node::Entity::insert_many(chunk.iter().map(|(addr, hash)| node::ActiveModel {
                level: Set(i16::from(addr.level)),
                idx: Set(to_i64(addr.index)),
                hash: Set(hash.to_vec()),
            }))
            .exec_without_returning(db)
            .await?;
        }
    }
}

fn to_i64(value: u64) -> i64 {
    <i64 as TryFrom<u64>>::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    //! A log written before the Merkle tree (entries with chain hashes, no
    //! nodes) gets its tree when it is migrated.

    use sea_orm::{ConnectionTrait, Database, DatabaseBackend, Statement};
    use sharedcare_kit::testing::TestDatabase;

    use super::*;
    use crate::{
        domain::merkle::MemoryTree,
        store::{AuditLogStore, Proofs, SqlStore},
    };

    async fn an_old_log_gets_its_tree(url: &str) {
        let db = Database::connect(url).await.expect("connect");
        Migrator::up(&db, Some(1))
            .await
            .expect("the first migration");
        let backend = db.get_database_backend();
        let p = |n: usize| match backend {
            DatabaseBackend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        };
        let mut tree = MemoryTree::new();
        for n in 1..=11i64 {
            let event = format!("event {n}").into_bytes();
            let time = 1_750_000_000_000_000 + n;
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "INSERT INTO audit_entries (sequence, event_id, patient_id, record_time_us, \
                     previous_hash, entry_hash, event) VALUES ({}, {}, {}, {}, {}, {}, {})",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6),
                    p(7)
                ),
                [
                    n.into(),
                    format!("ev-{n}").into(),
                    "patient-1".into(),
                    time.into(),
                    vec![0u8; 32].into(),
                    vec![1u8; 32].into(),
                    event.clone().into(),
                ],
            ))
            .await
            .expect("old row");
            tree.push(crate::domain::leaf_hash(time, &event));
        }
        Migrator::up(&db, None).await.expect("the rest");
        assert!(
            !SchemaManager::new(&db)
                .has_column("audit_entries", "previous_hash")
                .await
                .expect("columns")
        );
        let store = SqlStore::from_connection(db);
        assert_eq!(store.tree_size().await.expect("size"), 11);
        for size in 0..=11 {
            assert_eq!(
                Proofs(&store).root(size).await.expect("root"),
                tree.root(size).expect("root")
            );
        }
        // And the log goes on from there.
        let next = store
            .append(crate::domain::EncodedEvent {
                event_id: crate::domain::EventId::parse("event_id", "ev-12").expect("id"),
                patient_id: crate::domain::PatientId::parse("patient_id", "patient-1")
                    .expect("patient"),
                bytes: b"event 12".to_vec(),
                break_glass_by: None,
            })
            .await
            .expect("append");
        assert_eq!(next.entry.sequence, 12);
        tree.push(next.entry.leaf_hash());
        assert_eq!(
            Proofs(&store).root(12).await.expect("root"),
            tree.root(12).expect("root")
        );
    }

    #[tokio::test]
    async fn an_old_log_gets_its_tree_sqlite() {
        let db = TestDatabase::sqlite();
        an_old_log_gets_its_tree(db.url()).await;
    }

    #[tokio::test]
    async fn an_old_log_gets_its_tree_postgres() {
        let Some(db) = TestDatabase::postgres("an_old_log_gets_its_tree").await else {
            return;
        };
        an_old_log_gets_its_tree(db.url()).await;
        db.cleanup().await;
    }
}
