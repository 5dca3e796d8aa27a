//! sea-orm entities, shared by SQLite and PostgreSQL.

pub mod entry {
    use sea_orm::entity::prelude::*;

    /// One row per log entry. The event is kept as its canonical protobuf
    /// bytes (what the leaf hash covers); event and patient ids, and for a
    /// break-glass event the acting organisation, are copied out of it into
    /// indexed columns.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_entries")]
    pub struct Model {
        /// Position in the log, from 1; the primary key, so two writers can
        /// never both write entry n.
        #[sea_orm(primary_key, auto_increment = false)]
        pub sequence: i64,
        #[sea_orm(unique)]
        pub event_id: String,
        pub patient_id: String,
        /// Microseconds since the Unix epoch (exactly what is hashed).
        pub record_time_us: i64,
        pub event: Vec<u8>,
        /// The acting organisation's ODS code when the event is flagged
        /// break-glass; NULL otherwise.
        pub break_glass_by: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod node {
    use sea_orm::entity::prelude::*;

    /// One row per perfect subtree of the Merkle tree, written once when it
    /// is formed (`domain::merkle`'s storage model). Level 0 holds the leaf
    /// hashes, so the tree's size is one more than the highest leaf index.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_nodes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub level: i16,
        #[sea_orm(primary_key, auto_increment = false)]
        pub idx: i64,
        pub hash: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
