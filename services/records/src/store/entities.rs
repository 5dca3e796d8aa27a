//! sea-orm entities, shared by SQLite and PostgreSQL.

pub mod version {
    use sea_orm::entity::prelude::*;

    /// One version of one resource; the highest version is current.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "records_resource_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub record_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        pub patient_id: String,
        pub resource_type: String,
        pub category: String,
        /// The resource as the store was given it: sealed when the store is
        /// wrapped in `Encrypted` (always, outside tests); empty for a
        /// tombstone.
        #[sea_orm(column_name = "resource_sealed")]
        pub body: Vec<u8>,
        pub last_updated: DateTimeUtc,
        pub deleted: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "records_audit_outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub sequence: i64,
        #[sea_orm(unique)]
        pub event_id: String,
        pub payload: Vec<u8>,
        pub created_at: DateTimeUtc,
        /// Unused since the kit's outbox prunes delivered rows.
        pub delivered_at: Option<DateTimeUtc>,
        /// Set when audit refused the event as bad (see kit::outbox).
        pub parked_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod index {
    use sea_orm::entity::prelude::*;

    /// The current version of each record not deleted, with its search
    /// fields in clear (times as microseconds since the epoch, so both
    /// databases compare them as numbers).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "records_index")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub record_id: String,
        pub patient_id: String,
        pub resource_type: String,
        pub category: String,
        pub version: i64,
        /// The clinical date's start, or the last-updated time.
        pub sort_at: i64,
        pub date_start: Option<i64>,
        pub date_end: Option<i64>,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod token {
    use sea_orm::entity::prelude::*;

    /// A code or category of a current record (`domain::Token`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "records_index_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub record_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub param: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub system: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub code: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency {
    use sea_orm::entity::prelude::*;

    /// What a create's idempotency key answered.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "records_idempotency")]
    pub struct Model {
        /// Digest of the caller and the key they sent.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub request_hash: String,
        pub record_id: String,
        pub version: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod change {
    use sea_orm::entity::prelude::*;

    /// The change log: one row per stored version, numbered in commit order.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "records_changes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub sequence: i64,
        pub record_id: String,
        pub version: i64,
        pub patient_id: String,
        pub resource_type: String,
        pub category: String,
        pub deleted: bool,
        pub last_updated: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
