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
        /// The resource, sealed with `kit::crypto` (AES-256-GCM envelope).
        pub resource_sealed: Vec<u8>,
        pub last_updated: DateTimeUtc,
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
