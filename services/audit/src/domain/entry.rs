//! An entry of the log and its leaf in the Merkle tree ([`super::merkle`]).
//!
//! Entry `n` is leaf `n - 1`. Its leaf hash is SHA-256(0x00 || leaf input),
//! where the leaf input is
//!
//! ```text
//! record_time    i64 big-endian, microseconds since the Unix epoch
//! event          the event's canonical protobuf bytes
//! ```
//!
//! The event id and patient id the log is indexed by are inside the event
//! bytes; what is served is decoded from those bytes with the indexed
//! columns laid over it, so a row whose columns were changed (to hide it
//! from a patient's access report, say) no longer hashes to its leaf.

use std::fmt;

use chrono::{DateTime, Utc};

use super::{EncodedEvent, EventId, PatientId, merkle};

/// Length of every hash in the log.
pub const HASH_LEN: usize = 32;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// Reads stored or received bytes; `None` unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; HASH_LEN]>::try_from(bytes).ok().map(Hash)
    }

    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex::encode(self.0))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An entry of the log: an event, numbered and timed by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 1 (leaf `sequence - 1`).
    pub sequence: u64,
    /// When the log recorded it, at microsecond precision (what is hashed).
    pub record_time: DateTime<Utc>,
    pub event_id: EventId,
    pub patient_id: PatientId,
    /// The event's canonical bytes.
    pub event: Vec<u8>,
}

impl Entry {
    /// Numbers `event` as entry `sequence`, recorded at `now` truncated to
    /// microseconds (the precision that is hashed and stored).
    pub fn new(sequence: u64, event: EncodedEvent, now: DateTime<Utc>) -> Entry {
        let micros = now.timestamp_micros();
        Entry {
            sequence,
            record_time: DateTime::from_timestamp_micros(micros).unwrap_or(now),
            event_id: event.event_id,
            patient_id: event.patient_id,
            event: event.bytes,
        }
    }

    /// This entry's leaf hash, from the stored event bytes.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(self.record_time.timestamp_micros(), &self.event)
    }
}

/// The leaf input described above.
pub fn leaf_input(record_time_micros: i64, event: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(8 + event.len());
    input.extend_from_slice(&record_time_micros.to_be_bytes());
    input.extend_from_slice(event);
    input
}

/// SHA-256(0x00 || leaf input).
pub fn leaf_hash(record_time_micros: i64, event: &[u8]) -> Hash {
    merkle::leaf_hash(&leaf_input(record_time_micros, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_binds_the_time_and_every_byte_of_the_event() {
        let t = 1_750_000_000_123_456;
        let base = leaf_hash(t, b"event");
        assert_ne!(base, leaf_hash(t + 1, b"event"));
        assert_ne!(base, leaf_hash(t, b"evenT"));
        assert_ne!(base, leaf_hash(t, b"event "));
        // RFC 6962: the 0x00 prefix, then the input.
        assert_eq!(base, merkle::leaf_hash(&leaf_input(t, b"event")));
        let mut expected = t.to_be_bytes().to_vec();
        expected.extend_from_slice(b"event");
        assert_eq!(leaf_input(t, b"event"), expected);
    }

    #[test]
    fn record_time_is_kept_to_the_microsecond() {
        let event = EncodedEvent {
            event_id: EventId::parse("event_id", "ev-1").expect("id"),
            patient_id: PatientId::parse("patient_id", "p-1").expect("patient"),
            bytes: b"e".to_vec(),
            break_glass_by: None,
        };
        let now = DateTime::from_timestamp(1_750_000_000, 123_456_789).expect("time");
        let entry = Entry::new(7, event, now);
        assert_eq!(entry.record_time.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(entry.sequence, 7);
        assert_eq!(
            entry.leaf_hash(),
            leaf_hash(entry.record_time.timestamp_micros(), b"e")
        );
    }
}
