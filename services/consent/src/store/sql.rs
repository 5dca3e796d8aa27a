//! The sea-orm store: SQLite (embedded default) or PostgreSQL.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use sharedcare_kit::{Error, outbox};
use sharedcare_proto::audit::v1::AuditEvent;

use super::{
    BoxFuture, ConsentStore, LoggedChange, Migrator, OUTBOX_TABLE, change_log, entities::*,
};
use crate::domain::{
    CareRelationship, CareRelationshipKind, Directive, DirectiveKind, DirectiveSource, Effect,
    OdsCode, PatientId, Period, Provenance, Purpose, RecordCategory,
};

#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
}

impl SqlStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        let db = sharedcare_kit::db::connect::<Migrator>(url, max_connections).await?;
        Ok(SqlStore { db })
    }

    /// Closes the pool (tests drop their database afterwards).
    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

fn relationship_to_row(r: &CareRelationship) -> care_relationship::ActiveModel {
    care_relationship::ActiveModel {
        relationship_id: Set(r.id.clone()),
        patient_id: Set(r.patient_id.as_str().to_owned()),
        organisation_ods_code: Set(r.organisation.as_str().to_owned()),
        kind: Set(r.kind.as_str().to_owned()),
        start_time: Set(r.period.start),
        end_time: Set(r.period.end),
        recorded_by: Set(r.recorded_by.clone()),
        recorded_by_ods_code: Set(r.recorded_by_organisation.as_str().to_owned()),
        ended_by: Set(r.ended_by.clone()),
        staff_member: Set(r.staff_member.clone()),
        team: Set(r.team.clone()),
        reason: Set(r.reason.clone()),
    }
}

fn relationship_from_row(row: care_relationship::Model) -> Result<CareRelationship, Error> {
    const READING: &str = "reading a care relationship";
    // Rows from before provenance was kept were recorded by the caring
    // organisation's own principals.
    let recorded_by_organisation = if row.recorded_by_ods_code.is_empty() {
        &row.organisation_ods_code
    } else {
        &row.recorded_by_ods_code
    };
    let recorded_by_organisation =
        OdsCode::parse("stored recorded_by_ods_code", recorded_by_organisation)
            .map_err(|e| Error::internal(READING, e))?;
    Ok(CareRelationship {
        id: row.relationship_id,
        patient_id: PatientId::parse("stored patient_id", &row.patient_id)
            .map_err(|e| Error::internal(READING, e))?,
        organisation: OdsCode::parse("stored organisation_ods_code", &row.organisation_ods_code)
            .map_err(|e| Error::internal(READING, e))?,
        kind: CareRelationshipKind::from_stored(&row.kind)
            .ok_or_else(|| Error::internal(READING, "unknown kind"))?,
        period: Period {
            start: row.start_time,
            end: row.end_time,
        },
        staff_member: row.staff_member,
        team: row.team,
        reason: row.reason,
        recorded_by: row.recorded_by,
        recorded_by_organisation,
        ended_by: row.ended_by,
    })
}

/// Stored as a JSON array of names.
fn names_to_json(names: impl Iterator<Item = &'static str>) -> Result<String, Error> {
    serde_json::to_string(&names.collect::<Vec<_>>())
        .map_err(|e| Error::internal("storing a directive", e))
}

fn names_from_json<T>(json: &str, parse: fn(&str) -> Option<T>) -> Result<Vec<T>, Error> {
    const READING: &str = "reading a directive";
    let names: Vec<String> = serde_json::from_str(json).map_err(|e| Error::internal(READING, e))?;
    names
        .iter()
        .map(|n| parse(n).ok_or_else(|| Error::internal(READING, "unknown vocabulary name")))
        .collect()
}

fn directive_to_row(d: &Directive) -> Result<directive::ActiveModel, Error> {
    Ok(directive::ActiveModel {
        directive_id: Set(d.id.clone()),
        patient_id: Set(d.patient_id.as_str().to_owned()),
        effect: Set(d.effect.as_str().to_owned()),
        purposes: Set(names_to_json(d.purposes.iter().map(|p| p.as_str()))?),
        organisation_ods_code: Set(d.organisation.as_ref().map(|o| o.as_str().to_owned())),
        staff_role: Set(d.staff_role.clone()),
        categories: Set(names_to_json(d.categories.iter().map(|c| c.as_str()))?),
        start_time: Set(d.period.start),
        end_time: Set(d.period.end),
        note: Set(d.note.clone()),
        created_at: Set(d.created_at),
        revoked_at: Set(d.revoked_at),
        recorded_by: Set(d.provenance.recorded_by.clone()),
        recorded_by_ods_code: Set(d
            .provenance
            .organisation
            .as_ref()
            .map(|o| o.as_str().to_owned())),
        source: Set(d.provenance.source.as_str().to_owned()),
        revoked_by: Set(d.revoked_by.clone()),
        staff_member: Set(d.staff_member.clone()),
        kind: Set(d.kind.as_str().to_owned()),
    })
}

fn directive_from_row(row: directive::Model) -> Result<Directive, Error> {
    const READING: &str = "reading a directive";
    Ok(Directive {
        id: row.directive_id,
        patient_id: PatientId::parse("stored patient_id", &row.patient_id)
            .map_err(|e| Error::internal(READING, e))?,
        kind: DirectiveKind::from_stored(&row.kind)
            .ok_or_else(|| Error::internal(READING, "unknown kind"))?,
        effect: Effect::from_stored(&row.effect)
            .ok_or_else(|| Error::internal(READING, "unknown effect"))?,
        purposes: names_from_json(&row.purposes, Purpose::from_stored)?,
        organisation: row
            .organisation_ods_code
            .as_deref()
            .map(|o| OdsCode::parse("stored organisation_ods_code", o))
            .transpose()
            .map_err(|e| Error::internal(READING, e))?,
        staff_member: row.staff_member,
        staff_role: row.staff_role,
        categories: names_from_json(&row.categories, RecordCategory::from_stored)?,
        period: Period {
            start: row.start_time,
            end: row.end_time,
        },
        note: row.note,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
        provenance: Provenance {
            recorded_by: row.recorded_by,
            organisation: row
                .recorded_by_ods_code
                .as_deref()
                .map(|o| OdsCode::parse("stored recorded_by_ods_code", o))
                .transpose()
                .map_err(|e| Error::internal(READING, e))?,
            source: DirectiveSource::from_stored(&row.source)
                .ok_or_else(|| Error::internal(READING, "unknown source"))?,
        },
        revoked_by: row.revoked_by,
    })
}

/// What a write changed, by patient (for the change log).
trait OfPatient {
    fn patient(&self) -> &PatientId;
}

impl OfPatient for CareRelationship {
    fn patient(&self) -> &PatientId {
        &self.patient_id
    }
}

impl OfPatient for Directive {
    fn patient(&self) -> &PatientId {
        &self.patient_id
    }
}

impl SqlStore {
    /// The connection, for the audit outbox that shares the database.
    pub fn connection(&self) -> DatabaseConnection {
        self.db.clone()
    }

    /// Runs `change` and records `audit` in the outbox and the change (for
    /// its patient) in the change log, in one transaction.
    async fn audited<T: OfPatient>(
        &self,
        context: &'static str,
        audit: &AuditEvent,
        change: impl AsyncFnOnce(&DatabaseTransaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let txn = self
            .db
            .begin()
            .await
            .map_err(|e| Error::internal(context, e))?;
        let done = change(&txn).await?;
        outbox::insert_in(&txn, OUTBOX_TABLE, audit).await?;
        let sequence = change_log::append(&txn, context, done.patient()).await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            // Wakes every replica's change feed if, and when, this commits
            // (the streams read the log; the payload is only a hint).
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [
                    crate::changes::PG_CHANNEL.into(),
                    sequence.to_string().into(),
                ],
            ))
            .await
            .map_err(|e| Error::internal(context, e))?;
        }
        txn.commit()
            .await
            .map_err(|e| Error::internal(context, e))?;
        Ok(done)
    }
}

impl ConsentStore for SqlStore {
    fn insert_relationship(
        &self,
        r: CareRelationship,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship> {
        Box::pin(async move {
            const CONTEXT: &str = "storing a care relationship";
            self.audited(CONTEXT, &audit, async |txn| {
                care_relationship::Entity::insert(relationship_to_row(&r))
                    .exec_without_returning(txn)
                    .await
                    .map_err(|e| Error::internal(CONTEXT, e))?;
                Ok(r)
            })
            .await
        })
    }

    fn list_relationships(&self, patient: &PatientId) -> BoxFuture<'_, Vec<CareRelationship>> {
        let patient = patient.as_str().to_owned();
        Box::pin(async move {
            care_relationship::Entity::find()
                .filter(care_relationship::Column::PatientId.eq(patient))
                .order_by_desc(care_relationship::Column::StartTime)
                .order_by_desc(care_relationship::Column::RelationshipId)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal("listing care relationships", e))?
                .into_iter()
                .map(relationship_from_row)
                .collect()
        })
    }

    fn get_relationship(&self, id: &str) -> BoxFuture<'_, Option<CareRelationship>> {
        let id = id.to_owned();
        Box::pin(async move {
            care_relationship::Entity::find_by_id(id)
                .one(&self.db)
                .await
                .map_err(|e| Error::internal("reading a care relationship", e))?
                .map(relationship_from_row)
                .transpose()
        })
    }

    fn end_relationship(
        &self,
        id: &str,
        at: DateTime<Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship> {
        let id = id.to_owned();
        let by = by.to_owned();
        Box::pin(async move {
            const CONTEXT: &str = "ending a care relationship";
            self.audited(CONTEXT, &audit, async |txn| {
                // One conditional update: only a relationship still open at
                // `at` ends, so of two concurrent ends exactly one succeeds.
                let updated = care_relationship::Entity::update_many()
                    .col_expr(care_relationship::Column::EndTime, Expr::value(at))
                    .col_expr(care_relationship::Column::EndedBy, Expr::value(by))
                    .filter(care_relationship::Column::RelationshipId.eq(id.as_str()))
                    .filter(
                        care_relationship::Column::EndTime
                            .is_null()
                            .or(care_relationship::Column::EndTime.gt(at)),
                    )
                    .exec(txn)
                    .await
                    .map_err(|e| Error::internal(CONTEXT, e))?;
                let relationship = care_relationship::Entity::find_by_id(id)
                    .one(txn)
                    .await
                    .map_err(|e| Error::internal(CONTEXT, e))?
                    .map(relationship_from_row)
                    .transpose()?
                    .ok_or_else(|| {
                        Error::not_found("no care relationship with this relationship_id")
                    })?;
                if updated.rows_affected == 0 {
                    return Err(Error::failed_precondition(
                        "the care relationship has already ended",
                    ));
                }
                Ok(relationship)
            })
            .await
        })
    }

    fn insert_directive(&self, d: Directive, audit: AuditEvent) -> BoxFuture<'_, Directive> {
        Box::pin(async move {
            const CONTEXT: &str = "storing a directive";
            self.audited(CONTEXT, &audit, async |txn| {
                directive::Entity::insert(directive_to_row(&d)?)
                    .exec_without_returning(txn)
                    .await
                    .map_err(|e| Error::internal(CONTEXT, e))?;
                Ok(d)
            })
            .await
        })
    }

    fn get_directive(&self, id: &str) -> BoxFuture<'_, Option<Directive>> {
        let id = id.to_owned();
        Box::pin(async move {
            directive::Entity::find_by_id(id)
                .one(&self.db)
                .await
                .map_err(|e| Error::internal("reading a directive", e))?
                .map(directive_from_row)
                .transpose()
        })
    }

    fn revoke_directive(
        &self,
        id: &str,
        at: DateTime<Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Directive> {
        let id = id.to_owned();
        let by = by.to_owned();
        Box::pin(async move {
            const CONTEXT: &str = "revoking a directive";
            self.audited(CONTEXT, &audit, async |txn| {
                // One conditional update: of two concurrent revocations,
                // exactly one succeeds.
                let updated = directive::Entity::update_many()
                    .col_expr(directive::Column::RevokedAt, Expr::value(at))
                    .col_expr(directive::Column::RevokedBy, Expr::value(by))
                    .filter(directive::Column::DirectiveId.eq(id.as_str()))
                    .filter(directive::Column::RevokedAt.is_null())
                    .exec(txn)
                    .await
                    .map_err(|e| Error::internal(CONTEXT, e))?;
                let directive = directive::Entity::find_by_id(id)
                    .one(txn)
                    .await
                    .map_err(|e| Error::internal(CONTEXT, e))?
                    .map(directive_from_row)
                    .transpose()?
                    .ok_or_else(|| Error::not_found("no directive with this directive_id"))?;
                if updated.rows_affected == 0 {
                    return Err(Error::failed_precondition(
                        "the directive is already revoked",
                    ));
                }
                Ok(directive)
            })
            .await
        })
    }

    fn list_directives(&self, patient: &PatientId) -> BoxFuture<'_, Vec<Directive>> {
        let patient = patient.as_str().to_owned();
        Box::pin(async move {
            directive::Entity::find()
                .filter(directive::Column::PatientId.eq(patient))
                .order_by_desc(directive::Column::CreatedAt)
                .order_by_desc(directive::Column::DirectiveId)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal("listing directives", e))?
                .into_iter()
                .map(directive_from_row)
                .collect()
        })
    }

    fn changes_after(&self, after: u64, limit: u32) -> BoxFuture<'_, Vec<LoggedChange>> {
        Box::pin(change_log::after(&self.db, after, limit))
    }

    fn latest_change(&self) -> BoxFuture<'_, u64> {
        Box::pin(change_log::latest(&self.db))
    }
}
