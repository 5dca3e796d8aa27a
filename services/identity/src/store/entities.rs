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
