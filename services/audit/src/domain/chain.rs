//! The hash chain: every entry carries the SHA-256 of its predecessor and a
//! SHA-256 over that and its own canonical encoding, so changing, removing or
//! reordering any stored entry breaks verification from that point on.
//!
//! The hash of entry `n` is SHA-256 over:
//!
//! ```text
//! "sharedcare.audit.v1.entry"            domain separator (25 bytes)
//! previous_hash                          32 bytes (zeros for entry 1)
//! sequence                               u64 big-endian
//! record_time                            i64 big-endian, microseconds since the Unix epoch
//! len(event_id)     || event_id          u64 big-endian length, UTF-8
//! len(patient_id)   || patient_id        u64 big-endian length, UTF-8
//! len(event)        || event             u64 big-endian length, the event's canonical protobuf bytes
//! ```
//!
//! The event id and patient id are inside the event bytes already; they are
//! hashed again so the indexed columns the log is queried by are bound to
//! the hash too (changing a row's patient id to hide it from a patient's
//! access report breaks verification without decoding the event).

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{EncodedEvent, EventId, PatientId};

/// Length of every hash in the log.
pub const HASH_LEN: usize = 32;
/// Domain separator of entry hashes (the Merkle issue adds its own for tree nodes).
pub const ENTRY_DOMAIN: &[u8] = b"sharedcare.audit.v1.entry";

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// The predecessor of the first entry.
    pub const ZERO: Hash = Hash([0; HASH_LEN]);

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

/// An entry of the log: an event, numbered and chained to its predecessor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 1.
    pub sequence: u64,
    /// When the log recorded it, at microsecond precision (what is hashed).
    pub record_time: DateTime<Utc>,
    pub previous_hash: Hash,
    pub entry_hash: Hash,
    pub event_id: EventId,
    pub patient_id: PatientId,
    /// The event's canonical bytes.
    pub event: Vec<u8>,
}

impl Entry {
    /// The hash this entry's contents call for (compare with `entry_hash`).
    pub fn computed_hash(&self) -> Hash {
        entry_hash(
            &self.previous_hash,
            self.sequence,
            self.record_time.timestamp_micros(),
            self.event_id.as_str(),
            self.patient_id.as_str(),
            &self.event,
        )
    }
}

/// SHA-256 over the domain-separated canonical encoding described above.
pub fn entry_hash(
    previous: &Hash,
    sequence: u64,
    record_time_micros: i64,
    event_id: &str,
    patient_id: &str,
    event: &[u8],
) -> Hash {
    let mut h = Sha256::new();
    h.update(ENTRY_DOMAIN);
    h.update(previous.as_bytes());
    h.update(sequence.to_be_bytes());
    h.update(record_time_micros.to_be_bytes());
    for part in [event_id.as_bytes(), patient_id.as_bytes(), event] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    Hash(h.finalize().into())
}

/// The end of a (verified or freshly written) chain: how many entries, and
/// the hash the next one must point back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub size: u64,
    pub head_hash: Hash,
}

impl ChainHead {
    /// The empty log.
    pub const EMPTY: ChainHead = ChainHead {
        size: 0,
        head_hash: Hash::ZERO,
    };

    /// The head after `entry` (trusted as stored: for the writer, not the verifier).
    pub fn after(entry: &Entry) -> ChainHead {
        ChainHead {
            size: entry.sequence,
            head_hash: entry.entry_hash,
        }
    }

    /// Writes the next entry for `event`, recorded at `now` (truncated to
    /// microseconds, the precision that is hashed and stored), and advances.
    pub fn append(&mut self, event: EncodedEvent, now: DateTime<Utc>) -> Entry {
        let micros = now.timestamp_micros();
        let record_time = DateTime::from_timestamp_micros(micros).unwrap_or(now);
        let sequence = self.size + 1;
        let entry_hash = entry_hash(
            &self.head_hash,
            sequence,
            micros,
            event.event_id.as_str(),
            event.patient_id.as_str(),
            &event.bytes,
        );
        let entry = Entry {
            sequence,
            record_time,
            previous_hash: self.head_hash,
            entry_hash,
            event_id: event.event_id,
            patient_id: event.patient_id,
            event: event.bytes,
        };
        *self = ChainHead::after(&entry);
        entry
    }
}

/// Why a run of entries does not verify. Names only sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("entry {found} found where entry {expected} was expected (missing or reordered)")]
    SequenceGap { expected: u64, found: u64 },
    #[error("entry {sequence} does not point back to the hash of its predecessor")]
    BrokenLink { sequence: u64 },
    #[error("entry {sequence} has been altered: its hash does not match its contents")]
    HashMismatch { sequence: u64 },
}

/// Checks entries one by one, in log order, from a known head.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    head: ChainHead,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// Starts at the empty log: the first entry must be 1 and point to zeros.
    pub fn new() -> Self {
        Self::starting_at(ChainHead::EMPTY)
    }

    /// Starts after an already trusted head (to verify a later run).
    pub fn starting_at(head: ChainHead) -> Self {
        ChainVerifier { head }
    }

    /// Accepts the next entry, or says why it does not follow.
    pub fn push(&mut self, entry: &Entry) -> Result<(), ChainError> {
        let expected = self.head.size + 1;
        if entry.sequence != expected {
            return Err(ChainError::SequenceGap {
                expected,
                found: entry.sequence,
            });
        }
        if entry.previous_hash != self.head.head_hash {
            return Err(ChainError::BrokenLink {
                sequence: entry.sequence,
            });
        }
        if entry.computed_hash() != entry.entry_hash {
            return Err(ChainError::HashMismatch {
                sequence: entry.sequence,
            });
        }
        self.head = ChainHead::after(entry);
        Ok(())
    }

    /// The head of everything accepted so far.
    pub fn head(&self) -> ChainHead {
        self.head
    }
}

/// Verifies a run of entries that continues `start`; returns its new head.
pub fn verify_run<'a>(
    start: ChainHead,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<ChainHead, ChainError> {
    let mut verifier = ChainVerifier::starting_at(start);
    for entry in entries {
        verifier.push(entry)?;
    }
    Ok(verifier.head())
}

/// Verifies a whole log from its first entry; returns its head.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<ChainHead, ChainError> {
    verify_run(ChainHead::EMPTY, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> EncodedEvent {
        EncodedEvent {
            event_id: EventId::parse("event_id", &format!("ev-{n}")).expect("id"),
            patient_id: PatientId::parse("patient_id", &format!("patient-{}", n % 2))
                .expect("patient"),
            bytes: format!("canonical bytes of event {n}").into_bytes(),
        }
    }

    fn chain(n: u32) -> Vec<Entry> {
        let mut head = ChainHead::EMPTY;
        let t0 = DateTime::from_timestamp(1_750_000_000, 123_456_789).expect("time");
        (1..=n)
            .map(|i| head.append(event(i), t0 + chrono::Duration::milliseconds(i64::from(i))))
            .collect()
    }

    #[test]
    fn entries_are_numbered_from_one_and_linked() {
        let entries = chain(3);
        assert_eq!(entries[0].sequence, 1);
        assert_eq!(entries[0].previous_hash, Hash::ZERO);
        assert_eq!(entries[1].previous_hash, entries[0].entry_hash);
        assert_eq!(entries[2].previous_hash, entries[1].entry_hash);
        let head = verify_chain(&entries).expect("verifies");
        assert_eq!(head.size, 3);
        assert_eq!(head.head_hash, entries[2].entry_hash);
    }

    #[test]
    fn the_empty_chain_verifies() {
        assert_eq!(verify_chain(&[]).expect("verifies"), ChainHead::EMPTY);
    }

    #[test]
    fn record_time_is_kept_at_microsecond_precision() {
        let entries = chain(1);
        assert_eq!(entries[0].record_time.timestamp_subsec_nanos() % 1000, 0);
        assert_eq!(
            entries[0].record_time.timestamp_micros(),
            DateTime::from_timestamp(1_750_000_000, 124_456_789)
                .expect("time")
                .timestamp_micros()
        );
    }

    #[test]
    fn hash_is_sha256_of_the_documented_encoding() {
        let mut expected = Vec::new();
        expected.extend_from_slice(b"sharedcare.audit.v1.entry");
        expected.extend_from_slice(&[7u8; 32]);
        expected.extend_from_slice(&5u64.to_be_bytes());
        expected.extend_from_slice(&(-2i64).to_be_bytes());
        for part in [&b"e"[..], &b"pp"[..], &b"xyz"[..]] {
            expected.extend_from_slice(&(part.len() as u64).to_be_bytes());
            expected.extend_from_slice(part);
        }
        let digest: [u8; 32] = Sha256::digest(&expected).into();
        assert_eq!(
            entry_hash(&Hash([7; 32]), 5, -2, "e", "pp", b"xyz"),
            Hash(digest)
        );
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        let a = entry_hash(&Hash::ZERO, 1, 0, "ab", "c", b"");
        let b = entry_hash(&Hash::ZERO, 1, 0, "a", "bc", b"");
        assert_ne!(a, b);
    }

    /// Flips one bit of every byte of every stored field of every entry in
    /// turn: each alteration must fail verification.
    #[test]
    fn altering_any_stored_byte_breaks_verification() {
        let original = chain(4);
        let mut cases = 0;
        for index in 0..original.len() {
            let entry = &original[index];
            let fields: Vec<(&str, Vec<u8>)> = vec![
                ("sequence", entry.sequence.to_be_bytes().to_vec()),
                (
                    "record_time",
                    entry.record_time.timestamp_micros().to_be_bytes().to_vec(),
                ),
                ("previous_hash", entry.previous_hash.to_vec()),
                ("entry_hash", entry.entry_hash.to_vec()),
                ("event_id", entry.event_id.as_str().as_bytes().to_vec()),
                ("patient_id", entry.patient_id.as_str().as_bytes().to_vec()),
                ("event", entry.event.clone()),
            ];
            for (name, bytes) in fields {
                for byte in 0..bytes.len() {
                    let mut altered = bytes.clone();
                    // Flip the low bit: keeps ASCII text ASCII, so ids stay valid.
                    altered[byte] ^= 0x01;
                    let mut entries = original.clone();
                    if !set_field(&mut entries[index], name, altered) {
                        // Not a value a stored row could hold (an invalid id).
                        continue;
                    }
                    assert!(
                        verify_chain(&entries).is_err(),
                        "altering byte {byte} of {name} of entry {} went unnoticed",
                        index + 1
                    );
                    cases += 1;
                }
            }
        }
        assert!(cases > 400, "only {cases} alterations tried");
    }

    /// Sets a field from altered bytes; false when they are not a valid value.
    fn set_field(entry: &mut Entry, name: &str, bytes: Vec<u8>) -> bool {
        match name {
            "sequence" => {
                entry.sequence = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
            }
            "record_time" => {
                let micros = i64::from_be_bytes(bytes.try_into().expect("8 bytes"));
                entry.record_time = DateTime::from_timestamp_micros(micros).expect("in range");
            }
            "previous_hash" => entry.previous_hash = Hash::from_slice(&bytes).expect("32"),
            "entry_hash" => entry.entry_hash = Hash::from_slice(&bytes).expect("32"),
            "event_id" => {
                let s = String::from_utf8(bytes).expect("utf-8");
                entry.event_id = EventId::parse("event_id", &s).expect("id");
            }
            "patient_id" => {
                let s = String::from_utf8(bytes).expect("utf-8");
                match PatientId::parse("patient_id", &s) {
                    Ok(id) => entry.patient_id = id,
                    Err(_) => return false,
                }
            }
            "event" => entry.event = bytes,
            other => panic!("unknown field {other}"),
        }
        true
    }

    #[test]
    fn a_missing_entry_is_a_gap() {
        let mut entries = chain(3);
        entries.remove(1);
        assert_eq!(
            verify_chain(&entries),
            Err(ChainError::SequenceGap {
                expected: 2,
                found: 3
            })
        );
    }

    #[test]
    fn reordered_entries_are_noticed() {
        let mut entries = chain(3);
        entries.swap(1, 2);
        assert!(matches!(
            verify_chain(&entries),
            Err(ChainError::SequenceGap { expected: 2, .. })
        ));
    }

    #[test]
    fn a_rewritten_entry_with_a_fresh_hash_breaks_the_next_link() {
        let mut entries = chain(3);
        entries[1].event = b"something else".to_vec();
        entries[1].entry_hash = entries[1].computed_hash();
        assert_eq!(
            verify_chain(&entries),
            Err(ChainError::BrokenLink { sequence: 3 })
        );
    }

    #[test]
    fn a_run_verifies_from_a_trusted_head() {
        let entries = chain(5);
        let start = ChainHead::after(&entries[1]);
        let head = verify_run(start, &entries[2..]).expect("verifies");
        assert_eq!(head, ChainHead::after(&entries[4]));
        // ...but not from the wrong one.
        assert!(verify_run(ChainHead::after(&entries[0]), &entries[2..]).is_err());
    }

    #[test]
    fn the_first_entry_must_point_to_zeros() {
        let mut entries = chain(1);
        entries[0].previous_hash = Hash([1; 32]);
        entries[0].entry_hash = entries[0].computed_hash();
        assert_eq!(
            verify_chain(&entries),
            Err(ChainError::BrokenLink { sequence: 1 })
        );
    }
}
