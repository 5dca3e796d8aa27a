//! The gRPC edge of records: decode → service → encode.

use std::sync::Arc;

use futures::Stream;
use sharedcare_kit::{Error, access::grant, proto_time::to_proto};
use sharedcare_proto::{
    common::v1::RecordCategory,
    records::v1::{self as pb, records_service_server::RecordsService},
};
use tonic::{Request, Response, Status};

use crate::{
    Records,
    access::category_to_pb,
    domain::{Category, ClassificationMap, PatientId, Record, RecordId, ValidResource},
};

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
    }
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
        let patient = PatientId::parse("patient_id", &req.patient_id)?;
        grant.check_own(patient.as_str())?;
        let principal = grant.principal;
        let label = category_from_pb(req.category)?;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let resource = ValidResource::parse(
            &req.resource_json,
            &patient,
            self.records.max_resource_bytes,
        )?;
        // What the codes say, raised (never lowered) by the writer's label:
        // this is what consent is asked about, stored and returned.
        let category = self.classification.decide(&resource, label);
        let record = self
            .records
            .create(&principal, patient, resource, category, purpose)
            .await?;
        Ok(Response::new(pb::CreateRecordResponse {
            record: Some(record_to_pb(record)),
        }))
    }

    async fn update_record(
        &self,
        request: Request<pb::UpdateRecordRequest>,
    ) -> Result<Response<pb::UpdateRecordResponse>, Status> {
        grant(&request)?;
        Err(Error::unimplemented("UpdateRecord", "the record versioning issue").into())
    }

    #[tracing::instrument(skip_all, fields(rpc = "GetRecord"))]
    async fn get_record(
        &self,
        request: Request<pb::GetRecordRequest>,
    ) -> Result<Response<pb::GetRecordResponse>, Status> {
        let grant = grant(&request)?;
        let req = request.into_inner();
        let patient = PatientId::parse("patient_id", &req.patient_id)?;
        grant.check_own(patient.as_str())?;
        let principal = grant.principal;
        let id = RecordId::parse("record_id", &req.record_id)?;
        let purpose = principal.purpose_for("purpose", req.purpose)?;
        let record = self.records.get(&principal, patient, id, purpose).await?;
        Ok(Response::new(pb::GetRecordResponse {
            record: Some(record_to_pb(record)),
        }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        grant(&request)?;
        Err(Error::unimplemented("History", "the record versioning issue").into())
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        grant(&request)?;
        Err(Error::unimplemented("Search", "the record search issue").into())
    }

    type WatchRecordsStream = ResponseStream<pb::WatchRecordsResponse>;

    async fn watch_records(
        &self,
        request: Request<pb::WatchRecordsRequest>,
    ) -> Result<Response<Self::WatchRecordsStream>, Status> {
        grant(&request)?;
        Err(Error::unimplemented("WatchRecords", "the change-feed issue").into())
    }

    type ExportPatientStream = ResponseStream<pb::ExportPatientResponse>;

    async fn export_patient(
        &self,
        request: Request<pb::ExportPatientRequest>,
    ) -> Result<Response<Self::ExportPatientStream>, Status> {
        grant(&request)?;
        Err(Error::unimplemented("ExportPatient", "the bulk export issue").into())
    }
}
