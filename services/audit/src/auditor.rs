//! What an outside auditor computes from the API's answers (see
//! `AuditEntry` in the proto): nothing here reads the store.

use prost::Message;
use sharedcare_proto::audit::v1::{AccessReportLine, AuditEntry};

use crate::domain::{Hash, checkpoint::TreeHead, leaf_hash, merkle::verify_inclusion};

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

/// Why an access report line cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("line {0} carries no entry or proof (ask with with_proofs)")]
    NoProof(i64),
    #[error("line {0} does not say what its entry says")]
    Differs(i64),
    #[error("line {sequence} is not in the signed tree: {reason}")]
    NotIncluded { sequence: i64, reason: String },
}

/// Checks an access report line asked for with proofs against a verified
/// tree head: the line says what its entry says (the words too, derived
/// again here), and the entry is leaf `sequence - 1` of that tree.
pub fn check_report_line(line: &AccessReportLine, head: &TreeHead) -> Result<(), LineError> {
    let sequence = line.sequence;
    let entry = line.entry.as_ref().ok_or(LineError::NoProof(sequence))?;
    let says = AccessReportLine {
        entry: line.entry.clone(),
        inclusion_proof: line.inclusion_proof.clone(),
        ..crate::report::line(entry.sequence, entry.event.clone().unwrap_or_default())
    };
    if &says != line {
        return Err(LineError::Differs(sequence));
    }
    let index = u64::try_from(sequence - 1).map_err(|_| LineError::NotIncluded {
        sequence,
        reason: "sequence below 1".into(),
    })?;
    verify_inclusion(
        leaf_hash_of(entry).as_bytes(),
        index,
        head.size,
        &line.inclusion_proof,
        head.root.as_bytes(),
    )
    .map_err(|e| LineError::NotIncluded {
        sequence,
        reason: e.to_string(),
    })
}
