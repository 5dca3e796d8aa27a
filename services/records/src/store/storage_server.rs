//! The reference server of the `sharedcare.records.storage.v1` protocol:
//! any [`RecordStore`] (SQLite in practice) served to records' `remote`
//! backend. It is what a third-party implementation is held to, and it
//! passes the same conformance suite through a [`RemoteStore`].
//!
//! It checks what it is sent (an absent message, an unknown category, a
//! malformed id are INVALID_ARGUMENT naming the field) and otherwise
//! answers with the backend's own errors, whose codes the protocol keeps.
//! Who may call it is up to the server it is mounted in (mutual TLS, say):
//! it holds every patient's record index in clear.
//!
//! [`RemoteStore`]: super::RemoteStore

use sharedcare_kit::Error;
use sharedcare_proto::records::storage::v1::{
    self as pb,
    record_storage_server::{RecordStorage, RecordStorageServer},
};
use tonic::{Request, Response, Status};

use super::{
    RecordStore, Write,
    remote::{
        MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, found_to_pb, idempotency_from_pb, idempotency_to_pb,
        index_from_pb, meta_from_pb, meta_to_pb, query_from_pb, sort_key_from_pb, stored_to_pb,
    },
};
use crate::domain::{PatientId, RecordId};

/// Serves `store` over the storage protocol.
pub struct StorageServer<S: RecordStore> {
    store: S,
}

impl<S: RecordStore> StorageServer<S> {
    pub fn new(store: S) -> Self {
        StorageServer { store }
    }
}

/// The gRPC service for `store`, with message limits to match
/// [`RemoteStore`](super::RemoteStore)'s.
pub fn storage_service<S: RecordStore>(store: S) -> RecordStorageServer<StorageServer<S>> {
    RecordStorageServer::new(StorageServer::new(store))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}

fn ids(patient_id: &str, record_id: &str) -> Result<(PatientId, RecordId), Error> {
    Ok((
        PatientId::parse("patient_id", patient_id)?,
        RecordId::parse("record_id", record_id)?,
    ))
}

/// The wire's limit as a page size (u32 always fits on our targets; the
/// fallback only keeps this total).
fn page(limit: u32) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

#[tonic::async_trait]
impl<S: RecordStore> RecordStorage for StorageServer<S> {
    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let request = request.into_inner();
        let write = Write {
            meta: meta_from_pb("meta", request.meta)?,
            body: request.body,
            index: index_from_pb("index", request.index)?,
            idempotency: request
                .idempotency
                .map(|row| idempotency_from_pb("idempotency", row))
                .transpose()?,
            // The protocol carries none: records keeps a remote store's
            // audit events in its own outbox.
            audit: None,
        };
        self.store.write(write).await?;
        Ok(Response::new(pb::WriteResponse {}))
    }

    async fn current(
        &self,
        request: Request<pb::CurrentRequest>,
    ) -> Result<Response<pb::CurrentResponse>, Status> {
        let request = request.into_inner();
        let (patient, id) = ids(&request.patient_id, &request.record_id)?;
        let stored = self
            .store
            .current(&patient, &id)
            .await?
            .map(stored_to_pb)
            .transpose()?;
        Ok(Response::new(pb::CurrentResponse { stored }))
    }

    async fn version(
        &self,
        request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        let request = request.into_inner();
        let (patient, id) = ids(&request.patient_id, &request.record_id)?;
        let stored = self
            .store
            .version(&patient, &id, request.version)
            .await?
            .map(stored_to_pb)
            .transpose()?;
        Ok(Response::new(pb::VersionResponse { stored }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let request = request.into_inner();
        let (patient, id) = ids(&request.patient_id, &request.record_id)?;
        let versions = self
            .store
            .history(&patient, &id, request.before, page(request.limit))
            .await?
            .into_iter()
            .map(stored_to_pb)
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::HistoryResponse { versions }))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let request = request.into_inner();
        let query = query_from_pb("query", request.query)?;
        let after = request.after.map(sort_key_from_pb);
        let found = self
            .store
            .search(&query, after.as_ref(), page(request.limit))
            .await?
            .into_iter()
            .map(found_to_pb)
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::SearchResponse { found }))
    }

    async fn idempotency(
        &self,
        request: Request<pb::IdempotencyRequest>,
    ) -> Result<Response<pb::IdempotencyResponse>, Status> {
        let request = request.into_inner();
        if request.key.is_empty() {
            return Err(Error::invalid("key", "is required").into());
        }
        let row = self
            .store
            .idempotency(&request.key)
            .await?
            .as_ref()
            .map(idempotency_to_pb);
        Ok(Response::new(pb::IdempotencyResponse { row }))
    }

    async fn changes(
        &self,
        request: Request<pb::ChangesRequest>,
    ) -> Result<Response<pb::ChangesResponse>, Status> {
        let request = request.into_inner();
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let changes = self
            .store
            .changes(request.after, limit)
            .await?
            .iter()
            .map(|c| pb::Change {
                sequence: c.sequence,
                meta: Some(meta_to_pb(&c.meta)),
            })
            .collect();
        Ok(Response::new(pb::ChangesResponse { changes }))
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let request = request.into_inner();
        let after = match request.after {
            Some(p) => Some((RecordId::parse("after.record_id", &p.record_id)?, p.version)),
            None => None,
        };
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let versions = self
            .store
            .scan(after.as_ref(), limit)
            .await?
            .into_iter()
            .map(stored_to_pb)
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Response::new(pb::ScanResponse { versions }))
    }

    async fn replace_body(
        &self,
        request: Request<pb::ReplaceBodyRequest>,
    ) -> Result<Response<pb::ReplaceBodyResponse>, Status> {
        let request = request.into_inner();
        let id = RecordId::parse("record_id", &request.record_id)?;
        let replaced = self
            .store
            .replace_body(&id, request.version, &request.expected, request.body)
            .await?;
        Ok(Response::new(pb::ReplaceBodyResponse { replaced }))
    }
}
