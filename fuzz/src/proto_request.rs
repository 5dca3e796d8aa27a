//! The protobuf decoding of every message a service reads from a caller:
//! each RPC's request (and audit's `AuditEvent`, which audit also decodes
//! from what it stored). The first byte picks the message from
//! [`MESSAGES`]; the rest is decoded. A message that decodes encodes to
//! `encoded_len` bytes that decode to it again and encode the same.

use std::fmt::Debug;

use prost::Message;
use sharedcare_proto::{audit, consent, identity, records};

fn round_trip<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) {
    let Ok(message) = M::decode(bytes) else {
        return;
    };
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len());
    let again = M::decode(encoded.as_slice()).expect("an encoded message decodes");
    assert_eq!(again, message);
    assert_eq!(again.encode_to_vec(), encoded);
}

macro_rules! messages {
    ($($name:literal => $($path:ident)::+,)*) => {
        /// Every request message, by its full protobuf name. Append only: a
        /// seed's first byte is its place in this list. The tests check it
        /// against the descriptor set, so a new request cannot be missed.
        pub const MESSAGES: &[(&str, crate::Target)] = &[
            $(($name, round_trip::<$($path)::+>),)*
        ];
    };
}

messages! {
    "sharedcare.identity.v1.RegisterPatientRequest" => identity::v1::RegisterPatientRequest,
    "sharedcare.identity.v1.GetPatientRequest" => identity::v1::GetPatientRequest,
    "sharedcare.identity.v1.ResolvePatientRequest" => identity::v1::ResolvePatientRequest,
    "sharedcare.identity.v1.TracePatientRequest" => identity::v1::TracePatientRequest,
    "sharedcare.identity.v1.MergePatientsRequest" => identity::v1::MergePatientsRequest,
    "sharedcare.identity.v1.UnmergePatientsRequest" => identity::v1::UnmergePatientsRequest,
    "sharedcare.identity.v1.WatchPatientMergesRequest" => identity::v1::WatchPatientMergesRequest,
    "sharedcare.identity.v1.CreateOrganisationRequest" => identity::v1::CreateOrganisationRequest,
    "sharedcare.identity.v1.GetOrganisationRequest" => identity::v1::GetOrganisationRequest,
    "sharedcare.identity.v1.CreatePrincipalRequest" => identity::v1::CreatePrincipalRequest,
    "sharedcare.identity.v1.IssueTokenRequest" => identity::v1::IssueTokenRequest,
    "sharedcare.identity.v1.GetJwksRequest" => identity::v1::GetJwksRequest,
    "sharedcare.identity.v1.MarkNotSamePersonRequest" => identity::v1::MarkNotSamePersonRequest,
    "sharedcare.identity.v1.UpdateDemographicsRequest" => identity::v1::UpdateDemographicsRequest,
    "sharedcare.identity.v1.ListPatientVersionsRequest" => identity::v1::ListPatientVersionsRequest,
    "sharedcare.identity.v1.IntrospectTokenRequest" => identity::v1::IntrospectTokenRequest,
    "sharedcare.identity.v1.RotateSigningKeyRequest" => identity::v1::RotateSigningKeyRequest,
    "sharedcare.identity.v1.RevokePrincipalRequest" => identity::v1::RevokePrincipalRequest,
    "sharedcare.identity.v1.ListRevocationsRequest" => identity::v1::ListRevocationsRequest,
    "sharedcare.consent.v1.RecordCareRelationshipRequest" => consent::v1::RecordCareRelationshipRequest,
    "sharedcare.consent.v1.ReferPatientRequest" => consent::v1::ReferPatientRequest,
    "sharedcare.consent.v1.EndCareRelationshipRequest" => consent::v1::EndCareRelationshipRequest,
    "sharedcare.consent.v1.ListCareRelationshipsRequest" => consent::v1::ListCareRelationshipsRequest,
    "sharedcare.consent.v1.RecordGpRegistrationRequest" => consent::v1::RecordGpRegistrationRequest,
    "sharedcare.consent.v1.RecordDirectiveRequest" => consent::v1::RecordDirectiveRequest,
    "sharedcare.consent.v1.RevokeDirectiveRequest" => consent::v1::RevokeDirectiveRequest,
    "sharedcare.consent.v1.ListDirectivesRequest" => consent::v1::ListDirectivesRequest,
    "sharedcare.consent.v1.SetNationalOptOutRequest" => consent::v1::SetNationalOptOutRequest,
    "sharedcare.consent.v1.EvaluateRequest" => consent::v1::EvaluateRequest,
    "sharedcare.consent.v1.BatchEvaluateRequest" => consent::v1::BatchEvaluateRequest,
    "sharedcare.consent.v1.WatchChangesRequest" => consent::v1::WatchChangesRequest,
    "sharedcare.records.v1.CreateRecordRequest" => records::v1::CreateRecordRequest,
    "sharedcare.records.v1.UpdateRecordRequest" => records::v1::UpdateRecordRequest,
    "sharedcare.records.v1.DeleteRecordRequest" => records::v1::DeleteRecordRequest,
    "sharedcare.records.v1.GetRecordRequest" => records::v1::GetRecordRequest,
    "sharedcare.records.v1.HistoryRequest" => records::v1::HistoryRequest,
    "sharedcare.records.v1.SearchRequest" => records::v1::SearchRequest,
    "sharedcare.records.v1.WatchRecordsRequest" => records::v1::WatchRecordsRequest,
    "sharedcare.records.v1.ExportPatientRequest" => records::v1::ExportPatientRequest,
    "sharedcare.records.storage.v1.WriteRequest" => records::storage::v1::WriteRequest,
    "sharedcare.records.storage.v1.CurrentRequest" => records::storage::v1::CurrentRequest,
    "sharedcare.records.storage.v1.VersionRequest" => records::storage::v1::VersionRequest,
    "sharedcare.records.storage.v1.HistoryRequest" => records::storage::v1::HistoryRequest,
    "sharedcare.records.storage.v1.SearchRequest" => records::storage::v1::SearchRequest,
    "sharedcare.records.storage.v1.IdempotencyRequest" => records::storage::v1::IdempotencyRequest,
    "sharedcare.records.storage.v1.ChangesRequest" => records::storage::v1::ChangesRequest,
    "sharedcare.records.storage.v1.ScanRequest" => records::storage::v1::ScanRequest,
    "sharedcare.records.storage.v1.ReplaceBodyRequest" => records::storage::v1::ReplaceBodyRequest,
    "sharedcare.audit.v1.AppendRequest" => audit::v1::AppendRequest,
    "sharedcare.audit.v1.AppendBatchRequest" => audit::v1::AppendBatchRequest,
    "sharedcare.audit.v1.QueryRequest" => audit::v1::QueryRequest,
    "sharedcare.audit.v1.AccessReportRequest" => audit::v1::AccessReportRequest,
    "sharedcare.audit.v1.ListEntriesRequest" => audit::v1::ListEntriesRequest,
    "sharedcare.audit.v1.SignedTreeHeadRequest" => audit::v1::SignedTreeHeadRequest,
    "sharedcare.audit.v1.InclusionProofRequest" => audit::v1::InclusionProofRequest,
    "sharedcare.audit.v1.ConsistencyProofRequest" => audit::v1::ConsistencyProofRequest,
    "sharedcare.audit.v1.ListBreakGlassAccessesRequest" => audit::v1::ListBreakGlassAccessesRequest,
    "sharedcare.audit.v1.AuditEvent" => audit::v1::AuditEvent,
}

pub fn proto_request(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let (_, decode) = MESSAGES[usize::from(which) % MESSAGES.len()];
    decode(bytes);
}
