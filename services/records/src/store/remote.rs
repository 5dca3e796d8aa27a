//! The `remote` backend: a provider's own store, out of process, reached
//! over the `sharedcare.records.storage.v1` protocol
//! (`proto/sharedcare/records/storage/v1/storage.proto` is the contract).
//! Wrapped in `Encrypted` like any backend, so bodies cross the wire sealed
//! and only the index fields travel in clear.
//!
//! The conversions between the store's types and the wire's live here too,
//! shared with the reference server (`storage_server`): decoding names the
//! field that is wrong, which the server answers as INVALID_ARGUMENT and
//! this client reports as a store that answered badly.

use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};
use sharedcare_kit::{Error, error::Code, proto_time};
use sharedcare_proto::records::storage::v1::{
    self as pb, record_storage_client::RecordStorageClient,
};
use tonic::transport::Channel;

use super::{
    Body, BoxFuture, Change, Found, IdempotencyRow, RecordMeta, RecordStore, SearchQuery, SortKey,
    Stored, Write,
};
use crate::domain::{
    Category, DateRange, PatientId, RecordId, SearchIndex, Token, TokenParam, TokenQuery,
};

/// Most bytes in a request: a write carries one resource (records refuses
/// those over `max_resource_bytes`, 1 MiB by default) and its index.
pub(super) const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Most bytes in a response: a page of history or search holds up to 101
/// versions (records' largest page and one to see if there is more), each
/// up to a resource's size.
pub(super) const MAX_RESPONSE_BYTES: usize = 128 << 20;

/// A [`RecordStore`] served by another process.
pub struct RemoteStore {
    client: RecordStorageClient<Channel>,
    timeout: Duration,
}

impl RemoteStore {
    /// A store at the far end of `channel`; each call is given up after
    /// `timeout` (UNAVAILABLE), and the server is told the same deadline.
    pub fn new(channel: Channel, timeout: Duration) -> Self {
        RemoteStore {
            client: RecordStorageClient::new(channel)
                .max_encoding_message_size(MAX_REQUEST_BYTES)
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            timeout,
        }
    }

    async fn call<Req, Resp, F, Fut>(&self, message: Req, rpc: F) -> Result<Resp, Error>
    where
        F: FnOnce(RecordStorageClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        // The header asks the server to give up in time; the local timer
        // holds when the server or the network does not answer at all.
        match tokio::time::timeout(self.timeout, rpc(self.client.clone(), request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(from_status(status)),
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "record storage did not answer in time");
                Err(unreachable())
            }
        }
    }
}

fn unreachable() -> Error {
    Error::unavailable("record storage unreachable")
}

/// The store's answer as records' own error, keeping the code (and the
/// message, which the service passes on: "version 2 is current").
fn from_status(status: tonic::Status) -> Error {
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::AlreadyExists => Error::already_exists(message),
        tonic::Code::FailedPrecondition => Error::failed_precondition(message),
        tonic::Code::NotFound => Error::not_found(message),
        tonic::Code::InvalidArgument => Error::new(Code::InvalidArgument, message),
        // Cancelled: the connection went away mid-call.
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            tracing::warn!(code = ?status.code(), %message, "record storage unreachable");
            unreachable()
        }
        code => Error::internal("record storage failed", format!("{code:?}: {message}")),
    }
}

/// An answer this client cannot read is the store's fault, not the caller's.
fn bad_answer(err: Error) -> Error {
    Error::internal("record storage answered badly", err.message)
}

impl RecordStore for RemoteStore {
    /// The store does not share records' database, so not its outbox.
    fn audit_in_write(&self) -> bool {
        false
    }

    fn write(&self, write: Write) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Only given to a store that keeps audit events; dropping one
            // silently would lose it.
            if write.audit.is_some() {
                return Err(Error::internal(
                    "storing a record",
                    "an audit event was given to the remote store, which keeps none",
                ));
            }
            let message = pb::WriteRequest {
                meta: Some(meta_to_pb(&write.meta)),
                body: write.body,
                index: Some(index_to_pb(&write.index)),
                idempotency: write.idempotency.as_ref().map(idempotency_to_pb),
            };
            self.call(message, |mut c, r| async move { c.write(r).await })
                .await?;
            Ok(())
        })
    }

    fn current(&self, patient: &PatientId, id: &RecordId) -> BoxFuture<'_, Option<Stored>> {
        let message = pb::CurrentRequest {
            patient_id: patient.as_str().to_owned(),
            record_id: id.as_str().to_owned(),
        };
        Box::pin(async move {
            let response = self
                .call(message, |mut c, r| async move { c.current(r).await })
                .await?;
            response
                .stored
                .map(|s| stored_from_pb("stored", s))
                .transpose()
                .map_err(bad_answer)
        })
    }

    fn version(
        &self,
        patient: &PatientId,
        id: &RecordId,
        version: i64,
    ) -> BoxFuture<'_, Option<Stored>> {
        let message = pb::VersionRequest {
            patient_id: patient.as_str().to_owned(),
            record_id: id.as_str().to_owned(),
            version,
        };
        Box::pin(async move {
            let response = self
                .call(message, |mut c, r| async move { c.version(r).await })
                .await?;
            response
                .stored
                .map(|s| stored_from_pb("stored", s))
                .transpose()
                .map_err(bad_answer)
        })
    }

    fn history(
        &self,
        patient: &PatientId,
        id: &RecordId,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Vec<Stored>> {
        let message = pb::HistoryRequest {
            patient_id: patient.as_str().to_owned(),
            record_id: id.as_str().to_owned(),
            before,
            limit: wire_limit(limit),
        };
        Box::pin(async move {
            let response = self
                .call(message, |mut c, r| async move { c.history(r).await })
                .await?;
            response
                .versions
                .into_iter()
                .map(|s| stored_from_pb("versions", s))
                .collect::<Result<_, _>>()
                .map_err(bad_answer)
        })
    }

    fn search<'a>(
        &'a self,
        query: &'a SearchQuery,
        after: Option<&'a SortKey>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Found>> {
        Box::pin(async move {
            let message = pb::SearchRequest {
                query: Some(query_to_pb(query)),
                after: after.map(sort_key_to_pb),
                limit: wire_limit(limit),
            };
            let response = self
                .call(message, |mut c, r| async move { c.search(r).await })
                .await?;
            response
                .found
                .into_iter()
                .map(|f| found_from_pb("found", f))
                .collect::<Result<_, _>>()
                .map_err(bad_answer)
        })
    }

    fn idempotency(&self, key: &str) -> BoxFuture<'_, Option<IdempotencyRow>> {
        let message = pb::IdempotencyRequest {
            key: key.to_owned(),
        };
        Box::pin(async move {
            let response = self
                .call(message, |mut c, r| async move { c.idempotency(r).await })
                .await?;
            response
                .row
                .map(|row| idempotency_from_pb("row", row))
                .transpose()
                .map_err(bad_answer)
        })
    }

    fn scan<'a>(
        &'a self,
        after: Option<&'a (RecordId, i64)>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Stored>> {
        let message = pb::ScanRequest {
            after: after.map(|(id, version)| pb::ScanPosition {
                record_id: id.as_str().to_owned(),
                version: *version,
            }),
            limit: wire_limit(limit),
        };
        Box::pin(async move {
            let response = self
                .call(message, |mut c, r| async move { c.scan(r).await })
                .await?;
            response
                .versions
                .into_iter()
                .map(|v| stored_from_pb("versions", v))
                .collect::<Result<Vec<_>, Error>>()
                .map_err(bad_answer)
        })
    }

    fn replace_body<'a>(
        &'a self,
        id: &'a RecordId,
        version: i64,
        expected: &'a [u8],
        body: Vec<u8>,
    ) -> BoxFuture<'a, bool> {
        let message = pb::ReplaceBodyRequest {
            record_id: id.as_str().to_owned(),
            version,
            expected: expected.to_vec(),
            body,
        };
        Box::pin(async move {
            let response = self
                .call(message, |mut c, r| async move { c.replace_body(r).await })
                .await?;
            Ok(response.replaced)
        })
    }

    fn changes(&self, after: i64, limit: usize) -> BoxFuture<'_, Vec<Change>> {
        let message = pb::ChangesRequest {
            after,
            limit: wire_limit(limit),
        };
        Box::pin(async move {
            let response = self
                .call(message, |mut c, r| async move { c.changes(r).await })
                .await?;
            response
                .changes
                .into_iter()
                .map(|c| {
                    Ok(Change {
                        sequence: c.sequence,
                        meta: meta_from_pb("changes.meta", c.meta)?,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()
                .map_err(bad_answer)
        })
    }
}

/// Pages are small; a larger limit than the wire holds asks for "all".
fn wire_limit(limit: usize) -> u32 {
    u32::try_from(limit).unwrap_or(u32::MAX)
}

// Store types to the wire.

pub(super) fn meta_to_pb(meta: &RecordMeta) -> pb::RecordMeta {
    pb::RecordMeta {
        record_id: meta.id.as_str().to_owned(),
        patient_id: meta.patient_id.as_str().to_owned(),
        resource_type: meta.resource_type.clone(),
        version: meta.version,
        last_updated: Some(proto_time::to_proto(meta.last_updated)),
        category: meta.category.as_str().to_owned(),
        deleted: meta.deleted,
    }
}

pub(super) fn stored_to_pb(stored: Stored) -> Result<pb::StoredVersion, Error> {
    let body = match stored.body {
        Body::Clear(bytes) => bytes,
        // A tombstone has nothing sealed.
        Body::Sealed { bytes, .. } if bytes.is_empty() => bytes,
        // A server-side `Encrypted` layer (encryption at rest under the
        // store's own key): opened here, so the wire carries the bytes
        // that were written.
        Body::Sealed { bytes, keys, aad } => keys
            .open(&bytes, &aad)
            .map_err(|e| e.context("reading a record"))?,
    };
    Ok(pb::StoredVersion {
        meta: Some(meta_to_pb(&stored.meta)),
        body,
    })
}

pub(super) fn found_to_pb(found: Found) -> Result<pb::Found, Error> {
    Ok(pb::Found {
        stored: Some(stored_to_pb(found.stored)?),
        key: Some(sort_key_to_pb(&found.key)),
    })
}

pub(super) fn index_to_pb(index: &SearchIndex) -> pb::SearchIndex {
    pb::SearchIndex {
        date: index.date.map(|d| pb::DateRange {
            start: Some(proto_time::to_proto(d.start)),
            end: Some(proto_time::to_proto(d.end)),
        }),
        tokens: index
            .tokens
            .iter()
            .map(|t| pb::Token {
                param: t.param.as_str().to_owned(),
                system: t.system.clone(),
                code: t.code.clone(),
            })
            .collect(),
    }
}

pub(super) fn idempotency_to_pb(row: &IdempotencyRow) -> pb::IdempotencyRow {
    pb::IdempotencyRow {
        key: row.key.clone(),
        request_hash: row.request_hash.clone(),
        record_id: row.record_id.as_str().to_owned(),
        version: row.version,
    }
}

pub(super) fn sort_key_to_pb(key: &SortKey) -> pb::SortKey {
    pb::SortKey {
        at_micros: key.at_micros,
        record_id: key.record_id.clone(),
    }
}

fn query_to_pb(query: &SearchQuery) -> pb::SearchQuery {
    let time = |t: &Option<DateTime<Utc>>| t.map(proto_time::to_proto);
    let tokens = |wanted: &[TokenQuery]| {
        wanted
            .iter()
            .map(|t| pb::TokenQuery {
                system: t.system.clone(),
                code: t.code.clone(),
            })
            .collect()
    };
    pb::SearchQuery {
        patient_id: query.patient_id.as_str().to_owned(),
        resource_types: query.resource_types.clone(),
        categories: query
            .categories
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        date_from: time(&query.date_from),
        date_to: time(&query.date_to),
        updated_from: time(&query.updated_from),
        updated_to: time(&query.updated_to),
        codes: tokens(&query.codes),
        fhir_categories: tokens(&query.fhir_categories),
    }
}

// The wire to store types; errors name the field (under `field`).

fn required<T>(field: &str, value: Option<T>) -> Result<T, Error> {
    value.ok_or_else(|| Error::invalid(field, "is required"))
}

fn timestamp(field: &str, t: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, Error> {
    required(field, proto_time::from_proto(field, t)?)
}

fn category(field: &str, stored: &str) -> Result<Category, Error> {
    Category::from_stored(stored).ok_or_else(|| {
        Error::invalid(
            field,
            "must be general, sexual_health, mental_health, safeguarding or social_care",
        )
    })
}

pub(super) fn meta_from_pb(field: &str, meta: Option<pb::RecordMeta>) -> Result<RecordMeta, Error> {
    let meta = required(field, meta)?;
    if meta.resource_type.is_empty() {
        return Err(Error::invalid(
            format!("{field}.resource_type"),
            "is required",
        ));
    }
    if meta.version < 1 {
        return Err(Error::invalid(
            format!("{field}.version"),
            "must be at least 1",
        ));
    }
    Ok(RecordMeta {
        id: RecordId::parse(&format!("{field}.record_id"), &meta.record_id)?,
        patient_id: PatientId::parse(&format!("{field}.patient_id"), &meta.patient_id)?,
        resource_type: meta.resource_type,
        version: meta.version,
        last_updated: timestamp(&format!("{field}.last_updated"), meta.last_updated.as_ref())?,
        category: category(&format!("{field}.category"), &meta.category)?,
        deleted: meta.deleted,
    })
}

fn stored_from_pb(field: &str, stored: pb::StoredVersion) -> Result<Stored, Error> {
    Ok(Stored {
        meta: meta_from_pb(&format!("{field}.meta"), stored.meta)?,
        body: Body::Clear(stored.body),
    })
}

fn found_from_pb(field: &str, found: pb::Found) -> Result<Found, Error> {
    Ok(Found {
        stored: stored_from_pb(
            &format!("{field}.stored"),
            required(&format!("{field}.stored"), found.stored)?,
        )?,
        key: sort_key_from_pb(required(&format!("{field}.key"), found.key)?),
    })
}

/// An absent index is an empty one (a tombstone's).
pub(super) fn index_from_pb(
    field: &str,
    index: Option<pb::SearchIndex>,
) -> Result<SearchIndex, Error> {
    let index = index.unwrap_or_default();
    let date = index
        .date
        .map(|d| {
            let start = timestamp(&format!("{field}.date.start"), d.start.as_ref())?;
            let end = timestamp(&format!("{field}.date.end"), d.end.as_ref())?;
            if end <= start {
                return Err(Error::invalid(
                    format!("{field}.date.end"),
                    "must be after start",
                ));
            }
            Ok(DateRange { start, end })
        })
        .transpose()?;
    let tokens = index
        .tokens
        .into_iter()
        .map(|t| {
            let param = TokenParam::from_stored(&t.param).ok_or_else(|| {
                Error::invalid(
                    format!("{field}.tokens.param"),
                    "must be \"code\" or \"category\"",
                )
            })?;
            Ok(Token {
                param,
                system: t.system,
                code: t.code,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(SearchIndex { date, tokens })
}

pub(super) fn idempotency_from_pb(
    field: &str,
    row: pb::IdempotencyRow,
) -> Result<IdempotencyRow, Error> {
    if row.key.is_empty() {
        return Err(Error::invalid(format!("{field}.key"), "is required"));
    }
    Ok(IdempotencyRow {
        record_id: RecordId::parse(&format!("{field}.record_id"), &row.record_id)?,
        key: row.key,
        request_hash: row.request_hash,
        version: row.version,
    })
}

pub(super) fn sort_key_from_pb(key: pb::SortKey) -> SortKey {
    SortKey {
        at_micros: key.at_micros,
        record_id: key.record_id,
    }
}

pub(super) fn query_from_pb(
    field: &str,
    query: Option<pb::SearchQuery>,
) -> Result<SearchQuery, Error> {
    let query = required(field, query)?;
    let time = |name: &str, t: Option<prost_types::Timestamp>| {
        proto_time::from_proto(&format!("{field}.{name}"), t.as_ref())
    };
    let tokens = |name: &str, wanted: Vec<pb::TokenQuery>| {
        wanted
            .into_iter()
            .map(|t| {
                if t.code.is_empty() {
                    return Err(Error::invalid(
                        format!("{field}.{name}.code"),
                        "is required",
                    ));
                }
                Ok(TokenQuery {
                    system: t.system,
                    code: t.code,
                })
            })
            .collect::<Result<Vec<_>, Error>>()
    };
    Ok(SearchQuery {
        patient_id: PatientId::parse(&format!("{field}.patient_id"), &query.patient_id)?,
        resource_types: query.resource_types,
        categories: query
            .categories
            .iter()
            .map(|c| category(&format!("{field}.categories"), c))
            .collect::<Result<_, _>>()?,
        date_from: time("date_from", query.date_from)?,
        date_to: time("date_to", query.date_to)?,
        updated_from: time("updated_from", query.updated_from)?,
        updated_to: time("updated_to", query.updated_to)?,
        codes: tokens("codes", query.codes)?,
        fhir_categories: tokens("fhir_categories", query.fhir_categories)?,
    })
}
