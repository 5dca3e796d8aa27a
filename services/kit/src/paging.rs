//! Paging: a page size with bounds, and cursors callers cannot forge.
//!
//! A cursor says where the next page starts and is bound, by an HMAC under
//! the service's key, to the query it was issued for: a cursor altered, made
//! up, or replayed against a different query is refused (INVALID_ARGUMENT),
//! so it can never widen a search or reveal what a query would not.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::Error;

const CURSOR_V1: u8 = 1;
const TAG_LEN: usize = 16;
/// Longest position a cursor carries (a sort key and an id).
const MAX_POSITION: usize = 512;

/// How many items a page holds: 0 means `default`, 1..=`max` as asked,
/// anything else is refused (naming the bounds) rather than clamped.
pub fn page_size(field: &str, value: i32, default: usize, max: usize) -> Result<usize, Error> {
    match usize::try_from(value) {
        Ok(0) => Ok(default),
        Ok(n) if n <= max => Ok(n),
        _ => Err(Error::invalid(
            field,
            format!("must be between 1 and {max} (or 0 for {default})"),
        )),
    }
}

/// Issues and checks cursors.
#[derive(Clone)]
pub struct CursorKey {
    key: [u8; 32],
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey([redacted])")
    }
}

impl CursorKey {
    pub fn new(key: [u8; 32]) -> Self {
        CursorKey { key }
    }

    fn tag(&self, query: &[u8], position: &[u8]) -> [u8; TAG_LEN] {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes a key of any length")
        };
        // Lengths first, so no (query, position) pair reads as another.
        mac.update(&(query.len() as u64).to_be_bytes());
        mac.update(query);
        mac.update(position);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// A cursor for `position` within the results of `query` (any stable
    /// encoding of everything that shapes the results).
    pub fn issue(&self, query: &[u8], position: &[u8]) -> String {
        let mut out = Vec::with_capacity(1 + position.len() + TAG_LEN);
        out.push(CURSOR_V1);
        out.extend_from_slice(position);
        out.extend_from_slice(&self.tag(query, position));
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The position a cursor carries, if this key issued it for `query`;
    /// the empty string is the first page (`None`).
    pub fn open(&self, field: &str, cursor: &str, query: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if cursor.is_empty() {
            return Ok(None);
        }
        let refused = || {
            Error::invalid(
                field,
                "is not a cursor this service issued for this request",
            )
        };
        if cursor.len() > 2 * (MAX_POSITION + TAG_LEN) {
            return Err(refused());
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| refused())?;
        let [CURSOR_V1, rest @ ..] = bytes.as_slice() else {
            return Err(refused());
        };
        if rest.len() < TAG_LEN {
            return Err(refused());
        }
        let (position, tag) = rest.split_at(rest.len() - TAG_LEN);
        if !bool::from(self.tag(query, position).ct_eq(tag)) {
            return Err(refused());
        }
        Ok(Some(position.to_vec()))
    }
}

/// A position in a list sorted by time and then id: the time in
/// microseconds (big-endian), then the id's bytes. Both lists that page by
/// (time, id) issue it, and read it back with [`read_time_id_position`].
pub fn time_id_position(micros: i64, id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + id.len());
    out.extend_from_slice(&micros.to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    out
}

/// The (time, id) a [`time_id_position`] holds; `None` when `position` is
/// shorter than a time or its id is not UTF-8.
pub fn read_time_id_position(position: &[u8]) -> Option<(i64, String)> {
    let (micros, id) = position.split_first_chunk::<8>()?;
    let id = String::from_utf8(id.to_vec()).ok()?;
    Some((i64::from_be_bytes(*micros), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_and_refuse_out_of_bounds() {
        assert_eq!(page_size("page_size", 0, 20, 100).ok(), Some(20));
        assert_eq!(page_size("page_size", 7, 20, 100).ok(), Some(7));
        for bad in [-1, 101] {
            let err = page_size("page_size", bad, 20, 100).expect_err("bounds");
            assert_eq!(err.field.as_deref(), Some("page_size"));
        }
    }

    #[test]
    fn a_cursor_opens_only_for_its_query_and_key() {
        let key = CursorKey::new([7; 32]);
        let cursor = key.issue(b"query-a", b"position");
        assert_eq!(
            key.open("page_token", &cursor, b"query-a").expect("ok"),
            Some(b"position".to_vec())
        );
        assert_eq!(key.open("page_token", "", b"query-a").expect("ok"), None);
        // Another query, another key, a flipped character, garbage.
        assert!(key.open("page_token", &cursor, b"query-b").is_err());
        assert!(
            CursorKey::new([8; 32])
                .open("page_token", &cursor, b"query-a")
                .is_err()
        );
        let mut flipped = cursor.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert!(key.open("page_token", &flipped, b"query-a").is_err());
        for junk in ["x", "!!!", "AAAA", &"A".repeat(5000)] {
            let err = key.open("page_token", junk, b"query-a").expect_err(junk);
            assert_eq!(err.field.as_deref(), Some("page_token"));
        }
    }

    #[test]
    fn a_time_and_id_position_reads_back_and_nothing_else_does() {
        let position = time_id_position(-5, "rec-é");
        assert_eq!(
            read_time_id_position(&position),
            Some((-5, "rec-é".to_owned()))
        );
        assert_eq!(
            read_time_id_position(&time_id_position(i64::MAX, "")),
            Some((i64::MAX, String::new()))
        );
        assert_eq!(read_time_id_position(&[0; 7]), None);
        assert_eq!(read_time_id_position(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff]), None);
    }
}
