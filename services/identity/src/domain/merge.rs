//! Merges: a duplicate patient pointing to the one that stands for both,
//! and the log of merges and unmerges the platform's services follow.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeKind {
    Merged,
    /// A merge made in error, undone.
    Unmerged,
}

impl MergeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeKind::Merged => "merged",
            MergeKind::Unmerged => "unmerged",
        }
    }

    pub fn from_stored(s: &str) -> Option<MergeKind> {
        match s {
            "merged" => Some(MergeKind::Merged),
            "unmerged" => Some(MergeKind::Unmerged),
            _ => None,
        }
    }
}

/// One entry of the merge log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeEvent {
    /// Its place in the log, in commit order (0 before it is logged).
    pub sequence: u64,
    pub kind: MergeKind,
    pub superseded: String,
    pub surviving: String,
    /// The principal who merged or unmerged.
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

/// The most merges followed from one id to the patient standing for it:
/// chains are made one merge at a time by people, and a survivor is never
/// superseded, so a longer chain is a fault.
pub const MAX_MERGE_CHAIN: usize = 32;
