//! sea-orm entities, shared by SQLite and PostgreSQL.

pub mod patient {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_patients")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub patient_id: String,
        /// Blind index (keyed hash) of the NHS number: found by equality,
        /// unreadable without the key.
        #[sea_orm(unique)]
        pub nhs_index: String,
        /// NHS number and demographics, sealed with `kit::crypto`.
        pub sealed: Vec<u8>,
        pub superseded_by: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// Grows with every change of demographics (M0007; 1 before).
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod organisation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_organisations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub ods_code: String,
        pub name: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod principal {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_principals")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub principal_id: String,
        #[sea_orm(unique)]
        pub client_id: String,
        pub kind: String,
        pub display_name: String,
        pub ods_code: String,
        pub role: String,
        /// Space-separated.
        pub scopes: String,
        pub secret_hash: Vec<u8>,
        pub created_at: DateTimeUtc,
        /// For a patient principal (M0002).
        pub patient_id: Option<String>,
        /// Space-separated purpose names (M0002); NULL for rows from before
        /// purposes existed: the kind's default.
        pub purposes: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A patient's blocking keys, as blind indexes (M0004).
pub mod patient_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_patient_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_index: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub patient_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// "Not the same person" links, the pair in order (M0004).
pub mod not_same_person {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_not_same_person")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub patient_a: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub patient_b: String,
        /// The reason, sealed: it may say something about the patients.
        pub sealed_reason: Vec<u8>,
        pub recorded_by: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The merge log (M0006): merges and unmerges in commit order.
pub mod patient_merge {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_patient_merges")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub sequence: i64,
        /// "merged" or "unmerged".
        pub kind: String,
        pub superseded_patient_id: String,
        pub surviving_patient_id: String,
        pub recorded_by: String,
        pub recorded_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod signing_key {
    use sea_orm::entity::prelude::*;

    /// A token signing key made by a rotation (M0005).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_signing_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kid: String,
        /// The PKCS#8 PEM private key, sealed with `kit::crypto` (bound to
        /// the kid).
        pub sealed: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod revocation {
    use sea_orm::entity::prelude::*;

    /// A revoked principal (M0005).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_revocations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub principal_id: String,
        pub revoked_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Every version of a patient's demographics, sealed (M0007).
pub mod patient_version {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_patient_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub patient_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        pub sealed: Vec<u8>,
        pub superseded_by: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
