//! What an outside auditor computes from the API's answers (see
//! `AuditEntry` in the proto): nothing here reads the store.

use prost::Message;
use sharedcare_proto::audit::v1::AuditEntry;

use crate::domain::{Hash, leaf_hash};

/// An entry's leaf hash from what the API returned: its record time and
/// its event re-encoded. A missing record time or event hashes as zero and
/// empty, which no stored entry matches.
pub fn leaf_hash_of(entry: &AuditEntry) -> Hash {
    let micros = entry
        .record_time
        .as_ref()
        .map(|t| {
            t.seconds
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(t.nanos / 1000))
        })
        .unwrap_or_default();
    let event = entry
        .event
        .as_ref()
        .map(Message::encode_to_vec)
        .unwrap_or_default();
    leaf_hash(micros, &event)
}
