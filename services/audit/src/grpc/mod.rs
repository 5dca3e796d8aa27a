//! The gRPC face of the audit log: authorise, decode into the domain, call
//! the store, encode. The only module that knows `tonic::Status`.

mod convert;

use std::sync::Arc;

use sharedcare_kit::{Error, auth::authorize};
use sharedcare_proto::audit::v1::{
    AccessReportRequest, AccessReportResponse, AppendBatchRequest, AppendBatchResponse,
    AppendRequest, AppendResponse, ConsistencyProofRequest, ConsistencyProofResponse,
    InclusionProofRequest, InclusionProofResponse, QueryRequest, QueryResponse,
    SignedTreeHeadRequest, SignedTreeHeadResponse, audit_service_server::AuditService,
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{MAX_BATCH, PageSize, PageToken, PatientId},
    store::{AuditLogStore, Page},
};

/// Scope to append events.
pub const SCOPE_APPEND: &str = "audit.append";
/// Scope to read a patient's log and access report.
pub const SCOPE_READ: &str = "audit.read";
/// Where the Merkle RPCs come from.
const MERKLE_ISSUE: &str = "the Merkle log issue";

pub struct AuditGrpc {
    pub store: Arc<dyn AuditLogStore>,
}

impl AuditGrpc {
    /// A page of one patient's entries, decoded from the request's fields.
    async fn page(
        &self,
        patient_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page, Error> {
        let patient = PatientId::parse("patient_id", patient_id)?;
        let size = PageSize::parse("page_size", page_size)?;
        let after = PageToken::parse("page_token", page_token)?;
        self.store.patient_entries(patient, after, size).await
    }
}

fn next_token(page: &Page) -> String {
    page.next.map(PageToken::encode).unwrap_or_default()
}

#[tonic::async_trait]
impl AuditService for AuditGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "Append"))]
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        authorize(&request, SCOPE_APPEND)?;
        let event = convert::decode_event("event", request.into_inner().event)?;
        let appended = self.store.append(convert::encode_for_log(&event)).await?;
        tracing::debug!(
            sequence = appended.entry.sequence,
            duplicate = appended.duplicate,
            "appended"
        );
        Ok(Response::new(AppendResponse {
            entry: Some(convert::encode_entry(&appended.entry)?),
            duplicate: appended.duplicate,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "AppendBatch", events))]
    async fn append_batch(
        &self,
        request: Request<AppendBatchRequest>,
    ) -> Result<Response<AppendBatchResponse>, Status> {
        authorize(&request, SCOPE_APPEND)?;
        let events = request.into_inner().events;
        tracing::Span::current().record("events", events.len());
        if events.is_empty() {
            return Err(Error::invalid("events", "must hold at least one event").into());
        }
        if events.len() > MAX_BATCH {
            return Err(
                Error::invalid("events", format!("must hold at most {MAX_BATCH} events")).into(),
            );
        }
        // Every event is validated before anything is written.
        let encoded = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                convert::decode_event(&format!("events[{i}]"), Some(e))
                    .map(|event| convert::encode_for_log(&event))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let appended = self.store.append_batch(encoded).await?;
        let entries = appended
            .iter()
            .map(|a| convert::encode_entry(&a.entry))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(AppendBatchResponse { entries }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Query"))]
    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        authorize(&request, SCOPE_READ)?;
        let req = request.into_inner();
        let page = self
            .page(&req.patient_id, req.page_size, &req.page_token)
            .await?;
        let entries = page
            .entries
            .iter()
            .map(convert::encode_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(QueryResponse {
            entries,
            next_page_token: next_token(&page),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "AccessReport"))]
    async fn access_report(
        &self,
        request: Request<AccessReportRequest>,
    ) -> Result<Response<AccessReportResponse>, Status> {
        authorize(&request, SCOPE_READ)?;
        let req = request.into_inner();
        let page = self
            .page(&req.patient_id, req.page_size, &req.page_token)
            .await?;
        let lines = page
            .entries
            .iter()
            .map(convert::encode_report_line)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(AccessReportResponse {
            lines,
            next_page_token: next_token(&page),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "SignedTreeHead"))]
    async fn signed_tree_head(
        &self,
        _request: Request<SignedTreeHeadRequest>,
    ) -> Result<Response<SignedTreeHeadResponse>, Status> {
        // Any verified caller learns that it is not there yet; its scope is
        // for the Merkle issue to decide.
        Err(Error::unimplemented("SignedTreeHead", MERKLE_ISSUE).into())
    }

    #[tracing::instrument(skip_all, fields(rpc = "InclusionProof"))]
    async fn inclusion_proof(
        &self,
        _request: Request<InclusionProofRequest>,
    ) -> Result<Response<InclusionProofResponse>, Status> {
        // Any verified caller learns that it is not there yet; its scope is
        // for the Merkle issue to decide.
        Err(Error::unimplemented("InclusionProof", MERKLE_ISSUE).into())
    }

    #[tracing::instrument(skip_all, fields(rpc = "ConsistencyProof"))]
    async fn consistency_proof(
        &self,
        _request: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProofResponse>, Status> {
        // Any verified caller learns that it is not there yet; its scope is
        // for the Merkle issue to decide.
        Err(Error::unimplemented("ConsistencyProof", MERKLE_ISSUE).into())
    }
}
