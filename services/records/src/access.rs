//! The two services every access passes through, consent and audit: their
//! traits and gRPC clients live in the kit (identity and consent use them
//! too); what is records' own is how its categories are named to consent.

pub use sharedcare_kit::peers::{
    AccessEvent, AuditSink, BoxFuture, ConsentGate, Decision, GrpcAudit, GrpcConsent,
};
use sharedcare_proto::common::v1::RecordCategory;

use crate::domain::Category;

pub fn category_to_pb(category: Category) -> RecordCategory {
    match category {
        Category::General => RecordCategory::General,
        Category::SexualHealth => RecordCategory::SexualHealth,
        Category::MentalHealth => RecordCategory::MentalHealth,
        Category::Safeguarding => RecordCategory::Safeguarding,
        Category::SocialCare => RecordCategory::SocialCare,
    }
}
