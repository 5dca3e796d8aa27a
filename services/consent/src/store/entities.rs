//! sea-orm entities, shared by SQLite and PostgreSQL.

pub mod care_relationship {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consent_care_relationships")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub relationship_id: String,
        pub patient_id: String,
        pub organisation_ods_code: String,
        pub kind: String,
        pub start_time: DateTimeUtc,
        pub end_time: Option<DateTimeUtc>,
        pub recorded_by: String,
        pub recorded_by_ods_code: String,
        pub ended_by: Option<String>,
        pub staff_member: Option<String>,
        pub team: Option<String>,
        pub reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod directive {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "consent_directives")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub directive_id: String,
        pub patient_id: String,
        pub effect: String,
        /// JSON array of purpose names; empty means any.
        pub purposes: String,
        pub organisation_ods_code: Option<String>,
        pub staff_role: Option<String>,
        /// JSON array of record category names; empty means any.
        pub categories: String,
        pub start_time: DateTimeUtc,
        pub end_time: Option<DateTimeUtc>,
        pub note: String,
        pub created_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
        pub recorded_by: String,
        pub recorded_by_ods_code: Option<String>,
        /// "patient", "clinician" or "national_opt_out_service".
        pub source: String,
        pub revoked_by: Option<String>,
        pub staff_member: Option<String>,
        /// "patient" or "national_opt_out".
        pub kind: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
