//! The gRPC edge of records: decode → service → encode.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use prost::Message;
use sharedcare_kit::{
    Error,
    access::{Grant, grant},
    auth::Principal,
    paging::page_size,
    proto_time::{from_proto, to_proto},
};
use sharedcare_proto::{
    common::v1::RecordCategory,
    records::v1::{self as pb, records_service_server::RecordsService},
};
use tonic::{Request, Response, Status};

use crate::{
    Records,
    access::category_to_pb,
    domain::{
        Category, ClassificationMap, IdempotencyKey, PatientId, Record, RecordId,
        SUPPORTED_RESOURCE_TYPES, TokenQuery, ValidResource,
    },
    service::Incoming,
    store::SearchQuery,
};

/// History pages: 20 versions unless asked, at most 100.
const HISTORY_PAGE: (usize, usize) = (20, 100);
/// Search pages: 100 records unless asked, at most 500.
const SEARCH_PAGE: (usize, usize) = (100, 500);
/// Most values one repeated search field takes.
const MAX_SEARCH_VALUES: usize = 50;

pub struct RecordsGrpc {
    records: Arc<Records>,
    classification: Arc<ClassificationMap>,
}

impl RecordsGrpc {
    pub fn new(records: Arc<Records>, classification: Arc<ClassificationMap>) -> Self {
        RecordsGrpc {
            records,
            classification,
        }
    }
}

fn category_from_pb(value: i32) -> Result<Category, Error> {
    Ok(match RecordCategory::try_from(value) {
        Ok(RecordCategory::Unspecified | RecordCategory::General) => Category::General,
        Ok(RecordCategory::SexualHealth) => Category::SexualHealth,
        Ok(RecordCategory::MentalHealth) => Category::MentalHealth,
        Ok(RecordCategory::Safeguarding) => Category::Safeguarding,
        Ok(RecordCategory::SocialCare) => Category::SocialCare,
        Err(_) => return Err(Error::invalid("category", format!("unknown value {value}"))),
    })
}

fn record_to_pb(r: Record) -> pb::Record {
    pb::Record {
        record_id: r.id.as_str().to_owned(),
        patient_id: r.patient_id.as_str().to_owned(),
        resource_type: r.resource_type,
        version: r.version,
        last_updated: Some(to_proto(r.last_updated)),
        category: category_to_pb(r.category) as i32,
        resource_json: r.resource_json,
        deleted: r.deleted,
    }
}

impl RecordsGrpc {
    /// Checks a resource and classifies it: what the codes say, raised
    /// (never lowered) by the writer's label.
    fn incoming(&self, json: &str, patient: &PatientId, label: i32) -> Result<Incoming, Error> {
        let label = category_from_pb(label)?;
        let resource = ValidResource::parse(json, patient, self.records.max_resource_bytes)?;
        let category = self.classification.decide(&resource, label);
        Ok(Incoming { resource, category })
    }
}

/// Who the caller is, for scoping their idempotency keys.
fn caller_key(principal: &Principal) -> String {
    format!("{}\0{}", principal.organisation, principal.id)
}

fn search_query(req: &pb::SearchRequest, patient: PatientId) -> Result<SearchQuery, Error> {
    let bounded = |field: &str, n: usize| {
        if n > MAX_SEARCH_VALUES {
            Err(Error::invalid(
                field,
                format!("takes at most {MAX_SEARCH_VALUES} values"),
            ))
        } else {
            Ok(())
        }
    };
    bounded("resource_types", req.resource_types.len())?;
    bounded("categories", req.categories.len())?;
    bounded("codes", req.codes.len())?;
    bounded("fhir_categories", req.fhir_categories.len())?;
    for t in &req.resource_types {
        if !SUPPORTED_RESOURCE_TYPES.contains(&t.as_str()) {
            return Err(Error::invalid(
                "resource_types",
                format!(
                    "`{}` is not a supported resource type (supported: {})",
                    t.chars().take(40).collect::<String>(),
                    SUPPORTED_RESOURCE_TYPES.join(", ")
                ),
            ));
        }
    }
    let mut categories = Vec::new();
    for c in &req.categories {
        let category = match RecordCategory::try_from(*c) {
            Ok(RecordCategory::Unspecified) | Err(_) => {
                return Err(Error::invalid("categories", format!("unknown value {c}")));
            }
            Ok(_) => category_from_pb(*c)?,
        };
        if !categories.contains(&category) {
            categories.push(category);
        }
    }
    let range = |from_field: &str, from, to_field: &str, to| {
        let from = from_proto(from_field, from)?;
        let to = from_proto(to_field, to)?;
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(Error::invalid(
                to_field,
                format!("must be after {from_field}"),
            ));
        }
        Ok::<_, Error>((from, to))
    };
    let (date_from, date_to) = range(
        "date_from",
        req.date_from.as_ref(),
        "date_to",
        req.date_to.as_ref(),
    )?;
    let (updated_from, updated_to) = range(
        "updated_from",
        req.updated_from.as_ref(),
        "updated_to",
        req.updated_to.as_ref(),
    )?;
    let tokens = |field: &str, values: &[String]| {
        values
            .iter()
            .map(|v| TokenQuery::parse(field, v))
            .collect::<Result<Vec<_>, Error>>()
    };
    Ok(SearchQuery {
        patient_id: patient,
        resource_types: req.resource_types.clone(),
        categories,
        date_from,
        date_to,
        updated_from,
        updated_to,
        codes: tokens("codes", &req.codes)?,
        fhir_categories: tokens("fhir_categories", &req.fhir_categories)?,
    })
}

/// Everything that shapes a search's results: a cursor is bound to it.
fn search_digest(req: &pb::SearchRequest) -> Vec<u8> {
    let mut shape = req.clone();
    shape.page_token.clear();
    shape.page_size = 0;
    let mut out = b"search\0".to_vec();
    out.extend_from_slice(&shape.encode_to_vec());
    out
}

fn page_size_of(value: i32, (default, max): (usize, usize)) -> Result<usize, Error> {
    page_size("page_size", value, default, max)
}

type ResponseStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl RecordsService for RecordsGrpc {
    #[tracing::instrument(skip_all, fields(rpc = "CreateRecord"))]
    async fn create_record(
        &self,
        request: Request<pb::CreateRecordRequest>,
    ) -> Result<Response<pb::CreateRecordResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let (principal, patient) = for_patient(grant, &req.patient_id)?;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let incoming = self.incoming(&req.resource_json, &patient, req.category)?;
        let idempotency = IdempotencyKey::parse(
            &req.idempotency_key,
            &caller_key(&principal),
            &[
                patient.as_str().as_bytes(),
                req.resource_json.as_bytes(),
                &req.category.to_be_bytes(),
                &(purpose as i32).to_be_bytes(),
            ],
        )?;
        let record = self
            .records
            .create(&principal, patient, incoming, purpose, idempotency)
            .await?;
        Ok(Response::new(pb::CreateRecordResponse {
            record: Some(record_to_pb(record)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "UpdateRecord"))]
    async fn update_record(
        &self,
        request: Request<pb::UpdateRecordRequest>,
    ) -> Result<Response<pb::UpdateRecordResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let (principal, patient) = for_patient(grant, &req.patient_id)?;
        let id = RecordId::parse("record_id", &req.record_id)?;
        let if_match = if_match(req.if_match_version)?;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let incoming = self.incoming(&req.resource_json, &patient, req.category)?;
        if incoming
            .resource
            .client_id()
            .is_some_and(|sent| sent != id.as_str())
        {
            return Err(
                Error::invalid("resource_json.id", "must be the record_id being updated").into(),
            );
        }
        let record = self
            .records
            .update(&principal, patient, id, incoming, purpose, if_match)
            .await?;
        Ok(Response::new(pb::UpdateRecordResponse {
            record: Some(record_to_pb(record)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "DeleteRecord"))]
    async fn delete_record(
        &self,
        request: Request<pb::DeleteRecordRequest>,
    ) -> Result<Response<pb::DeleteRecordResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let (principal, patient) = for_patient(grant, &req.patient_id)?;
        let id = RecordId::parse("record_id", &req.record_id)?;
        let if_match = if_match(req.if_match_version)?;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let record = self
            .records
            .delete(&principal, patient, id, purpose, if_match)
            .await?;
        Ok(Response::new(pb::DeleteRecordResponse {
            record: Some(record_to_pb(record)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetRecord"))]
    async fn get_record(
        &self,
        request: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let (principal, patient) = for_patient(grant, &req.patient_id)?;
        let id = RecordId::parse("record_id", &req.record_id)?;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let record = self
            .records
            .get(
                &principal,
                patient,
                id,
                purpose,
                break_glass(&req.break_glass_reason),
            )
            .await?;
        Ok(Response::new(pb::GetRecordResponse {
            record: Some(record_to_pb(record)),
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "History"))]
    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let (principal, patient) = for_patient(grant, &req.patient_id)?;
        let id = RecordId::parse("record_id", &req.record_id)?;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let size = page_size_of(req.page_size, HISTORY_PAGE)?;
        let page = self
            .records
            .history(&principal, patient, id, purpose, size, &req.page_token)
            .await?;
        Ok(Response::new(pb::HistoryResponse {
            versions: page.records.into_iter().map(record_to_pb).collect(),
            next_page_token: page.next,
        }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "Search"))]
    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let (principal, patient) = for_patient(grant, &req.patient_id)?;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let size = page_size_of(req.page_size, SEARCH_PAGE)?;
        let query = search_query(&req, patient)?;
        let page = self
            .records
            .search(
                &principal,
                query,
                (purpose, break_glass(&req.break_glass_reason)),
                size,
                &req.page_token,
                &search_digest(&req),
            )
            .await?;
        Ok(Response::new(pb::SearchResponse {
            records: page.records.into_iter().map(record_to_pb).collect(),
            next_page_token: page.next,
        }))
    }

    type WatchRecordsStream = ResponseStream<pb::WatchRecordsResponse>;

    #[tracing::instrument(skip_all, fields(rpc = "WatchRecords"))]
    async fn watch_records(
        &self,
        request: Request<pb::WatchRecordsRequest>,
    ) -> Result<Response<Self::WatchRecordsStream>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let principal = grant.principal;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let changes = self
            .records
            .clone()
            .watch(principal, purpose, &req.after_change_id)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(changes).map(|c| {
            c.map(|w| pb::WatchRecordsResponse {
                change_id: w.change_id,
                patient_id: w.meta.patient_id.as_str().to_owned(),
                record_id: w.meta.id.as_str().to_owned(),
                version: w.meta.version,
                resource_type: w.meta.resource_type,
                deleted: w.meta.deleted,
                last_updated: Some(to_proto(w.meta.last_updated)),
                category: category_to_pb(w.meta.category) as i32,
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type ExportPatientStream = ResponseStream<pb::ExportPatientResponse>;

    #[tracing::instrument(skip_all, fields(rpc = "ExportPatient"))]
    async fn export_patient(
        &self,
        request: Request<pb::ExportPatientRequest>,
    ) -> Result<Response<Self::ExportPatientStream>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let (principal, patient) = for_patient(grant, &req.patient_id)?;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let records = self
            .records
            .clone()
            .export(principal, patient, purpose)
            .await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(records).map(|r| {
            r.map(|record| pb::ExportPatientResponse {
                resource_json: record.resource_json,
                resource_type: record.resource_type,
                record_id: record.id.as_str().to_owned(),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The caller and the patient the request names, once the access table's
/// patient rule (a patient only for themselves) holds.
fn for_patient(grant: Grant, patient_id: &str) -> Result<(Principal, PatientId), Error> {
    let patient = PatientId::parse("patient_id", patient_id)?;
    grant.check_own(patient.as_str())?;
    Ok((grant.principal, patient))
}

fn if_match(version: i64) -> Result<i64, Error> {
    if version < 1 {
        return Err(Error::invalid(
            "if_match_version",
            "is required: the version last read (1 or more)",
        ));
    }
    Ok(version)
}

/// The break-glass reason, when one is given (consent checks it).
fn break_glass(reason: &str) -> Option<&str> {
    Some(reason.trim()).filter(|r| !r.is_empty())
}
